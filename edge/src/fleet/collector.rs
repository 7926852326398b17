//! `edge fleet collect`: every kit's results into one database.
//!
//! The collector connects with a fixed client id and `clean_session=false`, so the broker keeps
//! its subscription and queues the QoS 1 messages published while it is down (the broker's
//! queue limit must allow for that: Mosquitto's `max_queued_messages`). It (re)subscribes to
//! `leukoscope/<site or +>/+/+` whenever the broker has no session for it. Messages are taken in
//! batches of up to [`CollectOptions::batch`], applied in one committed transaction (a message
//! id seen before is dropped: [`Store::apply_received`]), and only then acknowledged
//! (`PUBACK`, manual acknowledgement): a collector killed at any point gets the unacknowledged
//! messages again and applies each once. A message that is not a leukoscope message is logged
//! and acknowledged (dropped), so it cannot block the queue.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Packet, Publish, QoS};
use tracing::{debug, info, warn};

use super::FleetError;
use super::broker::{BrokerSettings, describe};
use super::message::{Decoded, decode, subscription};
use crate::store::{Received, ReceivedKind, Store};

/// What `edge fleet collect` needs.
pub struct CollectOptions {
    /// The broker.
    pub broker: BrokerSettings,
    /// The collector's database (created if needed; the kits' schema).
    pub db: PathBuf,
    /// Only this site's kits (default: every site).
    pub site: Option<String>,
    /// The fixed client id the broker keeps the collector's session under.
    pub client_id: String,
    /// Where to write the pictures kits send (`<dir>/<device>/<kept path>`); none: dropped.
    pub pictures: Option<PathBuf>,
    /// Messages applied per transaction, at most.
    pub batch: usize,
    /// Told once the first subscription is acknowledged (the bench waits for it).
    pub ready: Option<Sender<()>>,
}

impl CollectOptions {
    /// Options with the defaults: client id `leukoscope-collector-<site or all>`, batches of
    /// 256, no pictures.
    pub fn new(broker: BrokerSettings, db: PathBuf, site: Option<String>) -> CollectOptions {
        let client_id = format!("leukoscope-collector-{}", site.as_deref().unwrap_or("all"));
        CollectOptions {
            broker,
            db,
            site,
            client_id,
            pictures: None,
            batch: 256,
            ready: None,
        }
    }
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectSummary {
    /// Messages received.
    pub messages: u64,
    /// Sessions and frames applied (new message ids).
    pub applied: u64,
    /// Messages dropped as already applied.
    pub duplicates: u64,
    /// Messages that were not leukoscope messages (logged, acknowledged, dropped).
    pub rejected: u64,
}

/// Collects until `shutdown` is set. A database that cannot be opened or written is an error;
/// a broker that cannot be reached is retried (logged once per distinct reason).
pub fn collect(
    options: &CollectOptions,
    shutdown: &AtomicBool,
) -> Result<CollectSummary, FleetError> {
    let mut store = Store::open(&options.db)?;
    let mut mqtt = options.broker.mqtt_options(&options.client_id)?;
    mqtt.set_clean_session(false);
    mqtt.set_manual_acks(true);
    let (client, mut connection) = Client::new(mqtt, 4 * options.batch.max(1));
    let topic = subscription(options.site.as_deref());
    let mut summary = CollectSummary::default();
    let mut ready = options.ready.clone();
    let mut last_error: Option<String> = None;
    let mut backoff = Duration::from_millis(200);
    let mut batch: Vec<Publish> = Vec::new();
    // Committed messages whose acknowledgement is not yet handed to the event loop: its request
    // queue is only drained while the connection is polled (here), so a blocking `ack` on a
    // full queue would wait for ever.
    let mut acks: VecDeque<Publish> = VecDeque::new();
    while !shutdown.load(Ordering::SeqCst) {
        while let Some(p) = acks.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            acks.pop_front();
        }
        let event = match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(event) => event,
            Err(_) => continue,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(
                    "fleet collect: connected to {} as {} (session kept by the broker: {})",
                    options.broker.url, options.client_id, ack.session_present
                );
                last_error = None;
                backoff = Duration::from_millis(200);
                if !ack.session_present {
                    client
                        .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                        .map_err(|e| FleetError::Broker {
                            url: options.broker.url.to_string(),
                            reason: e.to_string(),
                        })?;
                } else if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                info!(
                    "fleet collect: subscribed to {topic} into {}",
                    options.db.display()
                );
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                batch.push(p);
                // Take what else is already there, up to a batch.
                while batch.len() < options.batch.max(1) {
                    match connection.try_recv() {
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => batch.push(p),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            warn!("fleet collect: {}", describe(&e));
                            break;
                        }
                        Err(_) => break,
                    }
                }
                apply(&mut store, options, &mut batch, &mut summary)?;
                // Acknowledged only now, after the commit.
                acks.extend(batch.drain(..));
            }
            Ok(_) => {}
            Err(e) => {
                let reason = describe(&e);
                if last_error.as_deref() != Some(reason.as_str()) {
                    warn!("fleet collect: {reason}; retrying");
                    last_error = Some(reason);
                }
                let until = Instant::now() + backoff;
                while Instant::now() < until && !shutdown.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = connection.recv_timeout(Duration::from_millis(500));
    info!(
        "fleet collect: {} message(s), {} applied, {} duplicate(s), {} rejected",
        summary.messages, summary.applied, summary.duplicates, summary.rejected
    );
    Ok(summary)
}

