//! Where a fleet stands: a kit's outbox backlog and broker connection (`edge sync`, the `fleet`
//! line of `edge check`), and the kits a collector has heard from (`edge fleet status`).

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use super::broker::{BrokerSettings, probe};
use crate::config::RunConfig;
use crate::store::{FleetDevice, OutboxBacklog, Store};

/// A kit's forwarding state.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The broker (`[fleet] broker`), none when forwarding is off.
    pub broker: Option<String>,
    /// The kit's site and name.
    pub site: String,
    /// The kit's name.
    pub device: String,
    /// The outbox cap.
    pub outbox_max_rows: u64,
    /// The outbox, when the database exists.
    pub backlog: Option<OutboxBacklog>,
    /// Why the outbox could not be read.
    pub backlog_error: Option<String>,
    /// The connection probe: what was found, or why it failed (none when forwarding is off).
    pub connection: Option<Result<String, String>>,
}

impl SyncReport {
    /// Reads the outbox of the config's database and probes the broker (`timeout` for its
    /// answer).
    pub fn gather(config: &RunConfig, timeout: Duration) -> SyncReport {
        let fleet = &config.fleet;
        let device = fleet.device_name();
        let (backlog, backlog_error) = if config.store.db.exists() {
            match Store::open_read_only(&config.store.db).and_then(|s| s.outbox_backlog()) {
                Ok(b) => (Some(b), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (
                None,
                Some(format!("{}: no database yet", config.store.db.display())),
            )
        };
        let connection = match BrokerSettings::from_config(fleet) {
            Ok(Some(broker)) => Some(probe(
                &broker,
                &format!("leukoscope-probe-{device}-{}", std::process::id()),
                timeout,
            )),
            Ok(None) => None,
            Err(e) => Some(Err(e.to_string())),
        };
        SyncReport {
            broker: fleet.broker.clone(),
            site: fleet.site.clone(),
            device,
            outbox_max_rows: fleet.outbox_max_rows,
            backlog,
            backlog_error,
            connection,
        }
    }

    /// The outbox in one line: `3 unsent of 120 rows (cap 100000), oldest unsent …`.
    pub fn backlog_line(&self) -> String {
        match (&self.backlog, &self.backlog_error) {
            (Some(b), _) => {
                let mut line = format!(
                    "{} unsent of {} rows (cap {})",
                    b.unsent, b.rows, self.outbox_max_rows
                );
                if let Some(t) = &b.oldest_unsent {
                    line.push_str(&format!(", oldest unsent committed {t}"));
                }
                if let Some(t) = &b.last_sent {
                    line.push_str(&format!(", last sent {t}"));
                }
                line
            }
            (None, Some(e)) => e.clone(),
            (None, None) => "unknown".into(),
        }
    }

    /// Whether the outbox is at its cap with unsent rows (`edge run` would stop recording).
    pub fn outbox_full(&self) -> bool {
        self.backlog
            .as_ref()
            .is_some_and(|b| b.unsent >= self.outbox_max_rows)
    }

    /// The report as text (`edge sync`).
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match &self.broker {
            None => writeln!(
                out,
                "fleet forwarding: off (no [fleet] broker in the config, no --fleet-broker)"
            )?,
            Some(url) => writeln!(
                out,
                "fleet forwarding: {url} as {}/{}",
                self.site, self.device
            )?,
        }
        writeln!(out, "outbox: {}", self.backlog_line())?;
        match &self.connection {
            Some(Ok(detail)) => writeln!(out, "broker: {detail}"),
            Some(Err(reason)) => writeln!(out, "broker: NOT CONNECTED: {reason}"),
            None => Ok(()),
        }
    }
}

/// The kits a collector has heard from, as an aligned table (`edge fleet status`).
pub fn write_devices_table(devices: &[FleetDevice], out: &mut dyn Write) -> std::io::Result<()> {
    let header = [
        "SITE",
        "DEVICE",
        "STATE",
        "BACKLOG",
        "LAST SEEN",
        "SESSIONS",
        "FRAMES",
    ];
    let rows: Vec<[String; 7]> = devices
        .iter()
        .map(|d| {
            [
                d.site.clone(),
                d.device.clone(),
                d.state.clone(),
                d.backlog.map_or_else(|| "-".into(), |b| b.to_string()),
                d.last_seen.clone(),
                d.sessions.to_string(),
                d.frames.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
