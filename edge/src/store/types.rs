//! What the store records and gives back: sessions, frames, their summaries and counts, the
//! enums stored as words, and times as stored (RFC 3339 UTC with milliseconds).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use leukoscope_screening::{
    Decision, DecisionConfig, FieldKey, FrameDecision, SlideTally, UncertainReason, is_normal,
};

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Frames are being added.
    Open,
    /// Closed with a summary and a verdict.
    Closed,
    /// Cut short by a crash or power loss (found open when the database was opened).
    Interrupted,
}

/// Why a session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A `STOP` command (serial line or CLI).
    Command,
    /// The button.
    Button,
    /// No frame for the configured idle gap.
    Idle,
    /// SIGINT/SIGTERM.
    Shutdown,
    /// The frame source ended (end of stream, last file).
    SourceEnd,
    /// A fault stopped the run (e.g. disk full, camera gone for good).
    Fault,
}

/// The decision recorded for a frame (the `decision` column). The run loop's decision for a
/// classified frame, with its class and kind, is [`leukoscope_screening::FrameDecision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredDecision {
    /// Classified with enough confidence: `label` is the result.
    Label,
    /// Classified below the confidence threshold: `label` is only the top guess.
    Uncertain,
    /// Rejected by the quality gate, not classified: see `retake_reason`.
    Retake,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The word stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(format!("unknown {} {s:?}", stringify!($ty))),
                }
            }
        }
    };
}

text_enum!(SessionState { Open => "open", Closed => "closed", Interrupted => "interrupted" });
text_enum!(StopReason {
    Command => "command",
    Button => "button",
    Idle => "idle",
    Shutdown => "shutdown",
    SourceEnd => "source_end",
    Fault => "fault",
});
text_enum!(StoredDecision { Label => "label", Uncertain => "uncertain", Retake => "retake" });

/// A new slide session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSession {
    /// The slide's id, when the technician gave one (`START slide-id`).
    pub slide_id: Option<String>,
    /// When it started.
    #[serde(with = "serde_time")]
    pub started: DateTime<Utc>,
    /// SHA-256 of the model file (hex).
    pub model_sha256: String,
    /// Model family/variant, free text.
    pub model_variant: String,
    /// The model's labels, in output order.
    pub labels: Vec<String>,
    /// The labels that are normal cells; every other label is a blast subtype. Used to recompute
    /// the blast fraction of an interrupted session.
    pub normal_labels: Vec<String>,
    /// The program's version.
    pub software_version: String,
    /// The decision rule parameters in force (confidence threshold, slide rule…).
    pub rule: serde_json::Value,
}

/// A frame's quality figures as stored (see the quality gate for their meaning).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Variance of the Laplacian.
    #[serde(deserialize_with = "serde_nan::f32")]
    pub focus: f32,
    /// Mean brightness.
    #[serde(deserialize_with = "serde_nan::f32")]
    pub mean: f32,
    /// 99.9th percentile of brightness.
    #[serde(deserialize_with = "serde_nan::f32")]
    pub p999: f32,
    /// Share of clipped pixels.
    #[serde(deserialize_with = "serde_nan::f32")]
    pub clipped_fraction: f32,
    /// Share of stained-nucleus pixels.
    #[serde(deserialize_with = "serde_nan::f32")]
    pub stained_fraction: f32,
}

impl From<crate::quality::QualityFigures> for Quality {
    fn from(q: crate::quality::QualityFigures) -> Self {
        Quality {
            focus: q.focus,
            mean: q.mean,
            p999: q.p999,
            clipped_fraction: q.clipped_fraction,
            stained_fraction: q.stained_fraction,
        }
    }
}

/// One result to record: a frame (or one tile of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// The session it belongs to (must be open).
    pub session: i64,
    /// The frame's sequence number within the session.
    pub seq: u64,
    /// When it was captured or received.
    #[serde(with = "serde_time")]
    pub time: DateTime<Utc>,
    /// Where it came from (`/dev/video0`, `stdin`, a file path).
    pub origin: String,
    /// SHA-256 of the frame's bytes (hex).
    pub sha256: String,
    /// Decoded width in pixels.
    pub width: u32,
    /// Decoded height in pixels.
    pub height: u32,
    /// The quality gate's figures, when it ran.
    pub quality: Option<Quality>,
    /// The decision.
    pub decision: StoredDecision,
    /// Why a retake (`focus`, `exposure`, `empty`).
    pub retake_reason: Option<String>,
    /// The top label (the result for [`StoredDecision::Label`], a guess for `Uncertain`).
    pub label: Option<String>,
    /// Its probability.
    pub confidence: Option<f32>,
    /// All probabilities in the session's label order; empty for a retake.
    #[serde(deserialize_with = "serde_nan::f32s")]
    pub probabilities: Vec<f32>,
    /// SHA-256 of the model that classified it.
    pub model_sha256: String,
    /// The program's version.
    pub software_version: String,
    /// The kept image, relative to the flagged-images folder (see [`crate::flagged`]).
    pub kept_image: Option<PathBuf>,
    /// The tile index, when frames are tiled.
    pub tile: Option<u32>,
    /// The microscope field the frame shows (1, 2, … within the session; none between fields).
    #[serde(default)]
    pub field: Option<u32>,
    /// The model's unfamiliarity score (none for a retake, or a model without one).
    #[serde(default)]
    pub unfamiliarity: Option<f32>,
    /// Why the decision is [`StoredDecision::Uncertain`] (`low_confidence`, `unfamiliar`);
    /// none otherwise, and for frames recorded before reasons were.
    #[serde(default)]
    pub uncertain_reason: Option<UncertainReason>,
}

