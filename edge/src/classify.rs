//! `edge classify`: per-image predictions for files and folders, as a table, JSON lines or CSV.
//!
//! JSON lines (`--format jsonl`), one object per image — a contract other tools script against:
//! `{"path": str, "label": str|null, "confidence": float|null, "probabilities": {label: float}|null,
//! "error": str|null, "decision": "blast"|"normal"|"uncertain"|null,
//! "uncertain_reason": "low_confidence"|"unfamiliar"|null, "unfamiliarity": float|null}`; with
//! `--um-per-px` one object per model-scale field of a picture, with `"tile": int` (its field, row
//! by row from the top left) added, and the CSV gains a last column `tile`. The decision is the
//! device's frame rule ([`leukoscope_screening::decide_frame_with_familiarity`]), so a picture
//! gets the word `edge run` would give it: a model that scores unfamiliarity makes a picture
//! above its contract's threshold `uncertain` with the reason `unfamiliar`; `unfamiliarity` is
//! that score (`null` for a model without one).

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::classifier::Prediction;
use leukoscope_model::preprocess::{Preprocessor, decode_image};
use leukoscope_model::scale::fields::FieldCutter;
use leukoscope_screening::{Decision, DecisionConfig, decide_frame_with_familiarity};

/// `edge classify --format`: how the results are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassifyFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

/// Why a picture's decision is `uncertain` (`uncertain_reason`): the screening rule's own type,
/// `low_confidence` or `unfamiliar`.
pub use leukoscope_screening::UncertainReason;

/// One image's result.
#[derive(Debug, Default, Serialize)]
pub struct Row {
    /// The image file.
    pub path: String,
    /// Most probable label.
    pub label: Option<String>,
    /// Its probability.
    pub confidence: Option<f32>,
    /// Every label's probability, in model output order.
    pub probabilities: Option<serde_json::Map<String, serde_json::Value>>,
    /// Why the image could not be classified.
    pub error: Option<String>,
    /// The device's decision for the picture (`None` when it could not be classified).
    pub decision: Option<Decision>,
    /// Why the decision is `uncertain` (`None` otherwise).
    pub uncertain_reason: Option<UncertainReason>,
    /// The model's unfamiliarity score (`None` for a model without one, or no picture).
    pub unfamiliarity: Option<f32>,
    /// The picture's model-scale field this row is for (`--um-per-px`: pictures resampled to
    /// the model's pixel size and cut into fields, numbered row by row from the top left);
    /// `None` for a whole picture (and then not written: the JSON key and the CSV column
    /// `tile` appear only with `--um-per-px`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tile: Option<u32>,
}

/// Classifies one image file and decides it with `decision` (the device's frame rule).
pub fn classify_file(
    model: &OnnxClassifier,
    pre: &mut Preprocessor,
    input: &mut [f32],
    path: &Path,
    decision: &DecisionConfig,
) -> Row {
    let result = decode_image(path)
        .map_err(|e| e.to_string())
        .and_then(|img| pre.run_into(&img, input).map_err(|e| e.to_string()))
        .and_then(|()| model.predict(input).map_err(|e| e.to_string()));
    let path_text = path.display().to_string();
    match result {
        Ok(p) => row_of(model, path_text, &p, decision, None),
        Err(e) => Row {
            path: path_text,
            error: Some(e),
            ..Row::default()
        },
    }
}

/// Classifies one image file at a declared pixel size: resampled to the model's and cut into
/// model-input fields (`cutter`), one row per field (`tile`); an unreadable file is one error
/// row.
pub fn classify_file_fields(
    model: &OnnxClassifier,
    cutter: &mut FieldCutter,
    pre: &mut Preprocessor,
    input: &mut [f32],
    path: &Path,
    decision: &DecisionConfig,
) -> Vec<Row> {
    let path_text = path.display().to_string();
    let error = |e: String| Row {
        path: path_text.clone(),
        error: Some(e),
        ..Row::default()
    };
    let img = match decode_image(path) {
        Ok(img) => img,
        Err(e) => return vec![error(e.to_string())],
    };
    let mut rows = Vec::new();
    for field in cutter.cut(&img) {
        let p = pre
            .run_into(&field.image, input)
            .map_err(|e| e.to_string())
            .and_then(|()| model.predict(input).map_err(|e| e.to_string()));
        rows.push(match p {
            Ok(p) => row_of(model, path_text.clone(), &p, decision, Some(field.index)),
            Err(e) => Row {
                tile: Some(field.index),
                ..error(e)
            },
        });
    }
    if rows.is_empty() {
        rows.push(error("empty picture".into()));
    }
    rows
}

