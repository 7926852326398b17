//! The technician's serial protocol: events the device sends, commands it accepts.
//!
//! # Device → technician
//!
//! One event per line, lines end with CR LF. Two formats carry the same fields:
//!
//! * **text** (default): `EVENT key=value key=value …`, e.g.
//!   `RESULT frame=37 slide=S-0012 label=lymphocyte confidence=0.974 decision=normal time=2025-01-02T03:04:05.678Z`
//! * **json**: one JSON object per line, `event` first, then the same keys in the same order:
//!   `{"event":"RESULT","frame":37,"slide":"S-0012",…}`. Numbers and booleans are JSON numbers
//!   and booleans; an absent value is `null`.
//!
//! Text values: a value made only of printable ASCII other than space, `"`, `\` and `=` is
//! written bare. Anything else (empty, spaces, quotes, non-ASCII, …) is written in double
//! quotes, with `\"`, `\\`, `\n`, `\r`, `\t` and `\u{HEX}` (any other character outside
//! printable ASCII) escapes, so a text line is always printable ASCII. A bare `-` means absent
//! (a string that is just `-` is written `"-"`). Booleans are `true`/`false`; times are UTC,
//! RFC 3339 with milliseconds.
//!
//! | event | fields | meaning |
//! | --- | --- | --- |
//! | `RESULT` | `frame slide label confidence decision time` | a frame was classified; `confidence` 0..1 with 3 decimals; `decision` is `normal`, `blast` or `uncertain` |
//! | `RETAKE` | `frame reason time` | a frame was rejected; `reason` is `focus`, `exposure` or `empty` |
//! | `SLIDE` | `slide verdict frames good retakes count_<class>… blast_fraction note` | slide summary; `verdict` is `no_blasts`, `uncertain`, `refer` or `insufficient`; one `count_<class>` per class (class lower-cased, other characters `_`); `blast_fraction` 0..1 with 4 decimals; `note` is always `"screening aid"` |
//! | `STATUS` | `state slide frames model uptime` | `state` is `starting`, `idle`, `screening` or `fault`; `uptime` in seconds |
//! | `ERROR` | `code message` | `code` is `camera_lost`, `disk_full`, `model_refused` or `internal` |
//! | `SELFTEST` | `check ok detail` | one self-test result; `ok` is `true` or `false` |
//! | `OK` | `command detail` | a command was done (`detail` may be `-`) |
//! | `ERR` | `code message` | input was refused; `code` is one of [`CommandError::code`] |
//! | `PONG` | | answer to `PING` |
//! | `HELP` | `commands` | the command list |
//! | `VERSION` | `name version` | the device program |
//! | `MODEL` | `name digest classes` | the loaded model; `classes` comma-separated |
//!
//! # Technician → device
//!
//! One command per line (CR, LF or CR LF), case-insensitive, at most [`MAX_LINE`] bytes;
//! words are separated by spaces or tabs:
//!
//! | command | answer |
//! | --- | --- |
//! | `HELP` | `HELP` |
//! | `PING` | `PONG` |
//! | `STATUS` | `STATUS` |
//! | `START [slide-id]` | `OK` (slide id: 1–32 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit) |
//! | `STOP` | `OK` (and the `SLIDE` summary) |
//! | `LAST [n]` | the last `n` (default 1, at most [`MAX_LAST`]) `RESULT`/`RETAKE` lines, then `OK` |
//! | `MODEL` | `MODEL` |
//! | `VERSION` | `VERSION` |
//!
//! Anything else gets an `ERR` line. Input is only ever matched against this table: nothing
//! typed reaches a shell or a file path other than as a validated slide id.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::status::{Fault, Phase, RetakeReason, Verdict};

/// Longest accepted command line, in bytes (without the line end).
pub const MAX_LINE: usize = 256;

/// Longest slide id.
pub const MAX_SLIDE_ID: usize = 32;

/// Largest `n` in `LAST n`.
pub const MAX_LAST: u16 = 100;

/// Which way events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `EVENT key=value …`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown serial format {s:?} (text or json)")),
        }
    }
}

