//! The device state that the panel shows, and the small vocabularies shared with the serial line.

use serde::{Deserialize, Serialize};

/// What the device is doing, as far as the panel is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Booting and running self-tests; the LEDs do a lamp test.
    Starting,
    /// Ready for a slide (or showing the result of the last one).
    Idle,
    /// Screening a slide: frames are being taken and classified.
    Screening,
    /// Something is broken and screening cannot continue.
    Fault(Fault),
}

impl Phase {
    /// The `state` value of a `STATUS` line: `starting`, `idle`, `screening` or `fault`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Idle => "idle",
            Phase::Screening => "screening",
            Phase::Fault(_) => "fault",
        }
    }
}

/// A fault the device reports with a blinking pattern and an `ERROR` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The camera stopped delivering frames.
    CameraLost,
    /// The disk where frames and reports go is full.
    DiskFull,
    /// The outbox of results waiting for the fleet broker is full of unsent rows (a kit offline
    /// for too long): like a full disk, nothing more can be recorded.
    OutboxFull,
    /// The model failed its contract check (wrong hash, shape or classes) and was refused.
    ModelRefused,
    /// Anything else.
    Internal,
}

impl Fault {
    /// The `code` value of an `ERROR` line: `camera_lost`, `disk_full`, `outbox_full`,
    /// `model_refused`, `internal`.
    pub fn code(self) -> &'static str {
        match self {
            Fault::CameraLost => "camera_lost",
            Fault::DiskFull => "disk_full",
            Fault::OutboxFull => "outbox_full",
            Fault::ModelRefused => "model_refused",
            Fault::Internal => "internal",
        }
    }

    /// A short human description, at most 16 characters (fits one display line).
    pub fn describe(self) -> &'static str {
        match self {
            Fault::CameraLost => "camera lost",
            Fault::DiskFull => "disk full",
            Fault::OutboxFull => "outbox full",
            Fault::ModelRefused => "model refused",
            Fault::Internal => "internal error",
        }
    }
}

/// The screening verdict for a slide (so far, or final): the screening rule's own type, so the
/// panel, the serial line and the rule never disagree on a word.
pub use leukoscope_screening::Verdict;

/// Why a frame was not used and the technician should retake it. Serialized as its
/// [`as_str`](Self::as_str) word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetakeReason {
    /// Out of focus (or moving).
    Focus,
    /// Too dark, too bright or clipped.
    Exposure,
    /// No stained cells in the field.
    Empty,
}

impl RetakeReason {
    /// The `reason` value of a `RETAKE` line: `focus`, `exposure` or `empty`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetakeReason::Focus => "focus",
            RetakeReason::Exposure => "exposure",
            RetakeReason::Empty => "empty",
        }
    }
}

impl std::fmt::Display for RetakeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to the most recent frame.
#[derive(Debug, Clone, PartialEq)]
pub enum LastFrame {
    /// The frame was classified.
    Classified {
        /// Class label, e.g. `lymphocyte`.
        label: String,
        /// Softmax confidence of that label, 0..=1.
        confidence: f32,
    },
    /// The frame was rejected by the quality gate.
    Retake(RetakeReason),
}

/// Everything the panel (LEDs and display) shows. The device program owns one and updates it;
/// [`crate::Panel::show`] turns it into LED patterns and two display lines.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    /// What the device is doing.
    pub phase: Phase,
    /// Current (or last) slide id.
    pub slide: Option<String>,
    /// Frames taken on this slide.
    pub frames: u32,
    /// Good fields on this slide (what the verdict counts; the display shows `F:<fields>`).
    pub fields: u32,
    /// The verdict so far on this slide.
    pub verdict: Option<Verdict>,
    /// The most recent frame.
    pub last: Option<LastFrame>,
}

impl DeviceStatus {
    /// The status at power-on.
    pub fn starting() -> Self {
        DeviceStatus {
            phase: Phase::Starting,
            slide: None,
            frames: 0,
            fields: 0,
            verdict: None,
            last: None,
        }
    }

    /// Idle with no slide.
    pub fn idle() -> Self {
        DeviceStatus {
            phase: Phase::Idle,
            ..Self::starting()
        }
    }
}

/// Checks that serde writes and reads `value` as the JSON string `word` (the vocabularies
/// above and [`crate::serial::protocol::Decision`] serialize as their `as_str` words).
#[cfg(test)]
pub(crate) fn assert_serde_word<T>(value: T, word: &str)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = format!("\"{word}\"");
    assert_eq!(serde_json::to_string(&value).unwrap(), json);
    assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_serialize_as_their_slide_words() {
        for verdict in Verdict::ALL {
            assert_serde_word(verdict, verdict.as_str());
        }
    }

    #[test]
    fn retake_reasons_serialize_as_their_retake_words() {
        for reason in [
            RetakeReason::Focus,
            RetakeReason::Exposure,
            RetakeReason::Empty,
        ] {
            assert_serde_word(reason, reason.as_str());
        }
    }
}
