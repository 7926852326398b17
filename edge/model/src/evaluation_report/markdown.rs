//! `report.md`: the evaluation report as a person reads it, linking the plots.

use std::fmt::Write as _;

use super::{CONFUSION_FILE, CURVES_FILE, EpochRecord, ROC_FILE, ReportContext};
use crate::metrics::ClassificationReport;

const SCREENING_STATEMENT: &str = "**Screening-aid evaluation, not a diagnostic claim.** These \
numbers describe how often the model's image classification agrees with the reference labels of \
this data set. They do not establish clinical performance; every result must be reviewed by a \
qualified person.";

pub(super) fn markdown(
    ctx: &ReportContext,
    m: &ClassificationReport,
    history: Option<&[EpochRecord]>,
) -> String {
    let mut s = String::new();
    let title = if ctx.title.trim().is_empty() {
        "Evaluation report"
    } else {
        ctx.title.trim()
    };
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(s, "> {SCREENING_STATEMENT}\n");

    let _ = writeln!(s, "| | |\n|---|---|");
    let mut row = |k: &str, v: String| {
        if !v.trim().is_empty() {
            let _ = writeln!(s, "| {k} | {} |", cell(&v));
        }
    };
    row("Model", ctx.model.clone());
    row("Data set", ctx.dataset.clone());
    row("Split", ctx.split.clone());
    row("Samples", thousands(m.samples));
    row("Classes", m.labels.join(", "));
    if let Some(p) = ctx.parameters {
        row(
            "Parameters",
            format!("{} ({:.2} M)", thousands(p), p as f64 / 1e6),
        );
    }
    if let Some(b) = ctx.model_bytes {
        row(
            "Model size",
            format!("{:.2} MiB ({} bytes)", b as f64 / 1_048_576.0, thousands(b)),
        );
    }
    if let Some(t) = ctx.train_images_per_s {
        row("Training throughput", format!("{t:.1} images/s"));
    }
    if let Some(t) = ctx.inference_images_per_s {
        row("Inference throughput", format!("{t:.1} images/s"));
    }

    let _ = writeln!(s, "\n## Headline\n");
    let _ = writeln!(
        s,
        "| Accuracy | Macro F1 | Cohen's kappa | MCC | Macro AUC |\n|---:|---:|---:|---:|---:|"
    );
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} |",
        f4(m.accuracy),
        f4(m.macro_avg.f1),
        f4(m.cohen_kappa),
        f4(m.mcc),
        opt4(m.macro_auc)
    );

    let _ = writeln!(s, "\n## Per class\n");
    let _ = writeln!(
        s,
        "| Class | Precision | Recall (sensitivity) | Specificity | F1 | F2 | AUC | Support |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &m.per_class {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.label),
            f4(c.precision),
            f4(c.recall),
            f4(c.specificity),
            f4(c.f1),
            f4(c.f2),
            opt4(c.auc),
            c.support
        );
    }
    for (name, a, auc) in [
        ("macro avg", &m.macro_avg, opt4(m.macro_auc)),
        ("weighted avg", &m.weighted_avg, "–".to_string()),
    ] {
        let _ = writeln!(
            s,
            "| **{name}** | {} | {} | {} | {} | {} | {auc} | {} |",
            f4(a.precision),
            f4(a.recall),
            f4(a.specificity),
            f4(a.f1),
            f4(a.f2),
            m.samples
        );
    }
    let _ = writeln!(
        s,
        "\nRecall is the sensitivity. Precision of a class that is never predicted is reported as \
         0. The macro average weighs every class equally, the weighted average by support; the \
         macro AUC is the mean of the defined per-class one-vs-rest AUCs."
    );

    let _ = writeln!(s, "\n## Confusion matrix\n");
    let _ = writeln!(s, "Rows are true classes, columns predicted classes.\n");
    let _ = write!(s, "| true \\ predicted |");
    for l in &m.labels {
        let _ = write!(s, " {} |", cell(l));
    }
    let _ = write!(s, "\n|---|");
    for _ in &m.labels {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for (l, r) in m.labels.iter().zip(&m.confusion) {
        let _ = write!(s, "| **{}** |", cell(l));
        for v in r {
            let _ = write!(s, " {v} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\n![Confusion matrix]({CONFUSION_FILE})");
    let _ = writeln!(
        s,
        "\n## ROC curves\n\n![ROC curves, one class vs rest]({ROC_FILE})"
    );

    if let Some(h) = history {
        let _ = writeln!(s, "\n## Training\n");
        if let Some(last) = h.last() {
            let _ = writeln!(
                s,
                "- Last epoch ({}): train loss {}, train accuracy {}, validation loss {}, \
                 validation accuracy {}, learning rate {:.3e}, {:.1} images/s.",
                last.epoch,
                f4(last.train_loss),
                f4(last.train_accuracy),
                f4(last.valid_loss),
                f4(last.valid_accuracy),
                last.learning_rate,
                last.images_per_s
            );
        }
        if let Some(best) = h
            .iter()
            .filter(|e| e.valid_accuracy.is_finite())
            .max_by(|a, b| a.valid_accuracy.total_cmp(&b.valid_accuracy))
        {
            let _ = writeln!(
                s,
                "- Best validation accuracy: {} at epoch {}.",
                f4(best.valid_accuracy),
                best.epoch
            );
        }
        let _ = writeln!(s, "\n![Training curves]({CURVES_FILE})");
    }

    let mut notes: Vec<String> = ctx.notes.clone();
    let undefined: Vec<&str> = m
        .per_class
        .iter()
        .filter(|c| c.auc.is_none())
        .map(|c| c.label.as_str())
        .collect();
    if !undefined.is_empty() {
        notes.push(format!(
            "AUC is undefined for {} (no samples of the class, or no other samples).",
            undefined.join(", ")
        ));
    }
    let small: Vec<String> = m
        .per_class
        .iter()
        .filter(|c| c.support < 30)
        .map(|c| format!("{} ({})", c.label, c.support))
        .collect();
    if !small.is_empty() {
        notes.push(format!(
            "Fewer than 30 samples for {}: these per-class figures are imprecise.",
            small.join(", ")
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &notes {
            let _ = writeln!(s, "- {}", n.replace('\n', " "));
        }
    }
    s
}

/// Four decimals.
pub(super) fn f4(x: f64) -> String {
    format!("{x:.4}")
}

/// Four decimals, or "n/a".
pub(super) fn opt4(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), f4)
}

/// Text safe inside a Markdown table cell.
pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `1234567` → `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(2_236_682), "2,236,682");
    }
}