/// Milliseconds since the Unix epoch; shown as RFC 3339 UTC, e.g. `2025-01-02T03:04:05.678Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time (the epoch if the clock is before it).
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), in unsigned form.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// What the device made of one classified frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A normal white cell.
    Normal,
    /// A blast.
    Blast,
    /// Below the confidence threshold: not counted.
    Uncertain,
}

impl Decision {
    /// The `decision` value: `normal`, `blast` or `uncertain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Normal => "normal",
            Decision::Blast => "blast",
            Decision::Uncertain => "uncertain",
        }
    }
}

/// The summary of a screened slide (the `SLIDE` event).
#[derive(Debug, Clone, PartialEq)]
pub struct SlideSummary {
    /// Slide id.
    pub slide: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Frames taken.
    pub frames: u32,
    /// Frames that passed the quality gate.
    pub good: u32,
    /// Frames rejected for a retake.
    pub retakes: u32,
    /// Cells counted per class, in class order.
    pub counts: Vec<(String, u32)>,
    /// Blasts / counted cells, 0..=1.
    pub blast_fraction: f64,
}

/// A message from the device to the technician (see the module table for the fields).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A frame was classified.
    Result {
        /// Frame number on this slide.
        frame: u64,
        /// Slide id.
        slide: Option<String>,
        /// Class label.
        label: String,
        /// Confidence of the label, 0..=1.
        confidence: f32,
        /// What the device made of it.
        decision: Decision,
        /// When.
        time: Timestamp,
        /// The tile of the frame, when frames are tiled (the field is sent only then).
        tile: Option<u32>,
    },
    /// A frame was rejected.
    Retake {
        /// Frame number on this slide.
        frame: u64,
        /// Why.
        reason: RetakeReason,
        /// When.
        time: Timestamp,
        /// The tile of the frame, when frames are tiled (the field is sent only then).
        tile: Option<u32>,
    },
    /// A slide summary.
    Slide(SlideSummary),
    /// The device status.
    Status {
        /// What the device is doing.
        state: Phase,
        /// Current slide.
        slide: Option<String>,
        /// Frames on the current slide.
        frames: u32,
        /// Loaded model name.
        model: String,
        /// Seconds since start.
        uptime_s: u64,
    },
    /// A device fault.
    Error {
        /// What kind.
        code: Fault,
        /// Details for a person.
        message: String,
    },
    /// One self-test result.
    SelfTest {
        /// What was checked, e.g. `camera`.
        check: String,
        /// Whether it passed.
        ok: bool,
        /// Details for a person.
        detail: String,
    },
    /// A command was carried out.
    Ok {
        /// The command word, e.g. `START`.
        command: &'static str,
        /// What was done, e.g. the slide id.
        detail: Option<String>,
    },
    /// A command line was refused.
    Err(CommandError),
    /// Answer to `PING`.
    Pong,
    /// The list of commands.
    Help,
    /// Device program name and version.
    Version {
        /// Program name.
        name: String,
        /// Program version.
        version: String,
    },
    /// The loaded model.
    Model {
        /// Model name.
        name: String,
        /// Digest of the model file (e.g. SHA-256 hex).
        digest: String,
        /// Class labels in output order.
        classes: Vec<String>,
    },
}

/// One field value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(u64),
    /// A number written with a fixed number of decimals.
    Fixed(f64, usize),
    Bool(bool),
    Absent,
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<Option<&String>> for Value {
    fn from(s: Option<&String>) -> Self {
        s.map_or(Value::Absent, |s| Value::Str(s.clone()))
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Int(n)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(n.into())
    }
}

/// `count_` + the label lower-cased, with anything but `a-z 0-9 _` replaced by `_`.
fn count_key(label: &str) -> String {
    let mut key = String::from("count_");
    key.extend(label.chars().map(|c| match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9' | '_') => c,
        _ => '_',
    }));
    key
}

/// The text of the `HELP` event's `commands` field.
pub const HELP_TEXT: &str = "HELP PING STATUS START [slide-id] STOP LAST [n] MODEL VERSION";