/// Decodes a batch, keeps its pictures and commits it (the caller then acknowledges it).
fn apply(
    store: &mut Store,
    options: &CollectOptions,
    batch: &mut [Publish],
    summary: &mut CollectSummary,
) -> Result<(), FleetError> {
    let mut received: Vec<Received> = Vec::with_capacity(batch.len());
    for p in batch.iter() {
        summary.messages += 1;
        match decode(&p.topic, &p.payload) {
            Ok(d) => received.push(keep_picture(d, options.pictures.as_deref())?),
            Err(e) => {
                summary.rejected += 1;
                warn!("fleet collect: dropped a message: {e}");
            }
        }
    }
    let results = received
        .iter()
        .filter(|r| !matches!(r.kind, ReceivedKind::Status { .. }))
        .count() as u64;
    let applied = store.apply_received(&received)? as u64;
    summary.applied += applied;
    summary.duplicates += results - applied;
    debug!(
        "fleet collect: committed {} message(s), {applied} new",
        batch.len()
    );
    Ok(())
}

/// Writes a frame's picture to `<dir>/<device>/<name>` (before the commit that refers to it)
/// and points the frame's `kept_image` there; without a folder the reference is dropped.
fn keep_picture(d: Decoded, dir: Option<&Path>) -> Result<Received, FleetError> {
    let Decoded {
        mut received,
        picture,
    } = d;
    if let ReceivedKind::Frame(row) = &mut received.kind {
        row.frame.kept_image = None;
        if let (Some(dir), Some((name, bytes))) = (dir, picture) {
            let rel = safe_relative(&received.device).join(safe_relative(&name));
            let path = dir.join(&rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| FleetError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, bytes).map_err(|source| FleetError::Io {
                path: path.clone(),
                source,
            })?;
            row.frame.kept_image = Some(rel);
        }
    }
    Ok(received)
}

/// A picture name from a kit as a relative path with no `..`, root or prefix parts.
fn safe_relative(name: &str) -> PathBuf {
    Path::new(name)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_names_stay_inside_the_folder() {
        assert_eq!(safe_relative("s1/f2.jpg"), PathBuf::from("s1/f2.jpg"));
        assert_eq!(safe_relative("../../etc/x"), PathBuf::from("etc/x"));
        assert_eq!(safe_relative("/abs/y.jpg"), PathBuf::from("abs/y.jpg"));
    }
}
