//! `edge export`: one session's frames as CSV or JSON.
//!
//! # CSV export
//! One row per recorded result (frame, or tile when tiling), in recording order, with a header.
//! The columns are [`CSV_COLUMNS`] in that order, then one `p_<label>` column per model label in
//! the session's label order. Columns are only ever added at the end of the fixed block in later
//! versions. Times are RFC 3339 UTC with milliseconds; an absent or NaN value is an empty field;
//! `kept_image` is relative to the flagged-images folder. `device` (added last) is the kit a
//! collector's database (`edge fleet collect`) got the result from, empty on a kit.
//!
//! # JSON export
//! `{"session": {…}, "frames": [{…}, …]}`: the session as [`SessionRow`] and its frames as
//! [`FrameRow`] (field names as in the CSV header; `probabilities` an array in the session's label
//! order, `quality` an object or `null`). In a collector's database the session also has
//! `device`, `site` and `device_session`, each frame `device` and `device_frame` (left out on a
//! kit). These objects, with `message_id`, `device`, `site`, `change` and `committed` added, are
//! the fleet's MQTT messages ([`crate::fleet`]).

use std::io::Write;

use super::AuditError;
use crate::store::{FrameRow, SessionRow, Store, format_time};

/// The fixed CSV columns, in order (the `p_<label>` columns follow).
pub const CSV_COLUMNS: [&str; 27] = [
    "frame_id",
    "session_id",
    "seq",
    "tile",
    "time",
    "origin",
    "sha256",
    "width",
    "height",
    "focus",
    "mean",
    "p999",
    "clipped_fraction",
    "stained_fraction",
    "decision",
    "retake_reason",
    "label",
    "confidence",
    "model_sha256",
    "software_version",
    "kept_image",
    "image_evicted",
    "slide_id",
    "field",
    "device",
    "unfamiliarity",
    "uncertain_reason",
];

/// `edge export --format`: what [`export_session`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One row per recorded result, with a header.
    Csv,
    /// One document: the session and its frames.
    Json,
}

/// Writes one session's frames as CSV or JSON (see the module documentation).
/// An unknown session id is [`StoreError::UnknownSession`](crate::store::StoreError::UnknownSession).
pub fn export_session(
    store: &Store,
    id: i64,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<(), AuditError> {
    let session = store.session(id)?;
    let frames = store.frames(id)?;
    match format {
        ExportFormat::Json => {
            let doc = serde_json::json!({ "session": session, "frames": frames });
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out).map_err(AuditError::Write)?;
        }
        ExportFormat::Csv => {
            let mut csv = csv_writer(&mut *out);
            let mut header: Vec<String> = CSV_COLUMNS.iter().map(|c| c.to_string()).collect();
            header.extend(session.labels.iter().map(|l| format!("p_{l}")));
            csv.write_record(&header).map_err(csv_error)?;
            for row in &frames {
                csv.write_record(csv_row(&session, row))
                    .map_err(csv_error)?;
            }
            csv.flush().map_err(AuditError::Write)?;
        }
    }
    out.flush().map_err(AuditError::Write)
}

/// The CSV writer of the export: RFC 4180, a field quoted only when it holds a comma, a quote or
/// a line break (the csv crate's default [`csv::QuoteStyle::Necessary`]), `\n` line ends.
fn csv_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(out)
}

/// A CSV write that failed: the output's I/O error (the records always have the header's length).
fn csv_error(e: csv::Error) -> AuditError {
    AuditError::Write(e.into())
}

fn num(x: Option<f32>) -> String {
    match x {
        Some(v) if v.is_finite() => v.to_string(),
        _ => String::new(),
    }
}

/// One frame's CSV record, fields unquoted (the writer quotes).
fn csv_row(session: &SessionRow, row: &FrameRow) -> Vec<String> {
    let f = &row.frame;
    let q = f.quality;
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let mut cells = vec![
        row.id.to_string(),
        f.session.to_string(),
        f.seq.to_string(),
        f.tile.map_or(String::new(), |t| t.to_string()),
        format_time(&f.time),
        f.origin.clone(),
        f.sha256.clone(),
        f.width.to_string(),
        f.height.to_string(),
        num(q.map(|q| q.focus)),
        num(q.map(|q| q.mean)),
        num(q.map(|q| q.p999)),
        num(q.map(|q| q.clipped_fraction)),
        num(q.map(|q| q.stained_fraction)),
        f.decision.to_string(),
        opt(&f.retake_reason),
        opt(&f.label),
        num(f.confidence),
        f.model_sha256.clone(),
        f.software_version.clone(),
        f.kept_image
            .as_ref()
            .map_or(String::new(), |p| p.to_string_lossy().into_owned()),
        row.image_evicted.map_or(String::new(), |t| format_time(&t)),
        opt(&session.slide_id),
        f.field.map_or(String::new(), |n| n.to_string()),
        opt(&row.device),
        num(f.unfamiliarity),
        f.uncertain_reason
            .map_or(String::new(), |r| r.as_str().to_string()),
    ];
    for i in 0..session.labels.len() {
        cells.push(num(f.probabilities.get(i).copied()));
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One field as the export writes it.
    fn csv(s: &str) -> String {
        let mut out = Vec::new();
        let mut w = csv_writer(&mut out);
        w.write_record([s, ""]).unwrap();
        w.flush().unwrap();
        drop(w);
        let line = String::from_utf8(out).unwrap();
        line.strip_suffix(",\n").unwrap().to_string()
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv("plain"), "plain");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(num(Some(f32::NAN)), "");
        assert_eq!(num(Some(0.25)), "0.25");
        assert_eq!(num(None), "");
    }
}