impl Event {
    /// The event word, e.g. `RESULT`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Result { .. } => "RESULT",
            Event::Retake { .. } => "RETAKE",
            Event::Slide(_) => "SLIDE",
            Event::Status { .. } => "STATUS",
            Event::Error { .. } => "ERROR",
            Event::SelfTest { .. } => "SELFTEST",
            Event::Ok { .. } => "OK",
            Event::Err(_) => "ERR",
            Event::Pong => "PONG",
            Event::Help => "HELP",
            Event::Version { .. } => "VERSION",
            Event::Model { .. } => "MODEL",
        }
    }

    fn fields(&self) -> Vec<(String, Value)> {
        let f = |k: &str, v: Value| (k.to_string(), v);
        match self {
            Event::Result {
                frame,
                slide,
                label,
                confidence,
                decision,
                time,
                tile,
            } => {
                let mut v = vec![
                    f("frame", (*frame).into()),
                    f("slide", slide.as_ref().into()),
                    f("label", label.as_str().into()),
                    f("confidence", Value::Fixed(f64::from(*confidence), 3)),
                    f("decision", decision.as_str().into()),
                    f("time", time.to_string().into()),
                ];
                if let Some(t) = tile {
                    v.push(f("tile", u64::from(*t).into()));
                }
                v
            }
            Event::Retake {
                frame,
                reason,
                time,
                tile,
            } => {
                let mut v = vec![
                    f("frame", (*frame).into()),
                    f("reason", reason.as_str().into()),
                    f("time", time.to_string().into()),
                ];
                if let Some(t) = tile {
                    v.push(f("tile", u64::from(*t).into()));
                }
                v
            }
            Event::Slide(s) => {
                let mut v = vec![
                    f("slide", s.slide.as_str().into()),
                    f("verdict", s.verdict.as_str().into()),
                    f("frames", s.frames.into()),
                    f("good", s.good.into()),
                    f("retakes", s.retakes.into()),
                ];
                v.extend(
                    s.counts
                        .iter()
                        .map(|(label, n)| (count_key(label), (*n).into())),
                );
                v.push(f("blast_fraction", Value::Fixed(s.blast_fraction, 4)));
                v.push(f("note", "screening aid".into()));
                v
            }
            Event::Status {
                state,
                slide,
                frames,
                model,
                uptime_s,
            } => vec![
                f("state", state.as_str().into()),
                f("slide", slide.as_ref().into()),
                f("frames", (*frames).into()),
                f("model", model.as_str().into()),
                f("uptime", (*uptime_s).into()),
            ],
            Event::Error { code, message } => vec![
                f("code", code.code().into()),
                f("message", message.as_str().into()),
            ],
            Event::SelfTest { check, ok, detail } => vec![
                f("check", check.as_str().into()),
                f("ok", Value::Bool(*ok)),
                f("detail", detail.as_str().into()),
            ],
            Event::Ok { command, detail } => vec![
                f("command", (*command).into()),
                f("detail", detail.as_ref().into()),
            ],
            Event::Err(e) => vec![
                f("code", e.code().into()),
                f("message", e.to_string().into()),
            ],
            Event::Pong => vec![],
            Event::Help => vec![f("commands", HELP_TEXT.into())],
            Event::Version { name, version } => vec![
                f("name", name.as_str().into()),
                f("version", version.as_str().into()),
            ],
            Event::Model {
                name,
                digest,
                classes,
            } => vec![
                f("name", name.as_str().into()),
                f("digest", digest.as_str().into()),
                f("classes", classes.join(",").into()),
            ],
        }
    }

    /// The event as one line in `format`, without the line end.
    pub fn to_line(&self, format: Format) -> String {
        let fields = self.fields();
        let mut line = String::new();
        match format {
            Format::Text => {
                line.push_str(self.name());
                for (key, value) in &fields {
                    line.push(' ');
                    line.push_str(key);
                    line.push('=');
                    write_text_value(&mut line, value);
                }
            }
            Format::Json => {
                line.push_str("{\"event\":");
                line.push_str(&json_string(self.name()));
                for (key, value) in &fields {
                    line.push(',');
                    line.push_str(&json_string(key));
                    line.push(':');
                    match value {
                        Value::Str(s) => line.push_str(&json_string(s)),
                        Value::Int(n) => line.push_str(&n.to_string()),
                        Value::Fixed(x, decimals) if x.is_finite() => {
                            let _ = write!(line, "{x:.decimals$}");
                        }
                        Value::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
                        Value::Fixed(..) | Value::Absent => line.push_str("null"),
                    }
                }
                line.push('}');
            }
        }
        line
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn is_bare(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '=')
}

