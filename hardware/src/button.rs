//! One push button, read from timestamped edges on its own thread, debounced, with short and
//! long presses.
//!
//! An [`EdgeSource`] blocks until the line changes (a GPIO line's edge events on Linux:
//! `crate::linux::open_button`) and stamps each [`Edge`] with when it happened. The
//! [`Debouncer`] turns those edges into [`ButtonEvent`]s by the edges' own timestamps, not by
//! when they were read, so a press during inference or a database commit is neither lost nor
//! mistimed. [`ButtonEvents::spawn`] runs the two on a thread and hands the events over a
//! channel; the device loop takes them with [`ButtonEvents::try_recv`], which never blocks.
//!
//! A level must hold for `debounce_ms` before it counts. A short press is reported when the
//! button is released; a long press as soon as the button has been held for `long_press_ms`
//! (with no further edge needed: the thread's wait ends then), and its release is then silent,
//! so one push gives exactly one event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Timing and polarity of a button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonConfig {
    /// How long a level must be stable to count, in ms (default 30).
    pub debounce_ms: u32,
    /// How long a hold is a long press, in ms (default 1500).
    pub long_press_ms: u32,
    /// The pin reads low while pressed (button to ground with a pull-up); default true.
    pub active_low: bool,
}

impl Default for ButtonConfig {
    fn default() -> Self {
        ButtonConfig {
            debounce_ms: 30,
            long_press_ms: 1500,
            active_low: true,
        }
    }
}

/// What the button did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// Pressed and released before the long-press time.
    Press,
    /// Held for the long-press time (reported while still held).
    LongPress,
}

/// A [`ButtonEvent`] and when it happened, on the edge source's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampedEvent {
    /// What happened.
    pub event: ButtonEvent,
    /// When, in ns: the end of the debounce for a press, press + `long_press_ms` for a long
    /// press.
    pub at_ns: u64,
}

/// One change of the button line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// When it happened, in ns on the source's monotonic clock ([`EdgeSource::now_ns`]).
    pub timestamp_ns: u64,
    /// The line went high (else low).
    pub rising: bool,
}

/// Reading the button line failed.
#[derive(Debug, thiserror::Error)]
#[error("button line: {0}")]
pub struct ButtonError(pub Box<dyn std::error::Error + Send + Sync>);

impl From<std::io::Error> for ButtonError {
    fn from(e: std::io::Error) -> Self {
        ButtonError(Box::new(e))
    }
}

/// Where a button's edges come from: a GPIO line's edge events, or a script in tests.
pub trait EdgeSource: Send {
    /// Waits up to `timeout` for the next edge; `None` when none came.
    fn next_edge(&mut self, timeout: Duration) -> Result<Option<Edge>, ButtonError>;
    /// The current time on the clock the edges are stamped with, in ns.
    fn now_ns(&mut self) -> u64;
}

const MS: u64 = 1_000_000;

/// Turns timestamped edges into debounced presses and long presses.
#[derive(Debug, Clone)]
pub struct Debouncer {
    config: ButtonConfig,
    /// The debounced state.
    pressed: bool,
    /// The line's state after the last edge, and since when.
    raw: bool,
    raw_since: u64,
    /// When the current press began (its first edge).
    pressed_since: u64,
    long_reported: bool,
}

impl Debouncer {
    /// A debouncer for a button that starts out released.
    pub fn new(config: ButtonConfig) -> Self {
        Debouncer {
            config,
            pressed: false,
            raw: false,
            raw_since: 0,
            pressed_since: 0,
            long_reported: false,
        }
    }

    /// Whether the debounced button is down.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    /// Takes one edge: first settles what became due before it (see [`tick`](Self::tick)),
    /// then records the new level.
    pub fn edge(&mut self, edge: Edge) -> Option<StampedEvent> {
        let event = self.tick(edge.timestamp_ns);
        let level = edge.rising != self.config.active_low;
        if level != self.raw {
            self.raw = level;
            self.raw_since = edge.timestamp_ns;
        }
        event
    }

    /// Settles what is due at `now_ns` with no further edge: a level that has held for the
    /// debounce time, or a long press.
    pub fn tick(&mut self, now_ns: u64) -> Option<StampedEvent> {
        let mut event = None;
        // At most two steps: a press settles, then its long press comes due.
        while let Some(due) = self.deadline_ns().filter(|&d| d <= now_ns) {
            if let Some(e) = self.step(due) {
                event = Some(e);
            }
        }
        event
    }