/// The row for the model's `prediction` on a picture (or one of its fields).
fn row_of(
    model: &OnnxClassifier,
    path: String,
    prediction: &Prediction,
    decision: &DecisionConfig,
    tile: Option<u32>,
) -> Row {
    let p = &prediction.probabilities;
    let best = leukoscope_model::metrics::argmax(p);
    let labels = &model.contract().labels;
    let unfamiliar = prediction.is_unfamiliar(model.contract());
    let decided = decide_frame_with_familiarity(decision, labels, p, unfamiliar);
    Row {
        path,
        label: Some(labels[best].clone()),
        confidence: Some(p[best]),
        probabilities: Some(
            labels
                .iter()
                .zip(p)
                .map(|(l, v)| (l.clone(), serde_json::json!(v)))
                .collect(),
        ),
        error: None,
        decision: Some(decided.kind),
        uncertain_reason: decided.reason,
        unfamiliarity: prediction.unfamiliarity,
        tile,
    }
}

/// Writes the header (table and CSV formats).
pub fn write_header(
    out: &mut dyn Write,
    format: ClassifyFormat,
    labels: &[String],
) -> std::io::Result<()> {
    write_header_with(out, format, labels, false)
}

/// [`write_header`]; `fields`: rows are model-scale fields (`--um-per-px`), the CSV gets the
/// column `tile`.
pub fn write_header_with(
    out: &mut dyn Write,
    format: ClassifyFormat,
    labels: &[String],
    fields: bool,
) -> std::io::Result<()> {
    match format {
        ClassifyFormat::Jsonl => Ok(()),
        ClassifyFormat::Csv => {
            let header = ["path", "label", "confidence"]
                .into_iter()
                .chain(labels.iter().map(String::as_str))
                .chain(["error", "decision", "uncertain_reason", "unfamiliarity"])
                .chain(fields.then_some("tile"));
            write_csv_record(out, header)
        }
        ClassifyFormat::Table => {
            let probs: String = labels.iter().map(|l| format!(" {l:>8.8}")).collect();
            writeln!(
                out,
                "{:<40} {:<10} {:>10}{probs}  decision",
                "path", "label", "confidence"
            )
        }
    }
}

/// The path as the table shows it: with `#N` for field N of a picture.
fn shown_path(row: &Row) -> String {
    match row.tile {
        Some(t) => format!("{}#{t}", row.path),
        None => row.path.clone(),
    }
}

/// Writes one CSV record: RFC 4180, a field quoted only when it holds a comma, a quote or a
/// line break (the csv crate's default), `\n` line end.
fn write_csv_record<I>(out: &mut dyn Write, record: I) -> std::io::Result<()>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(record)?;
    csv.flush()
}

/// Writes one row.
pub fn write_row(
    out: &mut dyn Write,
    format: ClassifyFormat,
    labels: &[String],
    row: &Row,
) -> std::io::Result<()> {
    write_row_with(out, format, labels, row, false)
}

/// [`write_row`]; `fields` as for [`write_header_with`].
pub fn write_row_with(
    out: &mut dyn Write,
    format: ClassifyFormat,
    labels: &[String],
    row: &Row,
    fields: bool,
) -> std::io::Result<()> {
    let prob = |l: &String| {
        row.probabilities
            .as_ref()
            .and_then(|p| p.get(l))
            .and_then(serde_json::Value::as_f64)
    };
    match format {
        ClassifyFormat::Jsonl => writeln!(
            out,
            "{}",
            serde_json::to_string(row).expect("rows serialize")
        ),
        ClassifyFormat::Csv => {
            let mut record = vec![
                row.path.clone(),
                row.label.clone().unwrap_or_default(),
                row.confidence.map_or(String::new(), |c| format!("{c:.6}")),
            ];
            record.extend(
                labels
                    .iter()
                    .map(|l| prob(l).map_or(String::new(), |p| format!("{p:.6}"))),
            );
            record.push(row.error.clone().unwrap_or_default());
            record.push(row.decision.map_or("", Decision::as_str).into());
            record.push(
                row.uncertain_reason
                    .map_or("", UncertainReason::as_str)
                    .into(),
            );
            record.push(
                row.unfamiliarity
                    .filter(|u| u.is_finite())
                    .map_or(String::new(), |u| format!("{u:.6}")),
            );
            if fields {
                record.push(row.tile.map_or(String::new(), |t| t.to_string()));
            }
            write_csv_record(out, record)
        }
        ClassifyFormat::Table => match &row.error {
            Some(e) => writeln!(out, "{:<40} ERROR      {e}", shown_path(row)),
            None => {
                let probs: String = labels
                    .iter()
                    .map(|l| format!(" {:>8.4}", prob(l).unwrap_or(f64::NAN)))
                    .collect();
                let decision = match (row.decision, row.uncertain_reason) {
                    (Some(d), Some(r)) => format!("{} ({})", d.as_str(), r.as_str()),
                    (Some(d), None) => d.as_str().to_string(),
                    (None, _) => String::new(),
                };
                writeln!(
                    out,
                    "{:<40} {:<10} {:>10.4}{probs}  {decision}",
                    shown_path(row),
                    row.label.as_deref().unwrap_or(""),
                    row.confidence.unwrap_or(f32::NAN)
                )
            }
        },
    }
}