fn write_text_value(out: &mut String, value: &Value) {
    match value {
        Value::Str(s) if s != "-" && !s.is_empty() && s.chars().all(is_bare) => out.push_str(s),
        Value::Str(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    ' '..='~' => out.push(c),
                    _ => {
                        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                    }
                }
            }
            out.push('"');
        }
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Fixed(x, decimals) if x.is_finite() => {
            let _ = write!(out, "{x:.decimals$}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Fixed(..) | Value::Absent => out.push('-'),
    }
}

/// A validated slide id: 1 to [`MAX_SLIDE_ID`] characters of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit (so it is safe as a file name and never looks like an option).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlideId(String);

impl SlideId {
    /// Checks `id`.
    pub fn new(id: &str) -> Result<Self, CommandError> {
        let mut chars = id.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if first_ok && rest_ok && id.len() <= MAX_SLIDE_ID {
            Ok(SlideId(id.to_string()))
        } else {
            Err(CommandError::BadSlideId(shorten(id)))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SlideId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command from the technician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// List the commands.
    Help,
    /// Check the line.
    Ping,
    /// Report the device status.
    Status,
    /// Start screening a slide, with an id or a generated one.
    Start(Option<SlideId>),
    /// Stop screening and summarise.
    Stop,
    /// Repeat the last `n` frame results (1..=[`MAX_LAST`]).
    Last(u16),
    /// Describe the loaded model.
    Model,
    /// Report the program version.
    Version,
}

impl Command {
    /// The command word, e.g. `START` (the `command` field of `OK`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help => "HELP",
            Command::Ping => "PING",
            Command::Status => "STATUS",
            Command::Start(_) => "START",
            Command::Stop => "STOP",
            Command::Last(_) => "LAST",
            Command::Model => "MODEL",
            Command::Version => "VERSION",
        }
    }
}

/// Why a command line was refused. The message quotes at most 32 characters of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Nothing but blanks (the serial line ignores these silently).
    #[error("empty line")]
    Empty,
    /// Longer than [`MAX_LINE`] bytes.
    #[error("line longer than {MAX_LINE} bytes, discarded")]
    TooLong,
    /// Control characters or non-ASCII bytes.
    #[error("only printable ASCII is accepted")]
    BadBytes,
    /// Not a command.
    #[error("unknown command {0:?}, try HELP")]
    Unknown(String),
    /// A command that takes no argument (or START/LAST with more than one) got one.
    #[error("{command} takes {expected}")]
    UnexpectedArgument {
        /// The command word.
        command: &'static str,
        /// What it takes.
        expected: &'static str,
    },
    /// A slide id outside the allowed characters or length.
    #[error(
        "bad slide id {0:?}: 1-{MAX_SLIDE_ID} of A-Z a-z 0-9 . _ - starting with a letter or digit"
    )]
    BadSlideId(String),
    /// A count that is not a number in 1..=MAX_LAST.
    #[error("bad count {0:?}: a number from 1 to {MAX_LAST}")]
    BadCount(String),
}

