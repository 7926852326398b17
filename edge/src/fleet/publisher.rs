//! The publisher: a thread of `edge run` that sends the outbox to the broker.
//!
//! It connects (clean session, client id `leukoscope-kit-<device>`, a retained `offline` status
//! as its last will), says `online` (retained, with its backlog), then publishes unsent outbox
//! rows oldest first, at most [`WINDOW`] unacknowledged at a time, each as a QoS 1 message.
//! A row is marked sent only when the broker's `PUBACK` for its packet arrives. The writer
//! wakes it after each commit that queued rows; it also looks every second. When the
//! connection drops, the rows not yet acknowledged are sent again on the next connection (same
//! message ids: consumers drop the duplicates); reconnection backs off from 0.2 s to 30 s. A
//! failed connection is logged once per distinct reason (bad password, unreachable, TLS), with
//! the backlog; classifying never waits for the broker.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectionError, Event, LastWill, Outgoing, Packet, QoS};
use tracing::{debug, error, info, warn};

use super::FleetError;
use super::broker::{BrokerSettings, describe};
use super::message::{frame_payload, session_payload, status_payload, topic};
use crate::store::{OutboxEntry, OutboxKind, Store};

/// Outbox rows published and not yet acknowledged, at most.
pub const WINDOW: usize = 64;
/// Status messages are sent at most this often when the backlog changes.
const STATUS_MIN_GAP: Duration = Duration::from_secs(2);
/// How long a connection attempt waits for the broker's `CONNACK`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection back-off: from, to.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));

/// What the publisher needs.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// The broker.
    pub broker: BrokerSettings,
    /// The kit's site (topic level).
    pub site: String,
    /// The kit's name (topic level).
    pub device: String,
    /// The kit's database (opened a second time, for the outbox).
    pub db: PathBuf,
    /// Where kept pictures are, when they are sent (`[fleet] send_pictures`).
    pub pictures: Option<PathBuf>,
    /// Seconds between status messages.
    pub status_interval: Duration,
}

/// What reaches the publisher thread.
enum Msg {
    /// New outbox rows were committed.
    Wake,
    /// Finish: send what can be sent within the grace period, say `offline`, disconnect.
    Stop(Duration),
    /// An event of connection `generation`.
    Event(u64, Result<Event, ConnectionError>),
}

/// The running publisher.
pub struct Publisher {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts the thread. The database must have been opened by its writer (migrated).
    pub fn start(settings: PublisherSettings) -> Result<Publisher, FleetError> {
        let store = Store::open_publisher(&settings.db)?;
        let (tx, rx) = channel();
        let thread_tx = tx.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-publisher".into())
            .spawn(move || Worker::new(settings, store, rx, thread_tx).run())
            .map_err(|source| FleetError::Io {
                path: PathBuf::from("fleet-publisher thread"),
                source,
            })?;
        Ok(Publisher {
            tx,
            thread: Some(thread),
        })
    }

    /// A wake-up for the writer to call after each commit that queued rows
    /// ([`Store::set_outbox_notify`]).
    pub fn notifier(&self) -> Box<dyn Fn() + Send> {
        let tx = self.tx.clone();
        Box::new(move || {
            let _ = tx.send(Msg::Wake);
        })
    }

    /// Stops: within `grace`, what is still unsent is sent if the broker is connected, then the
    /// kit says `offline` and disconnects. What stays unsent waits in the outbox for the next run.
    pub fn stop(mut self, grace: Duration) {
        let _ = self.tx.send(Msg::Stop(grace));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Msg::Stop(Duration::ZERO));
            let _ = t.join();
        }
    }
}

/// How a connection ended.
enum Ended {
    Stopped,
    Lost(String),
}

struct Worker {
    s: PublisherSettings,
    store: Store,
    rx: Receiver<Msg>,
    tx: Sender<Msg>,
    generation: u64,
    /// When the run asked to stop, and until when sending may go on.
    stop_by: Option<Instant>,
    /// The last connection failure logged (each distinct reason once).
    last_error: Option<String>,
}

/// One connection's bookkeeping.
#[derive(Default)]
struct Flight {
    /// Published, packet id not yet known, in publish order (`None`: a status message).
    queued: VecDeque<Option<i64>>,
    /// Packet id → outbox row.
    inflight: HashMap<u16, Option<i64>>,
    /// Acknowledged rows not yet marked.
    acked: Vec<i64>,
    /// The highest outbox id published on this connection.
    last: i64,
    /// Something was sent since the last status.
    dirty: bool,
}

impl Flight {
    fn open(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }
}