/// A recorded frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRow {
    /// Row id (increases with recording order across all sessions).
    pub id: i64,
    /// What was recorded. `kept_image` is `None` once the image was evicted.
    #[serde(flatten)]
    pub frame: FrameRecord,
    /// When the kept image was removed to respect the size cap.
    #[serde(with = "serde_time_opt")]
    pub image_evicted: Option<DateTime<Utc>>,
    /// In a collector's database (`edge fleet collect`): the kit it came from. `None` (and left
    /// out of JSON) on a kit's own database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// In a collector's database: the frame's row id on its kit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_frame: Option<i64>,
}

/// A session's summary, given when it closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Confident frames per class.
    pub counts: Vec<(String, u32)>,
    /// Frames that passed the quality gate.
    pub good: u32,
    /// Frames rejected by the quality gate.
    pub retakes: u32,
    /// Good frames below the confidence threshold.
    pub uncertain: u32,
    /// Good fields (what the verdict counts).
    pub fields: u32,
    /// Confident blast fields.
    pub blast_fields: u32,
    /// Good fields whose decision is uncertain.
    pub uncertain_fields: u32,
    /// Good fields the model found unfamiliar (a part of `uncertain_fields`).
    #[serde(default)]
    pub unfamiliar_fields: u32,
    /// Blast fields / confident fields.
    pub blast_fraction: f64,
    /// The verdict; none when a fault cut the scan short.
    pub verdict: Option<String>,
    /// The dominant blast subtype, when blasts were seen.
    pub dominant_subtype: Option<String>,
    /// What stopped the scan, for a session closed by a fault.
    pub fault: Option<String>,
}

/// A session's counts: as given on close, or recomputed from the frames of an interrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCounts {
    /// Confident frames per class, in label order.
    pub counts: Vec<(String, u32)>,
    /// Frames that passed the quality gate.
    pub good: u32,
    /// Frames rejected by the quality gate.
    pub retakes: u32,
    /// Good frames below the confidence threshold.
    pub uncertain: u32,
    /// Good fields (none for sessions recorded before fields were tracked).
    pub fields: Option<u32>,
    /// Confident blast fields.
    pub blast_fields: Option<u32>,
    /// Good fields whose decision is uncertain.
    pub uncertain_fields: Option<u32>,
    /// Good fields the model found unfamiliar (none for sessions recorded before unfamiliarity
    /// was).
    #[serde(default)]
    pub unfamiliar_fields: Option<u32>,
    /// Blast fields / confident fields (NaN if it was not a number; blast frames / confident
    /// frames for sessions recorded before fields were tracked).
    #[serde(deserialize_with = "serde_nan::f64")]
    pub blast_fraction: f64,
}

/// What the count of a session needs of one recorded frame.
pub(crate) struct FrameFacts {
    pub decision: StoredDecision,
    pub label: Option<String>,
    pub probabilities: Vec<f32>,
    pub field: Option<u32>,
    pub tile: Option<u32>,
    pub uncertain_reason: Option<UncertainReason>,
}

