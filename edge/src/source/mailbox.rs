//! The hand-over between a source's background thread and the run loop: a small queue that either
//! blocks the producer (backpressure) or replaces the unconsumed frame (newest frame only).
//! Events other than frames (`Skipped`, `Lost`, `Restored`, `End`) are never dropped.

use std::collections::VecDeque;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::SourceEvent;

/// What the producer does when the consumer is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Wait while this many frames are waiting (files, folders, pipes: nothing is lost).
    Backpressure(usize),
    /// Keep one frame: a new frame replaces the waiting one (cameras, live pipes: always the
    /// newest).
    Latest,
}

/// An item in the queue: an event, or a camera frame still to be converted, so that frames that
/// are replaced before anyone takes them are never converted.
pub(crate) enum Item {
    Event(SourceEvent),
    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    Deferred(Box<dyn FnOnce() -> SourceEvent + Send>),
}

impl Item {
    fn is_frame(&self) -> bool {
        matches!(self, Item::Event(SourceEvent::Frame(_)) | Item::Deferred(_))
    }

    pub(crate) fn into_event(self) -> SourceEvent {
        match self {
            Item::Event(e) => e,
            Item::Deferred(f) => f(),
        }
    }
}

struct Inner {
    queue: VecDeque<Item>,
    frames: usize,
    /// The producer has finished (its thread is ending).
    closed: bool,
    /// The consumer asked the producer to stop.
    stopping: bool,
    dropped: u64,
}

pub(crate) struct Mailbox {
    policy: Policy,
    inner: Mutex<Inner>,
    /// Signalled when an item arrives or the producer closes.
    readable: Condvar,
    /// Signalled when a frame is taken or a stop is requested.
    writable: Condvar,
}

impl Mailbox {
    pub(crate) fn new(policy: Policy) -> Self {
        Mailbox {
            policy,
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                frames: 0,
                closed: false,
                stopping: false,
                dropped: 0,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue inconsistent: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands an event to the consumer. Returns `false` when the consumer asked to stop: the
    /// producer should then end.
    pub(crate) fn send(&self, event: SourceEvent) -> bool {
        self.send_item(Item::Event(event))
    }

    pub(crate) fn send_item(&self, item: Item) -> bool {
        let mut inner = self.lock();
        if item.is_frame() {
            match self.policy {
                Policy::Backpressure(cap) => {
                    while inner.frames >= cap.max(1) && !inner.stopping {
                        inner = self.writable.wait(inner).unwrap_or_else(|e| e.into_inner());
                    }
                }
                Policy::Latest => {
                    if let Some(i) = inner.queue.iter().position(Item::is_frame) {
                        inner.queue.remove(i);
                        inner.frames -= 1;
                        inner.dropped += 1;
                    }
                }
            }
        }
        if inner.stopping {
            return false;
        }
        if item.is_frame() {
            inner.frames += 1;
        }
        inner.queue.push_back(item);
        self.readable.notify_all();
        true
    }

    /// The producer has ended: once the queue is empty the consumer gets `Disconnected`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_all();
    }

    /// Asks the producer to stop and wakes it if it waits.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.writable.notify_all();
    }

    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    pub(crate) fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Sleeps for `d` unless a stop is requested first. Returns `false` when stopping.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut inner = self.lock();
        while !inner.stopping {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            inner = self
                .writable
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        false
    }

    /// Waits until the producer has closed, at most `d`. Returns whether it has.
    pub(crate) fn wait_closed(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut inner = self.lock();
        while !inner.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            inner = self
                .readable
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    pub(crate) fn recv_timeout(&self, t: Duration) -> Result<Item, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(t);
        let mut inner = self.lock();
        loop {
            if let Some(item) = inner.queue.pop_front() {
                if item.is_frame() {
                    inner.frames -= 1;
                    self.writable.notify_all();
                }
                return Ok(item);
            }
            if inner.closed {
                return Err(RecvTimeoutError::Disconnected);
            }
            let now = Instant::now();
            inner = match deadline {
                Some(d) if now >= d => return Err(RecvTimeoutError::Timeout),
                Some(d) => {
                    self.readable
                        .wait_timeout(inner, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.readable.wait(inner).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(n: usize) -> SourceEvent {
        SourceEvent::Skipped {
            origin: n.to_string(),
            reason: String::new(),
        }
    }

    fn frame(seq: u64) -> SourceEvent {
        SourceEvent::Frame(super::super::Frame {
            seq,
            origin: String::new(),
            received: std::time::SystemTime::now(),
            data: super::super::FrameData::Encoded(vec![]),
            catch_up: false,
        })
    }

    fn seq(item: Item) -> Option<u64> {
        match item.into_event() {
            SourceEvent::Frame(f) => Some(f.seq),
            _ => None,
        }
    }

    #[test]
    fn latest_keeps_the_newest_frame_and_every_event() {
        let m = Mailbox::new(Policy::Latest);
        assert!(m.send(frame(1)));
        assert!(m.send(skipped(1)));
        assert!(m.send(frame(2)));
        assert!(m.send(frame(3)));
        let t = Duration::from_millis(1);
        assert_eq!(seq(m.recv_timeout(t).unwrap()), None);
        assert_eq!(seq(m.recv_timeout(t).unwrap()), Some(3));
        assert!(matches!(m.recv_timeout(t), Err(RecvTimeoutError::Timeout)));
        assert_eq!(m.dropped(), 2);
        m.close();
        assert!(matches!(
            m.recv_timeout(t),
            Err(RecvTimeoutError::Disconnected)
        ));
    }

    #[test]
    fn backpressure_blocks_until_a_frame_is_taken_and_stop_releases_it() {
        let m = std::sync::Arc::new(Mailbox::new(Policy::Backpressure(1)));
        assert!(m.send(frame(1)));
        let producer = {
            let m = m.clone();
            std::thread::spawn(move || (m.send(frame(2)), m.send(frame(3))))
        };
        // The producer waits with frame 2 until frame 1 is taken, then waits with frame 3 (frame 2
        // occupies the only place) until the stop.
        assert_eq!(
            seq(m.recv_timeout(Duration::from_secs(5)).unwrap()),
            Some(1)
        );
        while m.lock().queue.is_empty() {
            std::thread::yield_now();
        }
        m.stop();
        assert_eq!(
            seq(m.recv_timeout(Duration::from_secs(5)).unwrap()),
            Some(2)
        );
        let (second, third) = producer.join().unwrap();
        assert!(second);
        assert!(!third);
        assert_eq!(m.dropped(), 0);
    }
}
