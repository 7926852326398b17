//! Fleet forwarding: many kits, one review.
//!
//! A kit (`edge run` with `[fleet] broker` set, or `--fleet-broker URL`) writes every committed
//! session change and frame result, in the same SQLite transaction, to an outbox table of its
//! own database ([`crate::store`]). The [`publisher`] thread sends the outbox to an MQTT broker
//! (MQTT 3.1.1, QoS 1) and marks a row sent only when the broker acknowledges it. Without a
//! network the kit works exactly as without forwarding; the backlog waits, bounded by `[fleet]
//! outbox_max_rows` (a full outbox of unsent rows is a fault like a full disk:
//! `ERROR code=outbox_full`).
//!
//! # Messages ([`message`])
//! Topics `leukoscope/<site>/<device>/session`, `…/frame` and `…/status`. Session and frame
//! payloads are JSON objects with the field names of `edge export --format json` (a session as
//! its `session` object, a frame as one of its `frames`) plus `message_id`, `device`, `site` and
//! `committed` (when the kit committed the change). The message id is `<device>/frame/<frame
//! id>` or `<device>/session/<session id>/<change>` (`open`, `closed`, `interrupted`): stable
//! across retries, so a consumer drops duplicates by it. A message may be delivered more than
//! once (QoS 1) and a session message carries the session as stored when it was sent. With
//! `send_pictures`, a flagged frame's kept picture rides in its frame message (`picture`,
//! base64 of the JPEG, and `picture_name`). The retained `status` message says `online` (with
//! the unsent backlog) or `offline` (the kit's last will, or its goodbye).
//!
//! # Collector ([`collector`])
//! `edge fleet collect --broker URL --db central.db` subscribes with a persistent session (fixed
//! client id, `clean_session=false`, QoS 1), writes each kit's sessions and frames into one
//! database with the kit's schema plus the `device` columns, drops duplicates by message id and
//! acknowledges a message only after its own commit: a collector killed at any moment loses
//! nothing and doubles nothing.
//!
//! [`status`] is `edge sync` (a kit's backlog and connection) and `edge fleet status` (the kits a
//! collector heard from). [`broker`] holds the URL, TLS and credential settings shared by both ends and the
//! connection probe of `edge sync` and `edge check`; [`bench`](mod@bench) measures both ends.

pub mod bench;
pub mod broker;
pub mod collector;
pub mod message;
pub mod publisher;
pub mod status;

use thiserror::Error;

pub use broker::{BrokerSettings, BrokerUrl, probe};
pub use collector::{CollectOptions, CollectSummary, collect};
pub use publisher::{Publisher, PublisherSettings};
pub use status::{SyncReport, write_devices_table};

/// A fleet operation that failed.
#[derive(Debug, Error)]
pub enum FleetError {
    /// The broker URL or a TLS / credential setting is unusable.
    #[error("fleet settings: {0}")]
    Settings(String),
    /// The broker could not be reached or refused the connection.
    #[error("broker {url}: {reason}")]
    Broker {
        /// The broker.
        url: String,
        /// Why, in words.
        reason: String,
    },
    /// A database operation failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A file (picture, certificate) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The host name (the default device name), or `leukoscope` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "leukoscope".into())
}

/// A site or device name must be one MQTT topic level: not empty, no `/`, `+`, `#`, no control
/// characters.
pub fn check_topic_level(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(format!(
            "{name:?} holds {c:?}, which cannot be in an MQTT topic level"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_topic_levels() {
        assert!(check_topic_level("clinic-7").is_ok());
        assert!(check_topic_level("").is_err());
        for bad in ["a/b", "a+", "#", "a\nb"] {
            assert!(check_topic_level(bad).is_err(), "{bad:?}");
        }
        assert!(!host_name().is_empty());
    }
}
