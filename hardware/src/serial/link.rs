//! The serial line that survives a clinic: a [`SerialLink`] owns opening the port, and after a
//! read or write error (a pulled USB-serial adapter, a host that went away) closes it and
//! reopens it with exponential backoff. While it is closed, outgoing lines are dropped and
//! counted (never queued), so the device keeps classifying; a write that times out drops that
//! one line and keeps the port.
//!
//! Every decision takes the current time (`now_ms`, any monotonic clock in milliseconds) as an
//! argument, so nothing here sleeps and tests need no clock.

use std::io::{self, Read, Write};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::line::{SerialConfig, SerialError, SerialLine};
use super::protocol::{Command, Event, LineFormat};

/// The first wait before reopening a closed port, in ms; it doubles after each failed attempt,
/// up to [`SerialConfig::retry_max_ms`].
pub const RETRY_START_MS: u64 = 500;

/// Opens the port of a [`SerialLink`], once per call: [`PortOpener`] for a real port, a fake
/// in tests.
pub trait Opener {
    /// The open port. Give it a short read and write timeout.
    type Port: Read + Write;
    /// What is opened, for logs (e.g. the device path).
    fn name(&self) -> &str;
    /// Opens the port once (the link does the retrying).
    fn open(&mut self) -> Result<Self::Port, SerialError>;
}

/// Opens the port a [`SerialConfig`] names: 8N1, no flow control, `timeout_ms` for reads and
/// writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOpener {
    config: SerialConfig,
}

impl PortOpener {
    /// An opener for `config`'s port.
    pub fn new(config: SerialConfig) -> Self {
        PortOpener { config }
    }
}

impl Opener for PortOpener {
    type Port = Box<dyn serialport::SerialPort>;

    fn name(&self) -> &str {
        &self.config.path
    }

    fn open(&mut self) -> Result<Self::Port, SerialError> {
        Ok(serialport::new(&self.config.path, self.config.baud)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .open()?)
    }
}

/// A serial line that is reopened with backoff after it fails.
///
/// It starts closed with an attempt due at once; [`poll`](Self::poll) and
/// [`send`](Self::send) reopen it when an attempt is due, so the device loop only ever calls
/// those two (with the time). No call waits longer than the port's timeout.
pub struct SerialLink<O: Opener> {
    opener: O,
    format: LineFormat,
    line: Option<SerialLine<O::Port>>,
    retry_max_ms: u64,
    /// Wait before the next attempt after the current one fails.
    delay_ms: u64,
    /// When the next attempt is due (while closed).
    next_attempt_ms: u64,
    /// Lines dropped during the current outage, and whether that was logged.
    outage_dropped: u64,
    dropped_total: u64,
}

impl<O: Opener> SerialLink<O> {
    /// A closed link whose first attempt to open is due at once. `retry_max_ms` caps the wait
    /// between attempts.
    pub fn new(opener: O, format: LineFormat, retry_max_ms: u64) -> Self {
        SerialLink {
            opener,
            format,
            line: None,
            retry_max_ms: retry_max_ms.max(RETRY_START_MS),
            delay_ms: RETRY_START_MS,
            next_attempt_ms: 0,
            outage_dropped: 0,
            dropped_total: 0,
        }
    }

    /// Tries to open the port now (whatever the backoff says). On failure the link stays
    /// closed and the next attempt is due after the backoff.
    pub fn connect(&mut self, now_ms: u64) -> Result<(), SerialError> {
        if self.line.is_some() {
            return Ok(());
        }
        match self.opener.open() {
            Ok(port) => {
                if self.outage_dropped > 0 {
                    info!(
                        "serial line {} reopened; {} lines were dropped while it was closed",
                        self.opener.name(),
                        self.outage_dropped
                    );
                } else {
                    info!("serial line {} open", self.opener.name());
                }
                self.line = Some(SerialLine::new(port, self.format));
                self.delay_ms = RETRY_START_MS;
                self.outage_dropped = 0;
                Ok(())
            }
            Err(e) => {
                self.next_attempt_ms = now_ms.saturating_add(self.delay_ms);
                debug!(
                    "serial line {}: {e}; next attempt in {} ms",
                    self.opener.name(),
                    self.delay_ms
                );
                self.delay_ms = self.delay_ms.saturating_mul(2).min(self.retry_max_ms);
                Err(e)
            }
        }
    }

