//! The screening rule of leukoscope, with no I/O: what the device makes of a frame's
//! probabilities ([`decide_frame`]), of the frames of one microscope field ([`FieldVotes`]) and
//! of a slide's fields ([`SlideTally`] under a [`SlideRule`]).
//!
//! The device (`edge run`), the evaluation (`edge evaluate`, the trainer's report: the
//! slide-level simulation) and the serial line (`hardware`, whose `decision=` and `verdict=`
//! words are [`Decision`] and [`Verdict`]) all use this one rule, so what is measured is what the
//! device does.
//!
//! # Per frame
//! The top class and its probability. Below [`DecisionConfig::min_confidence`] the frame is
//! `uncertain`; a confident frame is `normal` when its label is one of
//! [`DecisionConfig::normal_labels`], and `blast` otherwise.
//!
//! A model that scores how unfamiliar a picture is (its contract carries the threshold) makes an
//! unfamiliar frame `uncertain` whatever its probabilities ([`decide_frame_with_familiarity`]);
//! [`FrameDecision::reason`] says why a frame is uncertain ([`UncertainReason`]:
//! `low_confidence` or `unfamiliar`).
//!
//! # Per field
//! A field is one position of the slide under the objective (the device's field tracker says
//! which frames show the same field). Its decision is the frame rule applied to the **mean of the
//! probabilities of its classified frames**: frames that agree make a confident field, frames
//! that disagree make an uncertain one. A field whose frames were all rejected by the quality gate
//! is not a good field. A field is **unfamiliar** when the majority (more than half) of its
//! classified frames are: it is uncertain with the reason `unfamiliar` and never counted as
//! normal or blast; otherwise its unfamiliar frames are left out of the mean. Frames between
//! fields (moving, settling) belong to no field and count for none.
//!
//! # Per slide ([`SlideRule`], applied in this order)
//! 1. Fewer than `min_good_fields` good fields → **INSUFFICIENT** (scan more fields).
//! 2. At least `refer_min_blast_fields` blast fields **and** a blast fraction (blast fields /
//!    confident fields) of at least `refer_min_blast_fraction` → **BLASTS SEEN - REFER**, with the
//!    dominant blast subtype. Blasts outrank uncertainty.
//!    Referring is the safe direction: it counts confident blast fields among the familiar
//!    fields, however many others were unfamiliar.
//! 3. More than `max_unfamiliar_fraction` of the good fields unfamiliar → **UNFAMILIAR - NOT
//!    VALIDATED** (the model was not validated for these pictures).
//! 4. More than `max_uncertain_fraction` of the good fields uncertain (unfamiliar ones
//!    included) → **UNCERTAIN**.
//! 5. Otherwise → **NO BLASTS SEEN**.
//!
//! A scan cut short by a fault gets no verdict from this rule: it is
//! [`Verdict::Incomplete`]. Every verdict is a screening aid, never a diagnosis
//! ([`SCREENING_NOTE`]).

mod decision;
mod field;
mod slide;
mod verdict;

pub use decision::{
    Decision, DecisionConfig, FrameDecision, UncertainReason, argmax, decide_frame,
    decide_frame_with_familiarity, is_normal,
};
pub use field::{FieldKey, FieldVotes};
pub use slide::{FieldCounts, SlideOutcome, SlideRule, SlideTally, blast_fraction};
pub use verdict::Verdict;

/// The words that go with every verdict, wherever it is shown.
pub const SCREENING_NOTE: &str = "screening aid, not a diagnosis";
