//! Bytes to lines, and the serial line itself.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use serde::Deserialize;

use super::protocol::{Command, CommandError, Event, LineFormat, MAX_LINE, parse_command};

/// What [`LineAssembler::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its line end (possibly empty), at most the assembler's limit.
    Complete(Vec<u8>),
    /// A line over the limit ended; its bytes were thrown away.
    TooLong,
}

/// Cuts a byte stream into lines. CR, LF and CR LF all end a line (an LF right after a CR,
/// even in the next chunk, is part of the same line end). Backspace (0x08) and DEL (0x7f)
/// remove the previous byte, as a terminal user expects. A line that grows past the limit is
/// discarded up to the next line end and reported once as [`Line::TooLong`], so memory stays
/// bounded whatever arrives.
#[derive(Debug, Clone)]
pub struct LineAssembler {
    buf: Vec<u8>,
    max: usize,
    overflowed: bool,
    after_cr: bool,
}

impl Default for LineAssembler {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineAssembler {
    /// An assembler for lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        LineAssembler {
            buf: Vec::with_capacity(max),
            max,
            overflowed: false,
            after_cr: false,
        }
    }

    /// Feeds a chunk of bytes and returns the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        for &b in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    if std::mem::take(&mut self.overflowed) {
                        lines.push(Line::TooLong);
                    } else {
                        lines.push(Line::Complete(std::mem::take(&mut self.buf)));
                    }
                    self.buf.clear();
                }
                0x08 | 0x7f => {
                    if !self.overflowed {
                        self.buf.pop();
                    }
                }
                _ if self.overflowed => {}
                _ if self.buf.len() == self.max => {
                    self.overflowed = true;
                    self.buf.clear();
                }
                _ => self.buf.push(b),
            }
        }
        lines
    }
}

/// Serial line settings (from the device's config file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or `/dev/ttyGS0` (USB gadget).
    pub path: String,
    /// Baud rate (default 115200).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LineFormat,
    /// How long one [`SerialLine::poll`] waits for input, and one line's write may take
    /// before that line is dropped, in ms (default 20).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// After an error or a replug the port is closed and reopened with exponential backoff:
    /// 0.5 s, then doubling up to this many ms between attempts (default 30000).
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

impl SerialConfig {
    /// The settings for `path` with every other setting at its default.
    pub fn new(path: impl Into<String>) -> Self {
        SerialConfig {
            path: path.into(),
            baud: default_baud(),
            format: LineFormat::default(),
            timeout_ms: default_timeout_ms(),
            retry_max_ms: default_retry_max_ms(),
        }
    }
}

fn default_retry_max_ms() -> u64 {
    30_000
}

fn default_baud() -> u32 {
    115_200
}

fn default_timeout_ms() -> u64 {
    20
}