    /// Whether the port is open.
    pub fn is_open(&self) -> bool {
        self.line.is_some()
    }

    /// When the next attempt to open is due (`None` while open).
    pub fn next_attempt_ms(&self) -> Option<u64> {
        self.line.is_none().then_some(self.next_attempt_ms)
    }

    /// Lines dropped since the link was made: while closed, or because a write timed out.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_total
    }

    /// The event format.
    pub fn format(&self) -> LineFormat {
        self.format
    }

    /// Switches the event format.
    pub fn set_format(&mut self, format: LineFormat) {
        self.format = format;
        if let Some(line) = &mut self.line {
            line.set_format(format);
        }
    }

    /// The next command (see [`SerialLine::poll`]), reopening the port first when it is closed
    /// and an attempt is due. A read error closes the port; nothing is returned then.
    pub fn poll(&mut self, now_ms: u64) -> Option<Command> {
        let line = self.open_line(now_ms)?;
        match line.poll() {
            Ok(command) => command,
            Err(e) if is_timeout(&e) => {
                self.dropped("an ERR reply", &e);
                None
            }
            Err(e) => {
                self.close(now_ms, &e);
                None
            }
        }
    }

    /// Sends one event; returns whether it was written. While the port is closed the line is
    /// dropped (counted, logged once per outage); a write that times out drops the line and
    /// keeps the port; any other error closes the port.
    pub fn send(&mut self, event: &Event, now_ms: u64) -> bool {
        self.write(now_ms, |line| line.send(event))
    }

    /// Answers `LAST n` with `events` (see [`SerialLine::send_last`]); when the port is closed
    /// the answer is dropped like any line.
    pub fn send_last(&mut self, events: &[Event], now_ms: u64) -> bool {
        self.write(now_ms, |line| line.send_last(events).map(|_| ()))
    }

    fn write(
        &mut self,
        now_ms: u64,
        write: impl FnOnce(&mut SerialLine<O::Port>) -> Result<(), SerialError>,
    ) -> bool {
        let Some(line) = self.open_line(now_ms) else {
            self.dropped_total += 1;
            self.outage_dropped += 1;
            if self.outage_dropped == 1 {
                warn!(
                    "serial line {} is closed: outgoing lines are dropped until it reopens",
                    self.opener.name()
                );
            }
            return false;
        };
        match write(line) {
            Ok(()) => true,
            Err(e) if is_timeout(&e) => {
                self.dropped("a line", &e);
                false
            }
            Err(e) => {
                self.close(now_ms, &e);
                self.dropped_total += 1;
                self.outage_dropped += 1;
                false
            }
        }
    }

    /// The open line, opening it first when closed and an attempt is due.
    fn open_line(&mut self, now_ms: u64) -> Option<&mut SerialLine<O::Port>> {
        if self.line.is_none() && now_ms >= self.next_attempt_ms {
            // A failure is logged at debug level by `connect`; the outage was logged when the
            // port closed.
            let _ = self.connect(now_ms);
        }
        self.line.as_mut()
    }

    fn dropped(&mut self, what: &str, e: &SerialError) {
        self.dropped_total += 1;
        warn!(
            "serial line {}: {what} was dropped ({e}); the port stays open",
            self.opener.name()
        );
    }

    fn close(&mut self, now_ms: u64, e: &SerialError) {
        self.line = None;
        self.delay_ms = RETRY_START_MS;
        self.next_attempt_ms = now_ms.saturating_add(self.delay_ms);
        self.delay_ms = self.delay_ms.saturating_mul(2).min(self.retry_max_ms);
        warn!(
            "serial line {} failed ({e}): closed, reopening with backoff (0.5 s doubling up to {} ms); classifying goes on",
            self.opener.name(),
            self.retry_max_ms
        );
    }
}

