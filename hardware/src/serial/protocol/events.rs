//! The messages the device sends to the technician and the fields they carry. [`Event`] is
//! one message; its `fields` are the `key=value` pairs in the order both line formats write
//! them (the contract in the module table), each value a `Value` (string, integer, fixed
//! decimals, boolean or absent) that `encoding` then writes as text or JSON. [`Timestamp`] is
//! the `time` field, [`Decision`] the `decision` of a `RESULT`, [`SlideSummary`] a `SLIDE`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::commands::{CommandError, HELP_TEXT};
use crate::status::{Fault, Phase, RetakeReason, Verdict};

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

/// What the device made of one classified frame: the screening rule's own type.
pub use leukoscope_screening::Decision;

/// Why a frame's decision is uncertain: the screening rule's own type (a `RESULT` carries
/// `reason=unfamiliar`).
pub use leukoscope_screening::UncertainReason;

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
    /// Good fields: fields of the slide with a frame that passed the quality gate (what the
    /// verdict counts).
    pub fields: u32,
    /// Good fields the model found unfamiliar (uncertain, never counted; sent as `unfamiliar`
    /// only when there are any).
    pub unfamiliar: u32,
    /// Why there is no verdict, for [`Verdict::Incomplete`] (the fault that cut the scan short).
    pub reason: Option<String>,
    /// Frames counted per class (confident frames), in class order.
    pub counts: Vec<(String, u32)>,
    /// Blast fields / confident fields, 0..=1 (the fraction the verdict used).
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
        /// The model found the frame unfamiliar (`decision` is then `uncertain`): sent as
        /// `reason=unfamiliar`, only for such frames.
        unfamiliar: bool,
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
    /// Something the technician should know that is not a fault and does not stop
    /// classifying, e.g. `code=scale_mismatch`: the frames' red cells disagree with the
    /// configured pixel size. `code` is a word (`[a-z_]+`), `message` for a person.
    Notice {
        /// What kind, a word: `scale_mismatch`.
        code: String,
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
pub(super) enum Value {
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

/// `fields` with a last `tile` field when the frame is a tile (`RESULT` and `RETAKE` send it
/// only then).
fn with_tile(mut fields: Vec<(String, Value)>, tile: Option<u32>) -> Vec<(String, Value)> {
    fields.extend(tile.map(|t| ("tile".to_string(), Value::from(t))));
    fields
}

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
            Event::Notice { .. } => "NOTICE",
            Event::Ok { .. } => "OK",
            Event::Err(_) => "ERR",
            Event::Pong => "PONG",
            Event::Help => "HELP",
            Event::Version { .. } => "VERSION",
            Event::Model { .. } => "MODEL",
        }
    }

    /// The fields of the event, in the order they are sent.
    pub(super) fn fields(&self) -> Vec<(String, Value)> {
        let f = |k: &str, v: Value| (k.to_string(), v);
        match self {
            Event::Result {
                frame,
                slide,
                label,
                confidence,
                decision,
                time,
                unfamiliar,
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
                if *unfamiliar {
                    v.push(f("reason", UncertainReason::Unfamiliar.as_str().into()));
                }
                with_tile(v, *tile)
            }
            Event::Retake {
                frame,
                reason,
                time,
                tile,
            } => with_tile(
                vec![
                    f("frame", (*frame).into()),
                    f("reason", reason.as_str().into()),
                    f("time", time.to_string().into()),
                ],
                *tile,
            ),
            Event::Slide(s) => {
                let mut v = vec![
                    f("slide", s.slide.as_str().into()),
                    f("verdict", s.verdict.as_str().into()),
                    f("frames", s.frames.into()),
                    f("good", s.good.into()),
                    f("retakes", s.retakes.into()),
                    f("fields", s.fields.into()),
                ];
                if s.unfamiliar > 0 {
                    v.push(f("unfamiliar", s.unfamiliar.into()));
                }
                v.extend(
                    s.counts
                        .iter()
                        .map(|(label, n)| (count_key(label), (*n).into())),
                );
                v.push(f("blast_fraction", Value::Fixed(s.blast_fraction, 4)));
                if let Some(reason) = &s.reason {
                    v.push(f("reason", reason.as_str().into()));
                }
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
            Event::Notice { code, message } => vec![
                f("code", code.as_str().into()),
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn decisions_serialize_as_their_result_words() {
        for decision in [Decision::Normal, Decision::Blast, Decision::Uncertain] {
            crate::status::assert_serde_word(decision, decision.as_str());
        }
    }
}
