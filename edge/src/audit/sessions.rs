//! `edge sessions`: every session of the audit database as an aligned text table.

use std::fmt::Write as _;
use std::io::Write;

use super::verdict_line;
use crate::store::{SessionRow, Store, StoreError, format_time};

/// All sessions, oldest first (`edge sessions`).
pub fn list_sessions(store: &Store) -> Result<Vec<SessionRow>, StoreError> {
    store.sessions()
}

/// Writes sessions as an aligned text table: id, slide, started, stopped, frames, fields (good
/// fields, `-` when not tracked), state, verdict. In a collector's database (`edge fleet
/// collect`) two columns follow the id: the kit (`DEVICE`) and the session's id on it
/// (`KIT ID`).
pub fn write_sessions_table(rows: &[SessionRow], out: &mut dyn Write) -> std::io::Result<()> {
    let fleet = rows.iter().any(|r| r.device.is_some());
    let mut header = vec![
        "ID", "SLIDE", "STARTED", "STOPPED", "FRAMES", "FIELDS", "STATE", "VERDICT",
    ];
    if fleet {
        header.splice(1..1, ["DEVICE", "KIT ID"]);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.id.to_string(),
                r.slide_id.clone().unwrap_or_else(|| "-".into()),
                short_time(&format_time(&r.started)),
                r.stopped
                    .map_or_else(|| "-".into(), |t| short_time(&format_time(&t))),
                r.frames.to_string(),
                r.counts
                    .as_ref()
                    .and_then(|c| c.fields)
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                r.state.to_string(),
                verdict_line(r),
            ];
            if fleet {
                row.splice(
                    1..1,
                    [
                        r.device.clone().unwrap_or_else(|| "-".into()),
                        r.device_session
                            .map_or_else(|| "-".into(), |n| n.to_string()),
                    ],
                );
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[&str]| -> String {
        let mut s = String::new();
        for (i, (c, &w)) in cols.iter().zip(&widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        s
    };
    writeln!(out, "{}", line(&header))?;
    for row in &cells {
        let cols: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cols))?;
    }
    Ok(())
}

/// `2025-01-31T09:41:07.250Z` → `2025-01-31 09:41:07`.
fn short_time(t: &str) -> String {
    t.get(..19).unwrap_or(t).replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_to_the_second() {
        assert_eq!(
            short_time("2025-01-31T09:41:07.250Z"),
            "2025-01-31 09:41:07"
        );
    }
}