/// A read or write that timed out: the port is fine, nobody is reading (or writing).
fn is_timeout(e: &SerialError) -> bool {
    matches!(e, SerialError::Io(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// What a fake port does next when read or written.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Next {
        Fine,
        TimedOut,
        Broken,
    }

    /// The far end of the fake ports: what they received, and scripted failures.
    #[derive(Default)]
    struct Wire {
        output: String,
        input: VecDeque<Vec<u8>>,
        writes: VecDeque<Next>,
        reads: VecDeque<Next>,
    }

    struct FakePort(Rc<RefCell<Wire>>);

    impl Read for FakePort {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut wire = self.0.borrow_mut();
            match wire.reads.pop_front().unwrap_or(Next::Fine) {
                Next::Broken => return Err(io::Error::other("EIO")),
                Next::TimedOut => return Err(io::ErrorKind::TimedOut.into()),
                Next::Fine => {}
            }
            let Some(chunk) = wire.input.pop_front() else {
                return Err(io::ErrorKind::TimedOut.into());
            };
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    impl Write for FakePort {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut wire = self.0.borrow_mut();
            match wire.writes.pop_front().unwrap_or(Next::Fine) {
                Next::Broken => Err(io::Error::other("the device vanished")),
                Next::TimedOut => Err(io::ErrorKind::TimedOut.into()),
                Next::Fine => {
                    wire.output.push_str(std::str::from_utf8(buf).unwrap());
                    Ok(buf.len())
                }
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Opens fake ports on one wire; fails while `failures` is above zero. Records when it was
    /// asked (through the link's `now_ms`, so the times are the link's decisions).
    struct FakeOpener {
        wire: Rc<RefCell<Wire>>,
        failures: usize,
        attempts: Rc<RefCell<usize>>,
    }

    impl Opener for FakeOpener {
        type Port = FakePort;
        fn name(&self) -> &str {
            "fake"
        }
        fn open(&mut self) -> Result<FakePort, SerialError> {
            *self.attempts.borrow_mut() += 1;
            if self.failures > 0 {
                self.failures -= 1;
                return Err(io::Error::from(io::ErrorKind::NotFound).into());
            }
            Ok(FakePort(self.wire.clone()))
        }
    }

    struct Rig {
        link: SerialLink<FakeOpener>,
        wire: Rc<RefCell<Wire>>,
        attempts: Rc<RefCell<usize>>,
    }

    fn rig(failures: usize, retry_max_ms: u64) -> Rig {
        let wire = Rc::new(RefCell::new(Wire::default()));
        let attempts = Rc::new(RefCell::new(0));
        let opener = FakeOpener {
            wire: wire.clone(),
            failures,
            attempts: attempts.clone(),
        };
        Rig {
            link: SerialLink::new(opener, LineFormat::Text, retry_max_ms),
            wire,
            attempts,
        }
    }

    impl Rig {
        fn output(&self) -> String {
            std::mem::take(&mut self.wire.borrow_mut().output)
        }
        fn attempts(&self) -> usize {
            *self.attempts.borrow()
        }
    }

    /// Times (ms) at which `send` made the opener try, sending every `step` ms up to `until`.
    fn attempt_times(r: &mut Rig, from: u64, until: u64, step: u64) -> Vec<u64> {
        let mut times = Vec::new();
        let mut t = from;
        while t <= until {
            let before = r.attempts();
            r.link.send(&Event::Pong, t);
            if r.attempts() > before {
                times.push(t);
            }
            t += step;
        }
        times
    }

    #[test]
    fn an_error_closes_the_port_and_it_is_reopened_at_growing_intervals_up_to_the_cap() {
        let mut r = rig(0, 4_000);
        assert!(r.link.send(&Event::Pong, 0));
        assert_eq!(r.output(), "PONG\r\n");
        // The device vanishes: the write fails, the port closes.
        r.wire.borrow_mut().writes.push_back(Next::Broken);
        assert!(!r.link.send(&Event::Pong, 1_000));
        assert!(!r.link.is_open());
        assert_eq!(r.link.next_attempt_ms(), Some(1_500));
        // The device is gone for five attempts.
        r.link.opener.failures = 5;
        let times = attempt_times(&mut r, 1_000, 16_000, 100);
        // 0.5 s, 1 s, 2 s, 4 s (the cap), 4 s: the sixth attempt opens it.
        assert_eq!(times, vec![1_500, 2_500, 4_500, 8_500, 12_500]);
        assert!(!r.link.is_open());
        assert_eq!(r.output(), "", "nothing is written while closed");
        assert!(r.link.send(&Event::Pong, 16_500));
        assert!(r.link.is_open());
        assert_eq!(r.link.next_attempt_ms(), None);
        assert_eq!(r.output(), "PONG\r\n", "lines flow again");
        // Lines sent while closed were dropped, not queued.
        assert_eq!(r.link.dropped_lines(), 1 + 151);
        // The next outage starts again at 0.5 s.
        r.wire.borrow_mut().writes.push_back(Next::Broken);
        r.link.send(&Event::Pong, 20_000);
        assert_eq!(r.link.next_attempt_ms(), Some(20_500));
    }

    #[test]
    fn a_read_error_closes_the_port_and_commands_flow_after_the_reopen() {
        let mut r = rig(0, 30_000);
        r.wire.borrow_mut().input.push_back(b"PING\n".to_vec());
        assert_eq!(r.link.poll(0), Some(Command::Ping));
        r.wire.borrow_mut().reads.push_back(Next::Broken);
        assert_eq!(r.link.poll(100), None);
        assert!(!r.link.is_open());
        r.wire.borrow_mut().input.push_back(b"STOP\n".to_vec());
        // Not due yet: no attempt, nothing read.
        assert_eq!(r.link.poll(599), None);
        assert_eq!(r.attempts(), 1);
        assert_eq!(r.link.poll(600), Some(Command::Stop));
        assert_eq!(r.attempts(), 2);
    }

    #[test]
    fn a_write_timeout_drops_that_line_and_keeps_the_port() {
        let mut r = rig(0, 30_000);
        r.wire.borrow_mut().writes.push_back(Next::TimedOut);
        assert!(!r.link.send(&Event::Help, 0));
        assert!(r.link.is_open());
        assert!(r.link.send(&Event::Pong, 1));
        assert_eq!(r.output(), "PONG\r\n");
        assert_eq!(r.link.dropped_lines(), 1);
        assert_eq!(r.attempts(), 1, "the port was not reopened");
    }

    #[test]
    fn an_opener_failing_n_times_then_succeeding() {
        let mut r = rig(3, 30_000);
        assert!(r.link.connect(0).is_err());
        assert_eq!(r.link.next_attempt_ms(), Some(500));
        // Calls before the attempt is due neither open nor block.
        assert!(!r.link.send(&Event::Pong, 499));
        assert_eq!(r.attempts(), 1);
        assert!(!r.link.send(&Event::Pong, 500));
        assert_eq!(r.link.next_attempt_ms(), Some(1_500));
        assert_eq!(r.link.poll(1_500), None);
        assert_eq!(r.link.next_attempt_ms(), Some(3_500));
        assert!(r.link.send(&Event::Pong, 3_500));
        assert_eq!(r.attempts(), 4);
        assert_eq!(r.output(), "PONG\r\n");
        assert_eq!(r.link.dropped_lines(), 2);
    }

    #[test]
    fn last_answers_go_out_in_the_line_format_or_are_dropped_when_closed() {
        let mut r = rig(0, 30_000);
        r.link.set_format(LineFormat::Json);
        assert_eq!(r.link.format(), LineFormat::Json);
        assert!(r.link.send_last(&[Event::Pong], 0));
        assert!(r.link.send_last(&[], 0));
        assert_eq!(
            r.output(),
            "{\"event\":\"PONG\"}\r\n{\"event\":\"OK\",\"command\":\"LAST\",\"detail\":\"1\"}\r\n\
             {\"event\":\"OK\",\"command\":\"LAST\",\"detail\":\"0\"}\r\n"
        );
    }

    #[test]
    fn opening_a_missing_port_is_an_error_not_a_panic() {
        let mut config = SerialConfig::new("/dev/leukoscope-no-such-tty");
        config.timeout_ms = 10;
        let mut opener = PortOpener::new(config);
        assert_eq!(opener.name(), "/dev/leukoscope-no-such-tty");
        assert!(matches!(opener.open(), Err(SerialError::Open(_))));
    }
}