    /// When the next event or state change is due with no further edge (`None`: nothing
    /// pending).
    pub fn deadline_ns(&self) -> Option<u64> {
        let settle = (self.raw != self.pressed)
            .then(|| self.raw_since + u64::from(self.config.debounce_ms) * MS);
        let long = (self.pressed && !self.long_reported)
            .then(|| self.pressed_since + u64::from(self.config.long_press_ms) * MS);
        match (settle, long) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Carries out what is due at `due` (the earliest deadline).
    fn step(&mut self, due: u64) -> Option<StampedEvent> {
        let long_due = self.pressed
            && !self.long_reported
            && due == self.pressed_since + u64::from(self.config.long_press_ms) * MS;
        if long_due {
            self.long_reported = true;
            return Some(StampedEvent {
                event: ButtonEvent::LongPress,
                at_ns: due,
            });
        }
        self.pressed = self.raw;
        if self.pressed {
            self.pressed_since = self.raw_since;
            self.long_reported = false;
            None
        } else {
            (!self.long_reported).then_some(StampedEvent {
                event: ButtonEvent::Press,
                at_ns: due,
            })
        }
    }
}

/// How often the button thread looks whether it should stop, at the latest.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A button read on its own thread; events wait in a channel until the device loop takes them.
/// Dropping it stops the thread (within 50 ms) and waits for it.
pub struct ButtonEvents {
    events: Receiver<Result<StampedEvent, ButtonError>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ButtonEvents {
    /// Starts the thread that reads `source` and debounces its edges with `config`.
    pub fn spawn<S: EdgeSource + 'static>(
        source: S,
        config: ButtonConfig,
    ) -> Result<Self, ButtonError> {
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("button".into()).spawn({
            let stop = stop.clone();
            move || read_button(source, Debouncer::new(config), &stop, &tx)
        })?;
        Ok(ButtonEvents {
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// The next event, if one is waiting; never blocks. An error means the thread has ended
    /// (the line failed): no more events come after it.
    pub fn try_recv(&self) -> Result<Option<StampedEvent>, ButtonError> {
        match self.events.try_recv() {
            Ok(event) => event.map(Some),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Ok(None),
        }
    }
}

impl Drop for ButtonEvents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The button thread: wait for an edge (or the next deadline), debounce, send.
fn read_button(
    mut source: impl EdgeSource,
    mut debouncer: Debouncer,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Result<StampedEvent, ButtonError>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let now = source.now_ns();
        if let Some(event) = debouncer.tick(now)
            && tx.send(Ok(event)).is_err()
        {
            return;
        }
        let wait = debouncer
            .deadline_ns()
            .map_or(STOP_CHECK, |d| Duration::from_nanos(d.saturating_sub(now)))
            .min(STOP_CHECK);
        let event = match source.next_edge(wait) {
            Ok(Some(edge)) => debouncer.edge(edge).map(Ok),
            Ok(None) => None,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if let Some(event) = event
            && tx.send(event).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FALL: bool = false;
    const RISE: bool = true;

    /// Feeds `(ms, rising)` edges to a debouncer, then ticks at `end_ms`; the events with
    /// their times in ms.
    fn run(config: ButtonConfig, edges: &[(u64, bool)], end_ms: u64) -> Vec<(u64, ButtonEvent)> {
        let mut d = Debouncer::new(config);
        let mut events: Vec<StampedEvent> = edges
            .iter()
            .filter_map(|&(ms, rising)| {
                d.edge(Edge {
                    timestamp_ns: ms * MS,
                    rising,
                })
            })
            .collect();
        events.extend(d.tick(end_ms * MS));
        events.iter().map(|e| (e.at_ns / MS, e.event)).collect()
    }

    fn cfg() -> ButtonConfig {
        ButtonConfig::default()
    }

    #[test]
    fn short_press_is_reported_on_release_at_the_end_of_its_debounce() {
        assert_eq!(
            run(cfg(), &[(10, FALL), (100, RISE)], 200),
            vec![(130, ButtonEvent::Press)]
        );
        // Not before the release has held for the debounce time.
        assert_eq!(run(cfg(), &[(10, FALL), (100, RISE)], 129), vec![]);
    }

    #[test]
    fn bounces_shorter_than_the_debounce_time_are_ignored() {
        let bounces = [
            (0, FALL),
            (5, RISE),
            (10, FALL),
            (15, RISE),
            (20, FALL),
            (25, RISE),
        ];
        assert_eq!(run(cfg(), &bounces, 5_000), vec![]);
        // A press that bounces on the way down and up is one press.
        let bouncy_press = [
            (0, FALL),
            (3, RISE),
            (6, FALL),
            (300, RISE),
            (310, FALL),
            (315, RISE),
        ];
        assert_eq!(
            run(cfg(), &bouncy_press, 5_000),
            vec![(345, ButtonEvent::Press)]
        );
    }

    #[test]
    fn long_press_fires_once_at_the_right_time_and_its_release_is_silent() {
        assert_eq!(
            run(cfg(), &[(100, FALL), (2600, RISE)], 5_000),
            vec![(1600, ButtonEvent::LongPress)]
        );
        // With no edge after the press, ticking reports it once it is due, and only once.
        let mut d = Debouncer::new(cfg());
        assert_eq!(
            d.edge(Edge {
                timestamp_ns: 100 * MS,
                rising: FALL
            }),
            None
        );
        assert_eq!(d.tick(1_599 * MS), None);
        assert!(d.is_pressed());
        assert_eq!(d.deadline_ns(), Some(1_600 * MS));
        let long = d.tick(1_700 * MS).unwrap();
        assert_eq!(
            (long.event, long.at_ns),
            (ButtonEvent::LongPress, 1_600 * MS)
        );
        assert_eq!(d.tick(9_000 * MS), None);
    }

    #[test]
    fn active_high_and_custom_timing() {
        let config = ButtonConfig {
            debounce_ms: 5,
            long_press_ms: 200,
            active_low: false,
        };
        assert_eq!(
            run(config, &[(50, RISE), (100, FALL), (301, RISE)], 600),
            vec![(105, ButtonEvent::Press), (501, ButtonEvent::LongPress)]
        );
    }

    /// Edges from a script on a virtual clock: `next_edge` moves the clock to the next edge
    /// when it is within the timeout, else by the timeout. Once the clock passes `end_ns`, it
    /// says so on `done` and then waits for real (briefly) so the thread idles.
    struct Script {
        edges: std::collections::VecDeque<Edge>,
        now: u64,
        end_ns: u64,
        done: Option<mpsc::Sender<()>>,
        dropped: Arc<AtomicBool>,
        fail_at_end: bool,
    }

    impl EdgeSource for Script {
        fn next_edge(&mut self, timeout: Duration) -> Result<Option<Edge>, ButtonError> {
            let until = self.now + u64::try_from(timeout.as_nanos()).unwrap();
            if let Some(edge) = self.edges.front().filter(|e| e.timestamp_ns <= until) {
                self.now = edge.timestamp_ns;
                return Ok(self.edges.pop_front());
            }
            self.now = until;
            if self.now >= self.end_ns {
                if self.fail_at_end {
                    return Err(std::io::Error::other("line gone").into());
                }
                if let Some(done) = self.done.take() {
                    let _ = done.send(());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(None)
        }
        fn now_ns(&mut self) -> u64 {
            self.now
        }
    }

    impl Drop for Script {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    struct Scripted {
        events: ButtonEvents,
        done: Receiver<()>,
        dropped: Arc<AtomicBool>,
    }

    fn spawn(edges: &[(u64, bool)], end_ms: u64, fail_at_end: bool) -> Scripted {
        let (done_tx, done) = mpsc::channel();
        let dropped = Arc::new(AtomicBool::new(false));
        let script = Script {
            edges: edges
                .iter()
                .map(|&(ms, rising)| Edge {
                    timestamp_ns: ms * MS,
                    rising,
                })
                .collect(),
            now: 0,
            end_ns: end_ms * MS,
            done: Some(done_tx),
            dropped: dropped.clone(),
            fail_at_end,
        };
        let events = ButtonEvents::spawn(script, cfg()).unwrap();
        Scripted {
            events,
            done,
            dropped,
        }
    }

    fn drain(events: &ButtonEvents) -> Vec<(u64, ButtonEvent)> {
        let mut out = Vec::new();
        while let Some(e) = events.try_recv().unwrap() {
            out.push((e.at_ns / MS, e.event));
        }
        out
    }

    #[test]
    fn a_tap_while_the_consumer_is_busy_is_kept_until_it_reads() {
        // A tap, bounces, and a long press, all over before the consumer looks.
        let s = spawn(
            &[
                (1_000, FALL),
                (1_080, RISE),
                (3_000, FALL),
                (3_004, RISE),
                (5_000, FALL),
                (8_000, RISE),
            ],
            10_000,
            false,
        );
        // The consumer is busy (inference, a commit) until the script has run out.
        s.done.recv().unwrap();
        assert_eq!(
            drain(&s.events),
            vec![(1_110, ButtonEvent::Press), (6_500, ButtonEvent::LongPress)]
        );
        assert_eq!(drain(&s.events), vec![]);
    }

    #[test]
    fn a_long_press_needs_no_further_edge() {
        // Pressed and still held when the script ends: the thread's timed wait reports it.
        let s = spawn(&[(100, FALL)], 4_000, false);
        s.done.recv().unwrap();
        assert_eq!(drain(&s.events), vec![(1_600, ButtonEvent::LongPress)]);
    }

    #[test]
    fn the_thread_stops_when_dropped() {
        let s = spawn(&[], 1_000, false);
        s.done.recv().unwrap();
        assert!(!s.dropped.load(Ordering::SeqCst));
        drop(s.events);
        // The thread has ended: it dropped its source.
        assert!(s.dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_failing_line_is_reported_and_ends_the_thread() {
        let s = spawn(&[(10, FALL), (100, RISE)], 1_000, true);
        let events = s.events;
        // The press before the failure still arrives, then the error.
        let mut got = Vec::new();
        let error = loop {
            match events.try_recv() {
                Ok(Some(e)) => got.push(e.event),
                Ok(None) => std::thread::yield_now(),
                Err(e) => break e,
            }
        };
        assert_eq!(got, vec![ButtonEvent::Press]);
        assert!(error.to_string().contains("line gone"), "{error}");
        // The thread has ended: its source is gone, and nothing more comes.
        while !s.dropped.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(events.try_recv().unwrap().is_none());
    }
}
