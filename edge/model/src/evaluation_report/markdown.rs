//! `report.md`: the evaluation report as a person reads it, linking the plots.

use std::fmt::Write as _;

use super::{CONFUSION_FILE, CURVES_FILE, EpochRecord, RELIABILITY_FILE, ROC_FILE, ReportContext};
use crate::metrics::{ClassificationReport, Proportion, ReportIntervals};
use crate::operating_point::ScreeningFigures;

const SCREENING_STATEMENT: &str = "**Screening-aid evaluation, not a diagnostic claim.** These \
numbers describe how often the model's image classification agrees with the reference labels of \
this data set. They do not establish clinical performance; every result must be reviewed by a \
qualified person.";

pub(super) fn markdown(
    ctx: &ReportContext,
    m: &ClassificationReport,
    history: Option<&[EpochRecord]>,
    intervals: &ReportIntervals,
    screening: Option<&ScreeningFigures>,
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
    interval_section(&mut s, intervals);

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

    if let Some(f) = screening {
        screening_sections(&mut s, f);
    }

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

/// The Wilson intervals of accuracy and per-class precision and recall.
fn interval_section(s: &mut String, i: &ReportIntervals) {
    let _ = writeln!(s, "\n## 95 % intervals\n");
    let _ = writeln!(
        s,
        "Wilson score intervals at 95 %: with a few hundred pictures, one picture moves a \
         proportion by a few tenths of a point, and the interval shows how far the figure could \
         be from the model's true rate on data like this.\n"
    );
    proportion_header(s);
    proportion_row(s, "Accuracy", &i.accuracy);
    for c in &i.per_class {
        proportion_row(s, &format!("{} precision", c.label), &c.precision);
        proportion_row(s, &format!("{} recall", c.label), &c.recall);
    }
}

/// Operating point, calibration and slide simulation.
fn screening_sections(s: &mut String, f: &ScreeningFigures) {
    let op = &f.operating_point;
    let d = &op.decision;
    let _ = writeln!(s, "\n## At the device's operating point\n");
    let _ = writeln!(
        s,
        "Each picture is decided as the device decides a frame: `uncertain` below a top-class \
         probability of {:.2}, else `normal` when its label is a normal label ({}), else `blast` \
         (any subtype). Settings: {}.\n",
        d.min_confidence,
        d.normal_labels.join(", "),
        op.settings_from.replace('\n', " ")
    );
    proportion_header(s);
    for (name, p) in [
        (
            "**Sensitivity**: blast pictures decided blast (uncertain = missed)",
            &op.sensitivity,
        ),
        (
            "Sensitivity among answered (uncertain left out)",
            &op.sensitivity_answered,
        ),
        (
            "**Specificity**: normal pictures decided normal (uncertain = not cleared)",
            &op.specificity,
        ),
        (
            "Specificity among answered (uncertain left out)",
            &op.specificity_answered,
        ),
        ("**Abstention**: pictures decided uncertain", &op.abstention),
        ("Abstention, blast pictures", &op.abstention_blast),
        ("Abstention, normal pictures", &op.abstention_normal),
    ] {
        proportion_row(s, name, p);
    }
    let _ = writeln!(
        s,
        "\n| True class | Kind | Pictures | Decided normal | Decided blast | Decided uncertain | \
         Abstention | 95 % interval |\n|---|---|---:|---:|---:|---:|---:|---|"
    );
    for c in &op.per_class {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.label),
            if c.normal { "normal" } else { "blast" },
            c.pictures,
            c.decided_normal,
            c.decided_blast,
            c.decided_uncertain,
            value(&c.abstention),
            interval(&c.abstention)
        );
    }
    if let Some(rejected) = &op.unfamiliar {
        let _ = writeln!(
            s,
            "\n**Rejected as unfamiliar** (the model's unfamiliarity score above the threshold in \
             its contract: decided uncertain, counted in the abstentions above): {}.\n",
            with_interval(rejected)
        );
        let _ = writeln!(
            s,
            "| True class | Pictures | Rejected as unfamiliar | Share | 95 % interval |\n\
             |---|---:|---:|---:|---|"
        );
        for c in &op.per_class {
            let share = Proportion::new(c.rejected_unfamiliar, c.pictures);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                cell(&c.label),
                c.pictures,
                c.rejected_unfamiliar,
                value(&share),
                interval(&share)
            );
        }
    }

    let cal = &f.calibration;
    let _ = writeln!(s, "\n## Calibration\n");
    let _ = writeln!(
        s,
        "Expected calibration error (ECE: the picture-weighted mean gap between a bin's accuracy \
         and its mean top-class probability, {} equal-width bins): **{}**; largest gap of a bin \
         (MCE): {}. The device's threshold acts on this probability, so a model that is \
         over-confident abstains less than its errors warrant.\n",
        cal.bins.len(),
        f4(cal.ece),
        f4(cal.mce)
    );
    let _ = writeln!(
        s,
        "| Top-class probability | Pictures | Mean probability | Accuracy | 95 % interval |\n\
         |---|---:|---:|---:|---|"
    );
    for b in cal.bins.iter().filter(|b| b.count > 0) {
        let _ = writeln!(
            s,
            "| {:.1}–{:.1} | {} | {} | {} | {} |",
            b.lower,
            b.upper,
            b.count,
            opt4(b.mean_confidence),
            value(&b.accuracy),
            interval(&b.accuracy)
        );
    }
    let _ = writeln!(s, "\n![Reliability diagram]({RELIABILITY_FILE})");

    let sim = &f.slide_simulation;
    let c = &sim.config;
    let r = &sim.rule;
    let _ = writeln!(s, "\n## Slide-level simulation\n");
    let _ = writeln!(
        s,
        "Simulated slides of **{} fields** each, every field one evaluated picture drawn at random \
         (independently, with replacement), {} slides per condition, seed **{}**; \
         pools: {} normal and {} blast pictures. Benign slides hold normal pictures only; a blast \
         slide at share b holds round(b·{}) blast pictures (at least one) and normal pictures for \
         the rest. Each slide is tallied with the device's slide rule: fewer than {} good fields → \
         insufficient; at least {} blast fields and a blast fraction of at least {} → refer; more \
         than {} of the fields uncertain → uncertain; else no blasts. Frame decision at {:.2}. \
         Settings: {}.\n",
        c.fields_per_slide,
        c.slides_per_condition,
        c.seed,
        sim.normal_pictures,
        sim.blast_pictures,
        c.fields_per_slide,
        r.min_good_fields,
        r.refer_min_blast_fields,
        r.refer_min_blast_fraction,
        r.max_uncertain_fraction,
        sim.decision.min_confidence,
        sim.settings_from.replace('\n', " ")
    );
    let _ = writeln!(
        s,
        "| Slides | Blast fields | Right verdict | Refer | No blasts | Uncertain | Insufficient |\n\
         |---|---:|---|---|---|---|---|"
    );
    for o in sim.benign.iter().chain(&sim.blast) {
        let right = if o.blast_fields > 0 {
            "refer"
        } else {
            "no blasts"
        };
        let _ = writeln!(
            s,
            "| {} | {} of {} | {}: {} | {} | {} | {} | {} |",
            cell(&o.name),
            o.blast_fields,
            o.blast_fields + o.normal_fields,
            right,
            with_interval(&o.correct),
            with_interval(&o.refer),
            with_interval(&o.no_blasts),
            with_interval(&o.uncertain),
            with_interval(&o.insufficient)
        );
    }
    let _ = writeln!(s);
    if let Some(spec) = sim.specificity() {
        let _ = writeln!(
            s,
            "- **Slide specificity** (benign slides called no blasts): {}.",
            with_interval(spec)
        );
    }
    for (b, sens) in sim.sensitivity() {
        let _ = writeln!(
            s,
            "- **Slide sensitivity** at blast share {b:.2} (blast slides referred): {}.",
            with_interval(sens)
        );
    }
    for o in sim.benign.iter().chain(&sim.blast) {
        if let Some(unfamiliar) = &o.unfamiliar {
            let _ = writeln!(
                s,
                "- {} slides called **unfamiliar** (more than {} of the good fields unfamiliar; \
                 checked after refer, before uncertain): {}.",
                cell(&o.name),
                r.max_unfamiliar_fraction,
                with_interval(unfamiliar)
            );
        }
    }
    for m in &sim.missing {
        let _ = writeln!(s, "- Not simulated: {m}.");
    }
    let _ = writeln!(
        s,
        "- The intervals count the simulation's own noise only: the slides are assembled from the \
         same few pictures, which are themselves a sample, and real slides differ (the fields of \
         one patient are alike). Read these as what the slide rule makes of this model's picture \
         errors, not as a clinical slide-level accuracy."
    );
}

fn proportion_header(s: &mut String) {
    let _ = writeln!(
        s,
        "| Figure | Value | 95 % interval | Count |\n|---|---:|---|---:|"
    );
}

fn proportion_row(s: &mut String, name: &str, p: &Proportion) {
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} / {} |",
        cell(name),
        value(p),
        interval(p),
        p.successes,
        p.n
    );
}

/// The value with four decimals, or "n/a" when nothing was counted.
fn value(p: &Proportion) -> String {
    opt4(p.value)
}

/// `0.4902–0.9433`.
fn interval(p: &Proportion) -> String {
    format!("{}–{}", f4(p.low), f4(p.high))
}

/// `0.8000 (0.4902–0.9433)`.
fn with_interval(p: &Proportion) -> String {
    format!("{} ({})", value(p), interval(p))
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
