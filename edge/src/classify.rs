//! `edge classify`: per-image predictions for files and folders, as a table, JSON lines or CSV.
//!
//! JSON lines (`--format jsonl`), one object per image — a contract other tools script against:
//! `{"path": str, "label": str|null, "confidence": float|null, "probabilities": {label: float}|null,
//! "error": str|null}`.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::preprocess::{Preprocessor, decode_image};

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

/// One image's result.
#[derive(Debug, Serialize)]
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
}

/// Classifies one image file.
pub fn classify_file(
    model: &OnnxClassifier,
    pre: &mut Preprocessor,
    input: &mut [f32],
    path: &Path,
) -> Row {
    let result = decode_image(path)
        .map_err(|e| e.to_string())
        .and_then(|img| pre.run_into(&img, input).map_err(|e| e.to_string()))
        .and_then(|()| model.probabilities(input).map_err(|e| e.to_string()));
    let path_text = path.display().to_string();
    match result {
        Ok(p) => {
            let best = leukoscope_model::metrics::argmax(&p);
            let labels = &model.contract().labels;
            Row {
                path: path_text,
                label: Some(labels[best].clone()),
                confidence: Some(p[best]),
                probabilities: Some(
                    labels
                        .iter()
                        .zip(&p)
                        .map(|(l, v)| (l.clone(), serde_json::json!(v)))
                        .collect(),
                ),
                error: None,
            }
        }
        Err(e) => Row {
            path: path_text,
            label: None,
            confidence: None,
            probabilities: None,
            error: Some(e),
        },
    }
}

/// Writes the header (table and CSV formats).
pub fn write_header(
    out: &mut dyn Write,
    format: ClassifyFormat,
    labels: &[String],
) -> std::io::Result<()> {
    match format {
        ClassifyFormat::Jsonl => Ok(()),
        ClassifyFormat::Csv => {
            let header = ["path", "label", "confidence"]
                .into_iter()
                .chain(labels.iter().map(String::as_str))
                .chain(["error"]);
            write_csv_record(out, header)
        }
        ClassifyFormat::Table => {
            let probs: String = labels.iter().map(|l| format!(" {l:>8.8}")).collect();
            writeln!(
                out,
                "{:<40} {:<10} {:>10}{probs}",
                "path", "label", "confidence"
            )
        }
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
            write_csv_record(out, record)
        }
        ClassifyFormat::Table => match &row.error {
            Some(e) => writeln!(out, "{:<40} ERROR      {e}", row.path),
            None => {
                let probs: String = labels
                    .iter()
                    .map(|l| format!(" {:>8.4}", prob(l).unwrap_or(f64::NAN)))
                    .collect();
                writeln!(
                    out,
                    "{:<40} {:<10} {:>10.4}{probs}",
                    row.path,
                    row.label.as_deref().unwrap_or(""),
                    row.confidence.unwrap_or(f32::NAN)
                )
            }
        },
    }
}