impl SessionCounts {
    /// Counts a session's recorded frames again, through the same [`SlideTally`] the device
    /// used: the session's labels, its normal labels, and the confidence threshold of its stored
    /// rule (`rule.decision`, else the default).
    pub(crate) fn replay(
        session: &SessionRow,
        frames: impl IntoIterator<Item = FrameFacts>,
    ) -> SessionCounts {
        let mut config: DecisionConfig = session
            .rule
            .get("decision")
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default();
        config.normal_labels = session.normal_labels.clone();
        let labels = &session.labels;
        let mut tally = SlideTally::new(labels);
        for f in frames {
            let key = f.field.map(|field| FieldKey {
                field,
                tile: f.tile,
            });
            let class = f
                .label
                .as_deref()
                .and_then(|l| labels.iter().position(|x| x == l));
            match (f.decision, class) {
                (StoredDecision::Retake, _) => tally.add_retake(key),
                // A label outside the session's labels cannot be counted as a cell.
                (_, None) => {
                    let d = FrameDecision {
                        class: 0,
                        label: f.label.clone().unwrap_or_default(),
                        confidence: f32::NAN,
                        kind: Decision::Uncertain,
                        reason: Some(f.uncertain_reason.unwrap_or(UncertainReason::LowConfidence)),
                    };
                    tally.add(key, &d, &[]);
                }
                (decision, Some(class)) => {
                    let kind = if decision == StoredDecision::Uncertain {
                        Decision::Uncertain
                    } else if is_normal(&config.normal_labels, &labels[class]) {
                        Decision::Normal
                    } else {
                        Decision::Blast
                    };
                    let d = FrameDecision {
                        class,
                        label: labels[class].clone(),
                        confidence: f.probabilities.get(class).copied().unwrap_or(f32::NAN),
                        kind,
                        // Frames recorded before reasons were: low confidence.
                        reason: (kind == Decision::Uncertain)
                            .then(|| f.uncertain_reason.unwrap_or(UncertainReason::LowConfidence)),
                    };
                    tally.add(key, &d, &f.probabilities);
                }
            }
        }
        let tracked = tally.field_votes().next().is_some() || tally.frames == 0;
        let fields = tally.field_counts(&config);
        SessionCounts {
            counts: labels
                .iter()
                .cloned()
                .zip(tally.counts.iter().copied())
                .collect(),
            good: tally.good,
            retakes: tally.retakes,
            uncertain: tally.uncertain,
            fields: tracked.then_some(fields.good),
            blast_fields: tracked.then_some(fields.blasts),
            uncertain_fields: tracked.then_some(fields.uncertain),
            unfamiliar_fields: tracked.then_some(fields.unfamiliar),
            blast_fraction: if tracked {
                leukoscope_screening::blast_fraction(fields.blasts, fields.confident())
            } else {
                leukoscope_screening::blast_fraction(tally.blasts, tally.confident())
            },
        }
    }
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Its id.
    pub id: i64,
    /// The slide's id, if given.
    pub slide_id: Option<String>,
    /// When it started.
    #[serde(with = "serde_time")]
    pub started: DateTime<Utc>,
    /// When it stopped (closed, or last frame of an interrupted session).
    #[serde(with = "serde_time_opt")]
    pub stopped: Option<DateTime<Utc>>,
    /// Its state.
    pub state: SessionState,
    /// Why it was closed (none while open or when interrupted).
    pub stop_reason: Option<StopReason>,
    /// SHA-256 of the model.
    pub model_sha256: String,
    /// Model variant.
    pub model_variant: String,
    /// The model's labels.
    pub labels: Vec<String>,
    /// The labels that are normal cells.
    pub normal_labels: Vec<String>,
    /// The program's version.
    pub software_version: String,
    /// The decision rule parameters used.
    pub rule: serde_json::Value,
    /// Results recorded (one per frame, or per tile when tiling).
    pub frames: u64,
    /// Counts; none while open.
    pub counts: Option<SessionCounts>,
    /// The verdict; closed sessions only, and none when a fault cut the scan short.
    pub verdict: Option<String>,
    /// The dominant blast subtype, when the verdict names one.
    pub dominant_subtype: Option<String>,
    /// What stopped the scan, for a session closed by a fault (`stop_reason` `fault`).
    pub fault: Option<String>,
    /// In a collector's database (`edge fleet collect`): the kit it came from. `None` (and left
    /// out of JSON) on a kit's own database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// In a collector's database: the kit's site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// In a collector's database: the session's id on its kit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_session: Option<i64>,
}

/// Formats a time as stored.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Times in JSON as stored: RFC 3339 UTC with milliseconds.
mod serde_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional times in JSON as stored (`null` when absent).
mod serde_time_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| super::parse_time(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Numbers in JSON as written: JSON has no NaN, so serde_json writes NaN as `null`; read back,
/// `null` is NaN again (a fleet message or a JSON export round-trips).
mod serde_nan {
    use serde::{Deserialize, Deserializer};

    pub fn f32<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
    }

    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub fn f32s<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Ok(Vec::<Option<f32>>::deserialize(d)?
            .into_iter()
            .map(|v| v.unwrap_or(f32::NAN))
            .collect())
    }
}

/// Parses a time as stored.
pub(super) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("time {s:?}: {e}"))
}
