//! Reading the audit database back: `edge sessions`, `edge export`, `edge report`.
//!
//! Everything here reads through a [`Store`](crate::store::Store) (open it with
//! [`Store::open_read_only`](crate::store::Store::open_read_only) while `edge run` may be
//! writing) and changes nothing.
//!
//! - [`sessions`]: `edge sessions`, the session list;
//! - [`export`]: `edge export`, one session's frames as CSV or JSON;
//! - [`session_report`]: `edge report`, one session's report folder.

pub mod export;
pub mod session_report;
pub mod sessions;

use thiserror::Error;

use crate::store::{SessionRow, SessionState, StopReason, StoreError};
use leukoscope_model::evaluation_report::ReportError;
use leukoscope_screening::Verdict;

pub use export::{CSV_COLUMNS, ExportFormat, export_session};
pub use session_report::{MAX_THUMBNAILS, SessionReportFiles, write_session_report};
pub use sessions::{list_sessions, write_sessions_table};

/// An audit command that failed.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The database could not be read (or the session does not exist).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Write(#[source] std::io::Error),
    /// A session report file could not be written, or its chart drawn.
    #[error(transparent)]
    SessionReport(#[from] ReportError),
    /// JSON encoding failed.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The verdict as a person reads it, with what goes with it: the headline for a closed session
/// (and its dominant subtype), or why there is none.
fn verdict_line(s: &SessionRow) -> String {
    match s.state {
        SessionState::Open => "no verdict yet (session open)".into(),
        SessionState::Interrupted => "no verdict (session interrupted: scan again)".into(),
        SessionState::Closed if s.stop_reason == Some(StopReason::Fault) && s.verdict.is_none() => {
            format!(
                "{} (no verdict: {})",
                Verdict::Incomplete.headline(),
                s.fault.as_deref().unwrap_or("a fault stopped the scan")
            )
        }
        SessionState::Closed => {
            let stored = s.verdict.clone().unwrap_or_default();
            let headline = Verdict::ALL
                .into_iter()
                .find(|v| v.as_str() == stored || v.headline() == stored)
                .map_or(stored, |v| v.headline().to_string());
            match &s.dominant_subtype {
                Some(sub) => format!("{headline} ({sub})"),
                None => headline,
            }
        }
    }
}