impl CommandError {
    /// The `code` field of the `ERR` line: `empty`, `too_long`, `bad_bytes`, `unknown_command`,
    /// `unexpected_argument`, `bad_slide_id` or `bad_count`.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Empty => "empty",
            CommandError::TooLong => "too_long",
            CommandError::BadBytes => "bad_bytes",
            CommandError::Unknown(_) => "unknown_command",
            CommandError::UnexpectedArgument { .. } => "unexpected_argument",
            CommandError::BadSlideId(_) => "bad_slide_id",
            CommandError::BadCount(_) => "bad_count",
        }
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Parses one command line (a trailing CR/LF and surrounding blanks are ignored).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = line.trim_ascii();
    if line.len() > MAX_LINE {
        return Err(CommandError::TooLong);
    }
    if !line
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(CommandError::BadBytes);
    }
    // Only printable ASCII and tabs remain, so this cannot fail.
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadBytes)?;
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let Some(word) = words.next() else {
        return Err(CommandError::Empty);
    };
    let arg = words.next();
    let extra = words.next().is_some();
    let bare = |command: Command| match arg {
        None => Ok(command),
        Some(_) => Err(CommandError::UnexpectedArgument {
            command: command.name(),
            expected: "no argument",
        }),
    };
    let command = match word.to_ascii_uppercase().as_str() {
        "HELP" => bare(Command::Help)?,
        "PING" => bare(Command::Ping)?,
        "STATUS" => bare(Command::Status)?,
        "STOP" => bare(Command::Stop)?,
        "MODEL" => bare(Command::Model)?,
        "VERSION" => bare(Command::Version)?,
        "START" => Command::Start(arg.map(SlideId::new).transpose()?),
        "LAST" => Command::Last(match arg {
            None => 1,
            Some(n) => parse_count(n)?,
        }),
        _ => return Err(CommandError::Unknown(shorten(word))),
    };
    if extra {
        return Err(CommandError::UnexpectedArgument {
            command: command.name(),
            expected: match command {
                Command::Start(_) => "at most one slide id",
                _ => "at most one count",
            },
        });
    }
    Ok(command)
}