impl Worker {
    fn new(s: PublisherSettings, store: Store, rx: Receiver<Msg>, tx: Sender<Msg>) -> Worker {
        Worker {
            s,
            store,
            rx,
            tx,
            generation: 0,
            stop_by: None,
            last_error: None,
        }
    }

    fn run(mut self) {
        let mut backoff = BACKOFF.0;
        loop {
            if self.stop_by.is_some() {
                return;
            }
            let connected_at = Instant::now();
            match self.connection() {
                Ended::Stopped => return,
                Ended::Lost(reason) => {
                    let unsent = self.store.outbox_backlog().map(|b| b.unsent).unwrap_or(0);
                    if self.last_error.as_deref() != Some(reason.as_str()) {
                        warn!(
                            "fleet: {reason}; {unsent} result(s) wait in the outbox, retrying \
                             (classifying goes on)"
                        );
                        self.last_error = Some(reason);
                    } else {
                        debug!("fleet: {reason} (again); {unsent} unsent");
                    }
                    if connected_at.elapsed() > BACKOFF.1 {
                        backoff = BACKOFF.0;
                    }
                    if self.pause(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        }
    }

    /// Waits `d` (stale events are dropped); true when asked to stop.
    fn pause(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.rx.recv_timeout(left) {
                Ok(Msg::Stop(grace)) => {
                    self.stop_by = Some(Instant::now() + grace);
                    return true;
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
    }

    fn status_topic(&self) -> String {
        topic(&self.s.site, &self.s.device, "status")
    }

    /// One connection, from connecting to its end.
    fn connection(&mut self) -> Ended {
        self.generation += 1;
        let generation = self.generation;
        let mut options = match self
            .s
            .broker
            .mqtt_options(&format!("leukoscope-kit-{}", self.s.device))
        {
            Ok(o) => o,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        options.set_clean_session(true);
        options.set_last_will(LastWill::new(
            self.status_topic(),
            status_payload(&self.s.device, &self.s.site, "offline", None),
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut connection) = Client::new(options, 4 * WINDOW);
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("fleet-mqtt".into())
            .spawn(move || {
                for event in connection.iter() {
                    let failed = event.is_err();
                    if tx.send(Msg::Event(generation, event)).is_err() || failed {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            return Ended::Lost(format!("cannot start the MQTT thread: {e}"));
        }
        let ended = self.connected(&client, generation);
        let _ = client.try_disconnect();
        ended
    }

    /// Waits for `CONNACK`, then publishes until the connection ends or the run stops.
    fn connected(&mut self, client: &Client, generation: u64) -> Ended {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Event(g, Ok(Event::Incoming(Packet::ConnAck(_))))) if g == generation => {
                    break;
                }
                Ok(Msg::Event(g, Err(e))) if g == generation => return Ended::Lost(describe(&e)),
                Ok(Msg::Stop(_)) => {
                    self.stop_by = Some(Instant::now());
                    return Ended::Stopped;
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Ended::Lost(format!(
                        "{}: no answer within {CONNECT_TIMEOUT:?}",
                        self.s.broker.url
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => return Ended::Stopped,
            }
        }
        let unsent = self.store.outbox_backlog().map(|b| b.unsent).unwrap_or(0);
        info!(
            "fleet: connected to {} as {}/{}; {unsent} result(s) to send",
            self.s.broker.url, self.s.site, self.s.device
        );
        self.last_error = None;
        let mut flight = Flight::default();
        let mut last_status = Instant::now();
        self.publish_status(client, &mut flight, "online");
        loop {
            if let Err(e) = self.fill(client, &mut flight) {
                error!("fleet: {e}");
            }
            if let Some(by) = self.stop_by
                && (flight.open() == 0 || Instant::now() >= by)
            {
                return self.goodbye(client, generation, &mut flight);
            }
            let due = if flight.dirty && flight.open() == 0 {
                STATUS_MIN_GAP
            } else {
                self.s.status_interval
            };
            if last_status.elapsed() >= due {
                self.publish_status(client, &mut flight, "online");
                last_status = Instant::now();
            }
            let wait = due
                .saturating_sub(last_status.elapsed())
                .min(Duration::from_secs(1));
            let first = match self.rx.recv_timeout(wait) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ended::Stopped,
            };
            let mut next = Some(first);
            while let Some(m) = next {
                if let Some(lost) = self.handle(m, generation, &mut flight) {
                    self.mark(&mut flight);
                    return Ended::Lost(lost);
                }
                next = self.rx.try_recv().ok();
            }
            self.mark(&mut flight);
        }
    }

    /// Applies one message; `Some(reason)` when the connection is lost.
    fn handle(&mut self, m: Msg, generation: u64, flight: &mut Flight) -> Option<String> {
        match m {
            Msg::Wake => {}
            Msg::Stop(grace) => self.stop_by = Some(Instant::now() + grace),
            Msg::Event(g, _) if g != generation => {}
            Msg::Event(_, Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(row) = flight.queued.pop_front() {
                    flight.inflight.insert(pkid, row);
                }
            }
            Msg::Event(_, Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(Some(row)) = flight.inflight.remove(&ack.pkid) {
                    flight.acked.push(row);
                }
            }
            Msg::Event(_, Ok(_)) => {}
            Msg::Event(_, Err(e)) => return Some(describe(&e)),
        }
        None
    }

    /// Marks acknowledged rows sent.
    fn mark(&mut self, flight: &mut Flight) {
        if flight.acked.is_empty() {
            return;
        }
        match self.store.mark_sent(&flight.acked) {
            Ok(()) => {
                flight.dirty = true;
                flight.acked.clear();
            }
            // Kept: marked with the next acknowledgement (or sent again after a restart).
            Err(e) => warn!("fleet: cannot mark {} row(s) sent: {e}", flight.acked.len()),
        }
    }

    /// Publishes unsent rows until the window is full.
    fn fill(&mut self, client: &Client, flight: &mut Flight) -> Result<(), FleetError> {
        while flight.open() < WINDOW {
            let rows = self
                .store
                .outbox_pending(flight.last, WINDOW - flight.open())?;
            if rows.is_empty() {
                return Ok(());
            }
            for entry in rows {
                let (kind, payload) = match self.payload(&entry) {
                    Ok(p) => p,
                    Err(e) => {
                        // A row that cannot be read would block the outbox for good.
                        error!(
                            "fleet: outbox row {} ({} {}) cannot be read, skipped: {e}",
                            entry.id,
                            entry.kind.as_str(),
                            entry.row_id
                        );
                        self.store.mark_sent(&[entry.id])?;
                        flight.last = entry.id;
                        continue;
                    }
                };
                let t = topic(&self.s.site, &self.s.device, kind);
                if client
                    .try_publish(t, QoS::AtLeastOnce, false, payload)
                    .is_err()
                {
                    // The request queue is full: the rest goes with the next round.
                    return Ok(());
                }
                flight.queued.push_back(Some(entry.id));
                flight.last = entry.id;
            }
        }
        Ok(())
    }

    /// The topic kind and payload of an outbox row.
    fn payload(&self, entry: &OutboxEntry) -> Result<(&'static str, Vec<u8>), FleetError> {
        let (device, site) = (&self.s.device, &self.s.site);
        Ok(match entry.kind {
            OutboxKind::Session => {
                let row = self.store.session(entry.row_id)?;
                ("session", session_payload(device, site, entry, &row))
            }
            OutboxKind::Frame => {
                let row = self.store.frame(entry.row_id)?;
                let picture = match (&self.s.pictures, &row.frame.kept_image) {
                    (Some(dir), Some(rel)) => std::fs::read(dir.join(rel)).ok().map(|bytes| {
                        let name = rel.to_string_lossy().replace('\\', "/");
                        (name, bytes)
                    }),
                    _ => None,
                };
                let picture = picture.as_ref().map(|(n, b)| (n.as_str(), b.as_slice()));
                ("frame", frame_payload(device, site, entry, &row, picture))
            }
        })
    }

    /// The retained status message, with the backlog.
    fn publish_status(&mut self, client: &Client, flight: &mut Flight, state: &str) -> bool {
        let unsent = self.store.outbox_backlog().map(|b| b.unsent).ok();
        let payload = status_payload(&self.s.device, &self.s.site, state, unsent);
        let ok = client
            .try_publish(self.status_topic(), QoS::AtLeastOnce, true, payload)
            .is_ok();
        if ok {
            flight.queued.push_back(None);
            flight.dirty = false;
        }
        ok
    }

    /// Says `offline` (retained), waits up to a second for its acknowledgement, and ends.
    fn goodbye(&mut self, client: &Client, generation: u64, flight: &mut Flight) -> Ended {
        let unsent = self.store.outbox_backlog().map(|b| b.unsent).unwrap_or(0);
        if self.publish_status(client, flight, "offline") {
            let until = Instant::now() + Duration::from_secs(1);
            while flight.open() > 0 {
                let left = until.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(m) => {
                        if self.handle(m, generation, flight).is_some() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            self.mark(flight);
        }
        info!("fleet: disconnected; {unsent} result(s) left in the outbox for the next run");
        Ended::Stopped
    }
}