/// The serial line failed.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// Opening or configuring the port failed.
    #[error("serial port: {0}")]
    Open(#[from] serialport::Error),
    /// Reading or writing failed (a write that times out because nobody reads is one).
    #[error("serial I/O: {0}")]
    Io(#[from] io::Error),
}

/// The technician's serial line: reads commands, writes events.
///
/// Reads are as short as the port's timeout: [`poll`](Self::poll) reads at most once and
/// returns at most one command. Refused input is answered with `ERR` right here; valid commands
/// are returned for the device program to act on (`LAST n` with [`send_last`](Self::send_last)
/// from the device's own record). This is one open port: [`SerialLink`](super::SerialLink)
/// opens it, and reopens it after an error.
pub struct SerialLine<P> {
    port: P,
    format: LineFormat,
    lines: LineAssembler,
    // Lines from the last read not yet handed out (at most one read's worth).
    pending: VecDeque<Line>,
}

impl<P: Read + Write> SerialLine<P> {
    /// Wraps an open port (or any reader/writer). Give it a short read timeout: `poll` waits
    /// for at most that long. Lines are written without a flush (a serial port's flush waits,
    /// with no timeout, until the bytes left the wire): give it an unbuffered writer.
    pub fn new(port: P, format: LineFormat) -> Self {
        SerialLine {
            port,
            format,
            lines: LineAssembler::new(MAX_LINE),
            pending: VecDeque::new(),
        }
    }

    /// The event format.
    pub fn format(&self) -> LineFormat {
        self.format
    }

    /// Switches the event format.
    pub fn set_format(&mut self, format: LineFormat) {
        self.format = format;
    }

    /// Returns the next command, reading the port (once, up to its timeout) only when no
    /// complete line is waiting. Blank lines are skipped and refused lines answered with `ERR`
    /// on the way, so replies leave in the order the lines came in, provided the caller answers
    /// each command before polling again.
    pub fn poll(&mut self) -> Result<Option<Command>, SerialError> {
        if self.pending.is_empty() {
            let mut buf = [0u8; 256];
            let n = match self.port.read(&mut buf) {
                // A port that reads end-of-file has hung up (a pulled USB-serial adapter).
                Ok(0) => {
                    return Err(
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the port hung up").into(),
                    );
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    0
                }
                Err(e) => return Err(e.into()),
            };
            self.pending.extend(self.lines.push(&buf[..n]));
        }
        while let Some(line) = self.pending.pop_front() {
            let parsed = match line {
                Line::Complete(bytes) => parse_command(&bytes),
                Line::TooLong => Err(CommandError::TooLong),
            };
            match parsed {
                Ok(command) => return Ok(Some(command)),
                Err(CommandError::Empty) => {}
                Err(e) => self.write_line(&Event::Err(e))?,
            }
        }
        Ok(None)
    }

    /// Sends one event.
    pub fn send(&mut self, event: &Event) -> Result<(), SerialError> {
        self.write_line(event)
    }

    /// Answers `LAST n` with `events`, the device's last `n` `RESULT`/`RETAKE` events oldest
    /// first (from its database): sends them, then `OK command=LAST detail=<count>`. Returns
    /// how many were sent.
    pub fn send_last(&mut self, events: &[Event]) -> Result<usize, SerialError> {
        for event in events {
            self.write_line(event)?;
        }
        self.write_line(&last_ok(events.len()))?;
        Ok(events.len())
    }

    fn write_line(&mut self, event: &Event) -> Result<(), SerialError> {
        let mut line = event.to_line(self.format);
        line.push_str("\r\n");
        self.port.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Gives the port back.
    pub fn into_inner(self) -> P {
        self.port
    }
}

/// The `OK` that ends a `LAST` answer of `count` events.
fn last_ok(count: usize) -> Event {
    Event::Ok {
        command: "LAST",
        detail: Some(count.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::protocol::{Decision, SlideId, Timestamp};
    use crate::status::RetakeReason;

    fn complete(s: &str) -> Line {
        Line::Complete(s.as_bytes().to_vec())
    }

    #[test]
    fn all_line_ends_work_even_split_across_chunks() {
        let mut a = LineAssembler::new(16);
        assert_eq!(
            a.push(b"PING\rSTATUS\nSTOP\r\nHELP\r"),
            vec![
                complete("PING"),
                complete("STATUS"),
                complete("STOP"),
                complete("HELP")
            ]
        );
        assert_eq!(a.push(b"\nLA"), vec![]);
        assert_eq!(a.push(b"ST 3\n\n"), vec![complete("LAST 3"), complete("")]);
        assert_eq!(a.push(b"\r\r\n"), vec![complete(""), complete("")]);
    }

    #[test]
    fn backspace_edits_the_line() {
        let mut a = LineAssembler::new(16);
        assert_eq!(a.push(b"PINX\x08G\r"), vec![complete("PING")]);
        assert_eq!(a.push(b"\x7f\x7fOK\n"), vec![complete("OK")]);
    }

    #[test]
    fn overlong_lines_are_dropped_up_to_the_next_line_end() {
        let mut a = LineAssembler::new(4);
        assert_eq!(a.push(b"1234\n"), vec![complete("1234")]);
        assert_eq!(a.push(b"12345"), vec![]);
        assert_eq!(a.push(b"6789\x08\x08"), vec![]);
        assert_eq!(a.push(b"\r\nPING\n"), vec![Line::TooLong, complete("PING")]);
    }

    /// An in-memory port: reads come from `input` in chunks, writes go to `output`.
    struct FakePort {
        input: VecDeque<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for FakePort {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut chunk) = self.input.pop_front() else {
                return Err(io::ErrorKind::TimedOut.into());
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.input.push_front(chunk.split_off(n));
            }
            Ok(n)
        }
    }

    impl Write for FakePort {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn fake(chunks: &[&[u8]]) -> SerialLine<FakePort> {
        SerialLine::new(
            FakePort {
                input: chunks.iter().map(|c| c.to_vec()).collect(),
                output: Vec::new(),
            },
            LineFormat::Text,
        )
    }

    fn output(line: SerialLine<FakePort>) -> String {
        String::from_utf8(line.into_inner().output).unwrap()
    }

    #[test]
    fn poll_returns_commands_in_order_and_answers_bad_input_between_them() {
        let mut line = fake(&[b"pi", b"ng\r\n\r\nbogus\nSTART S-1\n"]);
        assert_eq!(line.poll().unwrap(), None);
        assert_eq!(line.poll().unwrap(), Some(Command::Ping));
        line.send(&Event::Pong).unwrap();
        assert_eq!(
            line.poll().unwrap(),
            Some(Command::Start(Some(SlideId::new("S-1").unwrap())))
        );
        // Timed out: nothing.
        assert_eq!(line.poll().unwrap(), None);
        assert_eq!(
            output(line),
            "PONG\r\nERR code=unknown_command message=\"unknown command \\\"bogus\\\", try HELP\"\r\n"
        );
    }

    #[test]
    fn a_flood_without_line_ends_gets_one_err() {
        let flood = vec![b'x'; 10_000];
        let mut line = fake(&[&flood, b"\nPING\n"]);
        while line.poll().unwrap().is_none() && !line.port.input.is_empty() {}
        assert_eq!(
            output(line),
            "ERR code=too_long message=\"line longer than 256 bytes, discarded\"\r\n"
        );
    }

    #[test]
    fn last_sends_the_given_events_then_ok() {
        let mut line = fake(&[]);
        let retake = |frame| Event::Retake {
            frame,
            reason: RetakeReason::Empty,
            time: Timestamp(0),
            tile: None,
        };
        assert_eq!(line.send_last(&[retake(148), retake(149)]).unwrap(), 2);
        assert_eq!(
            output(line),
            "RETAKE frame=148 reason=empty time=1970-01-01T00:00:00.000Z\r\n\
             RETAKE frame=149 reason=empty time=1970-01-01T00:00:00.000Z\r\n\
             OK command=LAST detail=2\r\n"
        );
        let mut line = fake(&[]);
        line.set_format(LineFormat::Json);
        assert_eq!(line.format(), LineFormat::Json);
        let result = Event::Result {
            frame: 1,
            slide: None,
            label: "blast".into(),
            confidence: 0.5,
            decision: Decision::Uncertain,
            time: Timestamp(0),
            unfamiliar: false,
            tile: None,
        };
        assert_eq!(line.send_last(&[result]).unwrap(), 1);
        assert!(
            output(line).ends_with("{\"event\":\"OK\",\"command\":\"LAST\",\"detail\":\"1\"}\r\n")
        );
    }

    #[test]
    fn a_port_that_reads_end_of_file_has_hung_up() {
        let mut line = fake(&[b""]);
        assert!(matches!(
            line.poll(),
            Err(SerialError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
    }

    #[test]
    fn serial_config_defaults() {
        let c: SerialConfig = serde_json::from_str(r#"{"path": "/dev/ttyGS0"}"#).unwrap();
        assert_eq!(c.baud, 115_200);
        assert_eq!(c.format, LineFormat::Text);
        assert_eq!(c.timeout_ms, 20);
        assert_eq!(c.retry_max_ms, 30_000);
        assert_eq!(c, SerialConfig::new("/dev/ttyGS0"));
        assert!(
            serde_json::from_str::<SerialConfig>(r#"{"path": "x", "baud_rate": 9600}"#).is_err()
        );
    }
}