fn parse_count(s: &str) -> Result<u16, CommandError> {
    let bad = || CommandError::BadCount(shorten(s));
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(n) if (1..=MAX_LAST).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key and value (None for absent) of each field.
    type Fields = Vec<(String, Option<String>)>;

    /// Splits a text event line back into its word and fields (the reading side of the
    /// quoting rules), or None if the line is malformed.
    fn parse_text_line(line: &str) -> Option<(String, Fields)> {
        let mut chars = line.chars().peekable();
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut fields = Vec::new();
        while chars.next() == Some(' ') {
            let mut key = String::new();
            loop {
                match chars.next()? {
                    '=' => break,
                    c => key.push(c),
                }
            }
            let value = if chars.peek() == Some(&'"') {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            'n' => v.push('\n'),
                            'r' => v.push('\r'),
                            't' => v.push('\t'),
                            'u' => {
                                if chars.next()? != '{' {
                                    return None;
                                }
                                let mut hex = String::new();
                                loop {
                                    match chars.next()? {
                                        '}' => break,
                                        c => hex.push(c),
                                    }
                                }
                                v.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                            }
                            c => v.push(c),
                        },
                        c => v.push(c),
                    }
                }
                Some(v)
            } else {
                let mut v = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                (v != "-").then_some(v)
            };
            fields.push((key, value));
        }
        Some((name, fields))
    }

    const T: Timestamp = Timestamp(1_735_787_045_678);

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(T.to_string(), "2025-01-02T03:04:05.678Z");
        assert_eq!(
            Timestamp(4_102_444_799_999).to_string(),
            "2099-12-31T23:59:59.999Z"
        );
        assert!(Timestamp::now() > T);
    }

    fn result() -> Event {
        Event::Result {
            frame: 37,
            slide: Some("S-0012".into()),
            label: "lymphocyte".into(),
            confidence: 0.9744,
            decision: Decision::Normal,
            time: T,
            tile: None,
        }
    }

    fn summary() -> Event {
        Event::Slide(SlideSummary {
            slide: "S-0012".into(),
            verdict: Verdict::Refer,
            frames: 120,
            good: 110,
            retakes: 10,
            counts: vec![("Blast".into(), 12), ("band neutrophil".into(), 98)],
            blast_fraction: 12.0 / 110.0,
        })
    }

    #[test]
    fn text_lines_of_every_event() {
        let cases = [
            (
                result(),
                "RESULT frame=37 slide=S-0012 label=lymphocyte confidence=0.974 decision=normal time=2025-01-02T03:04:05.678Z",
            ),
            (
                Event::Retake {
                    frame: 38,
                    reason: RetakeReason::Focus,
                    time: T,
                    tile: None,
                },
                "RETAKE frame=38 reason=focus time=2025-01-02T03:04:05.678Z",
            ),
            (
                summary(),
                "SLIDE slide=S-0012 verdict=refer frames=120 good=110 retakes=10 count_blast=12 count_band_neutrophil=98 blast_fraction=0.1091 note=\"screening aid\"",
            ),
            (
                Event::Status {
                    state: Phase::Idle,
                    slide: None,
                    frames: 0,
                    model: "leuko-v3".into(),
                    uptime_s: 3600,
                },
                "STATUS state=idle slide=- frames=0 model=leuko-v3 uptime=3600",
            ),
            (
                Event::Error {
                    code: Fault::CameraLost,
                    message: "no frame for 5 s".into(),
                },
                "ERROR code=camera_lost message=\"no frame for 5 s\"",
            ),
            (
                Event::SelfTest {
                    check: "disk".into(),
                    ok: false,
                    detail: "12 MB \"free\"".into(),
                },
                "SELFTEST check=disk ok=false detail=\"12 MB \\\"free\\\"\"",
            ),
            (
                Event::Ok {
                    command: "STOP",
                    detail: None,
                },
                "OK command=STOP detail=-",
            ),
            (
                Event::Err(CommandError::Unknown("FOO".into())),
                "ERR code=unknown_command message=\"unknown command \\\"FOO\\\", try HELP\"",
            ),
            (Event::Pong, "PONG"),
            (
                Event::Help,
                "HELP commands=\"HELP PING STATUS START [slide-id] STOP LAST [n] MODEL VERSION\"",
            ),
            (
                Event::Version {
                    name: "leukoscope".into(),
                    version: "0.1.0".into(),
                },
                "VERSION name=leukoscope version=0.1.0",
            ),
            (
                Event::Model {
                    name: "leuko v3".into(),
                    digest: "ab12".into(),
                    classes: vec!["blast".into(), "lymphocyte".into()],
                },
                "MODEL name=\"leuko v3\" digest=ab12 classes=blast,lymphocyte",
            ),
        ];
        for (event, line) in cases {
            assert_eq!(event.to_line(Format::Text), line);
        }
    }

    #[test]
    fn json_lines_carry_the_same_fields() {
        let line = result().to_line(Format::Json);
        assert_eq!(
            line,
            r#"{"event":"RESULT","frame":37,"slide":"S-0012","label":"lymphocyte","confidence":0.974,"decision":"normal","time":"2025-01-02T03:04:05.678Z"}"#
        );
        for event in [
            result(),
            summary(),
            Event::Pong,
            Event::Ok {
                command: "START",
                detail: Some("S-1".into()),
            },
            Event::Status {
                state: Phase::Fault(Fault::DiskFull),
                slide: None,
                frames: 1,
                model: "m\u{e9}\n".into(),
                uptime_s: 1,
            },
        ] {
            let json: serde_json::Value =
                serde_json::from_str(&event.to_line(Format::Json)).unwrap();
            let object = json.as_object().unwrap();
            assert_eq!(object["event"], event.name());
            let (name, fields) = parse_text_line(&event.to_line(Format::Text)).unwrap();
            assert_eq!(name, event.name());
            assert_eq!(object.len(), fields.len() + 1);
            for (key, value) in fields {
                match (&object[&key], value) {
                    (serde_json::Value::Null, None) => {}
                    (serde_json::Value::String(s), Some(v)) => assert_eq!(s, &v),
                    (other, Some(v)) => assert_eq!(other.to_string(), v),
                    (other, None) => panic!("{key}: {other} vs absent"),
                }
            }
        }
    }

    #[test]
    fn non_finite_numbers_are_absent() {
        let mut e = result();
        if let Event::Result { confidence, .. } = &mut e {
            *confidence = f32::NAN;
        }
        assert!(e.to_line(Format::Text).contains(" confidence=- "));
        assert!(e.to_line(Format::Json).contains(r#""confidence":null"#));
    }

    #[test]
    fn the_tile_field_is_sent_only_for_tiled_frames() {
        let mut e = result();
        assert!(!e.to_line(Format::Text).contains("tile"));
        if let Event::Result { tile, .. } = &mut e {
            *tile = Some(2);
        }
        assert!(e.to_line(Format::Text).ends_with(" tile=2"));
        assert!(e.to_line(Format::Json).ends_with(r#","tile":2}"#));
    }

    #[test]
    fn text_quoting_round_trips_awkward_strings() {
        let strings = [
            "",
            "-",
            "a b",
            "\"",
            "\\",
            "=",
            "k=v",
            "tab\there",
            "new\nline",
            "é",
            "日本",
            "\u{1f600}",
            "\u{7f}",
            "\0",
            "--",
            "plain",
        ];
        for s in strings {
            let e = Event::Error {
                code: Fault::Internal,
                message: s.into(),
            };
            let line = e.to_line(Format::Text);
            assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line}");
            let (_, fields) = parse_text_line(&line).unwrap();
            assert_eq!(fields[1], ("message".to_string(), Some(s.to_string())));
        }
    }

    #[test]
    fn commands_parse_case_insensitively() {
        let ok = |s: &str| parse_command(s.as_bytes()).unwrap();
        assert_eq!(ok("help"), Command::Help);
        assert_eq!(ok("  Ping\r\n"), Command::Ping);
        assert_eq!(ok("STATUS"), Command::Status);
        assert_eq!(ok("start"), Command::Start(None));
        assert_eq!(
            ok("Start\tS-0012.a_b"),
            Command::Start(Some(SlideId::new("S-0012.a_b").unwrap()))
        );
        assert_eq!(ok("stop"), Command::Stop);
        assert_eq!(ok("last"), Command::Last(1));
        assert_eq!(ok("LAST   100"), Command::Last(100));
        assert_eq!(ok("model"), Command::Model);
        assert_eq!(ok("version"), Command::Version);
    }

    #[test]
    fn bad_commands_are_explained() {
        let err = |s: &[u8]| parse_command(s).unwrap_err();
        assert_eq!(err(b""), CommandError::Empty);
        assert_eq!(err(b" \t \r\n"), CommandError::Empty);
        assert_eq!(err(b"PING\x1b[A"), CommandError::BadBytes);
        assert_eq!(err("STÄRT".as_bytes()), CommandError::BadBytes);
        assert_eq!(err(b"rm -rf /"), CommandError::Unknown("rm".into()));
        assert_eq!(err(&[b'A'; 300]), CommandError::TooLong);
        assert_eq!(
            err(b"ping now"),
            CommandError::UnexpectedArgument {
                command: "PING",
                expected: "no argument"
            }
        );
        assert_eq!(err(b"start a b").code(), "unexpected_argument");
        assert_eq!(err(b"last 1 2").code(), "unexpected_argument");
        for id in [
            "-rf",
            ".hidden",
            "../etc",
            "a/b",
            "a;b",
            "$(reboot)",
            "`x`",
            "a*",
        ] {
            assert_eq!(
                err(format!("START {id}").as_bytes()),
                CommandError::BadSlideId(id.into()),
                "{id}"
            );
        }
        assert_eq!(
            err(format!("START {}", "a".repeat(33)).as_bytes()).code(),
            "bad_slide_id"
        );
        assert!(parse_command(format!("START {}", "a".repeat(32)).as_bytes()).is_ok());
        for n in ["0", "101", "-1", "+1", "1e2", "99999999999", "x", "65536"] {
            assert_eq!(
                err(format!("LAST {n}").as_bytes()),
                CommandError::BadCount(n.into())
            );
        }
        let long_word = "x".repeat(100);
        assert_eq!(
            err(long_word.as_bytes()),
            CommandError::Unknown("x".repeat(32))
        );
    }

    #[test]
    fn error_codes_are_distinct_and_messages_short() {
        let errors = [
            CommandError::Empty,
            CommandError::TooLong,
            CommandError::BadBytes,
            CommandError::Unknown("x".repeat(32)),
            CommandError::UnexpectedArgument {
                command: "START",
                expected: "at most one slide id",
            },
            CommandError::BadSlideId("x".repeat(32)),
            CommandError::BadCount("x".repeat(32)),
        ];
        let codes: std::collections::HashSet<_> = errors.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), errors.len());
        for e in errors {
            assert!(Event::Err(e).to_line(Format::Text).len() < 200);
        }
    }

    #[test]
    fn format_parses_from_config_and_cli() {
        assert_eq!("JSON".parse::<Format>().unwrap(), Format::Json);
        assert_eq!("text".parse::<Format>().unwrap(), Format::Text);
        assert!("xml".parse::<Format>().is_err());
        let f: Format = serde_json::from_str("\"json\"").unwrap();
        assert_eq!(f, Format::Json);
    }
}
