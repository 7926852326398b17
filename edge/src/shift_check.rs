//! `edge evaluate --shift-check`: the model under what another microscope does, judged by the
//! device's own rules (frame threshold, unfamiliarity, and the focus gate that decides how much
//! blur a field may carry).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::RgbImage;
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::contract::ModelContract;
use leukoscope_model::metrics::Proportion;
use leukoscope_model::shift::{Shift, ShiftCheck, ShiftRow, Truth, class_means};

use crate::config::RunConfig;
use crate::quality::{QualityGate, RetakeReason};

/// Runs every [`Shift`] on `files` (labeled with the model's classes), and the foreign folder
/// (`(dir, pictures with their group)`) as one more row. `train` gives the class colours.
pub fn run(
    model: &OnnxClassifier,
    config: &RunConfig,
    files: &[(PathBuf, usize)],
    train: &[(PathBuf, usize)],
    foreign: Option<(&Path, &[(PathBuf, Truth)])>,
) -> Result<Vec<ShiftRow>> {
    let labels = &model.contract().labels;
    let gate = RefCell::new(QualityGate::new(config.quality.clone()));
    let focus_ok = |img: &RgbImage| gate.borrow_mut().assess(img).1 != Some(RetakeReason::Focus);
    let check = ShiftCheck {
        model,
        decision: &config.decision,
        class_means: class_means(train, labels.len()),
        focus_ok: Some(&focus_ok),
    };
    let labeled: Vec<(PathBuf, Truth)> = files
        .iter()
        .map(|(p, c)| (p.clone(), Truth::Class(*c)))
        .collect();
    let shifts = Shift::all(labels.len());
    let bar = indicatif::ProgressBar::new(shifts.len() as u64 + u64::from(foreign.is_some()));
    let mut rows = Vec::new();
    for shift in shifts {
        bar.set_message(shift.name(labels));
        rows.push(check.run(&labeled, shift)?);
        bar.inc(1);
    }
    if let Some((dir, pictures)) = foreign {
        let mut row = check.run(pictures, Shift::AsCaptured)?;
        row.condition = format!(
            "another acquisition: {}",
            dir.file_name()
                .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into())
        );
        rows.push(row);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}

fn cell(p: &Proportion) -> String {
    match p.value {
        Some(v) => format!(
            "{:.1} % ({:.1}–{:.1})",
            100.0 * v,
            100.0 * p.low,
            100.0 * p.high
        ),
        None => "–".into(),
    }
}

/// The rows as a Markdown table.
pub fn table(rows: &[ShiftRow]) -> String {
    let mut s = String::from(
        "| condition | pictures | right | abstained | confidently wrong | of which unfamiliar |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.condition,
            r.pictures,
            cell(&r.right),
            cell(&r.abstained),
            cell(&r.confidently_wrong),
            cell(&r.unfamiliar)
        );
    }
    s
}

/// Writes `shift.md` and `shift.json` into the report folder `out`.
pub fn write(rows: &[ShiftRow], contract: &ModelContract, out: &Path) -> Result<()> {
    leukoscope_model::durable::create_dir_all(out)?;
    let mut md = String::from(
        "# Shift check\n\nEach picture changed as another microscope would show it, then decided as \
         the device decides a frame. Right: decided with the right label (another acquisition: \
         the right group, blast or normal); abstained: uncertain (below the confidence \
         threshold, or unfamiliar); confidently wrong: decided with a wrong label. Wilson 95 % \
         intervals in brackets.\n\n",
    );
    let _ = writeln!(
        md,
        "Model contract: colour normalization {:?}, temperature {}, unfamiliarity {}.\n",
        contract.colour,
        contract
            .temperature
            .map_or_else(|| "none".into(), |t| format!("{t:.3}")),
        contract.unfamiliarity.as_ref().map_or_else(
            || "none".into(),
            |u| format!("threshold {:.2}", u.threshold)
        )
    );
    md.push_str(&table(rows));
    leukoscope_model::durable::write_atomic(&out.join("shift.md"), md.as_bytes())
        .context("cannot write shift.md")?;
    leukoscope_model::durable::write_atomic(
        &out.join("shift.json"),
        serde_json::to_string_pretty(rows)?.as_bytes(),
    )
    .context("cannot write shift.json")?;
    Ok(())
}
