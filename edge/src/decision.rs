//! What the device makes of a frame's probabilities, and of a whole slide.
//!
//! # Per frame
//! The top class and its probability. Below [`DecisionConfig::min_confidence`] the frame is
//! `uncertain`: it is shown and stored, but never counted as a cell of either kind, so a
//! low-confidence guess can never tip a slide verdict. A confident frame is `normal` when its
//! label is one of [`DecisionConfig::normal_labels`] (`Benign` for the shipped model), and
//! `blast` otherwise.
//!
//! # Per slide ([`SlideRule`], applied in this order)
//! 1. Fewer than `min_good_frames` frames passed the quality gate → **INSUFFICIENT** (scan
//!    more fields).
//! 2. At least `refer_min_blast_frames` blast frames **and** a blast fraction (blast frames /
//!    confident frames) of at least `refer_min_blast_fraction` → **BLASTS SEEN - REFER**, with
//!    the dominant blast subtype. Blasts outrank uncertainty: a slide with blasts is referred
//!    even when many other frames were uncertain.
//! 3. More than `max_uncertain_fraction` of the good frames uncertain → **UNCERTAIN**.
//! 4. Otherwise → **NO BLASTS SEEN**.
//!
//! Every verdict is a screening aid, never a diagnosis ([`SCREENING_NOTE`]).

// The frame decision and the slide verdict are the serial line's own words (`decision=`,
// `verdict=`): one type each from here to the wire, the panel and the database.
pub use hardware::Verdict;
pub use hardware::serial::protocol::Decision;
use serde::{Deserialize, Serialize};

/// The words that go with every verdict, wherever it is shown.
pub const SCREENING_NOTE: &str = "screening aid, not a diagnosis";

/// How a frame's probabilities become a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionConfig {
    /// Below this top-class probability a frame is `uncertain` (0..1).
    pub min_confidence: f32,
    /// Labels that are normal cells; every other label is a blast subtype.
    pub normal_labels: Vec<String>,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            min_confidence: 0.80,
            normal_labels: vec!["Benign".into(), "hem".into()],
        }
    }
}

/// How a slide's frames become a verdict (see the module documentation for the order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlideRule {
    /// Fewer good (quality-passed) frames than this → INSUFFICIENT.
    pub min_good_frames: u32,
    /// Blast frames needed to refer.
    pub refer_min_blast_frames: u32,
    /// Blast frames / confident frames needed to refer (0..1).
    pub refer_min_blast_fraction: f64,
    /// Uncertain frames / good frames above this → UNCERTAIN (0..1).
    pub max_uncertain_fraction: f64,
}

impl Default for SlideRule {
    fn default() -> Self {
        SlideRule {
            min_good_frames: 10,
            refer_min_blast_frames: 2,
            refer_min_blast_fraction: 0.05,
            max_uncertain_fraction: 0.5,
        }
    }
}

/// The decision for one classified frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameDecision {
    /// Index of the top class.
    pub class: usize,
    /// Its label.
    pub label: String,
    /// Its probability.
    pub confidence: f32,
    /// What the device makes of it.
    pub kind: Decision,
}

/// Decides one frame from the model's probabilities (in `labels` order).
///
/// # Panics
/// If `probabilities` is empty or its length differs from `labels` (the model's contract
/// guarantees both).
pub fn decide_frame(
    config: &DecisionConfig,
    labels: &[String],
    probabilities: &[f32],
) -> FrameDecision {
    assert_eq!(
        labels.len(),
        probabilities.len(),
        "one probability per label"
    );
    let class = leukoscope_model::metrics::argmax(probabilities);
    let confidence = probabilities[class];
    let label = labels[class].clone();
    let kind = if confidence.is_nan() || confidence < config.min_confidence {
        Decision::Uncertain
    } else if is_normal(&config.normal_labels, &label) {
        Decision::Normal
    } else {
        Decision::Blast
    };
    FrameDecision {
        class,
        label,
        confidence,
        kind,
    }
}

/// Whether `label` is a normal cell: one of `normal_labels` (ASCII case-insensitive). Every other
/// label is a blast subtype.
pub(crate) fn is_normal(normal_labels: &[String], label: &str) -> bool {
    normal_labels.iter().any(|n| n.eq_ignore_ascii_case(label))
}

/// Blast frames / confident frames: 0 when no frame was confident.
pub(crate) fn blast_fraction(blasts: u32, confident: u32) -> f64 {
    if confident == 0 {
        0.0
    } else {
        f64::from(blasts) / f64::from(confident)
    }
}

/// Running counts of one slide session.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideTally {
    labels: Vec<String>,
    /// Confident frames per class, in label order.
    pub counts: Vec<u32>,
    /// Frames seen (good + retakes).
    pub frames: u32,
    /// Frames that passed the quality gate and were classified.
    pub good: u32,
    /// Frames rejected by the quality gate.
    pub retakes: u32,
    /// Good frames below the confidence threshold.
    pub uncertain: u32,
    /// Confident blast frames.
    pub blasts: u32,
}

/// A slide's verdict with the figures behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Blast frames / confident frames (0 when there are none).
    pub blast_fraction: f64,
    /// The most frequent blast label, when blasts were seen (ties: first in label order).
    pub dominant_subtype: Option<String>,
}

impl SlideTally {
    /// An empty tally for a model with these labels.
    pub fn new(labels: &[String]) -> Self {
        SlideTally {
            labels: labels.to_vec(),
            counts: vec![0; labels.len()],
            frames: 0,
            good: 0,
            retakes: 0,
            uncertain: 0,
            blasts: 0,
        }
    }

    /// The labels, in count order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Counts a frame rejected by the quality gate.
    pub fn add_retake(&mut self) {
        self.frames += 1;
        self.retakes += 1;
    }

    /// Counts a classified frame.
    pub fn add(&mut self, decision: &FrameDecision) {
        self.frames += 1;
        self.good += 1;
        match decision.kind {
            Decision::Uncertain => self.uncertain += 1,
            Decision::Blast => {
                self.blasts += 1;
                self.counts[decision.class] += 1;
            }
            Decision::Normal => self.counts[decision.class] += 1,
        }
    }

    /// Confident frames (normal + blast).
    pub fn confident(&self) -> u32 {
        self.good - self.uncertain
    }

    /// The verdict under `rule` for what was counted so far.
    pub fn outcome(&self, rule: &SlideRule, config: &DecisionConfig) -> SlideOutcome {
        let confident = self.confident();
        let blast_fraction = blast_fraction(self.blasts, confident);
        let dominant_subtype = self
            .labels
            .iter()
            .zip(&self.counts)
            .filter(|(label, n)| **n > 0 && !is_normal(&config.normal_labels, label))
            .fold(None::<(&String, u32)>, |best, (label, &n)| match best {
                Some((_, m)) if m >= n => best,
                _ => Some((label, n)),
            })
            .map(|(label, _)| label.clone());
        let uncertain_fraction = if self.good == 0 {
            0.0
        } else {
            f64::from(self.uncertain) / f64::from(self.good)
        };
        let verdict = if self.good < rule.min_good_frames {
            Verdict::Insufficient
        } else if self.blasts >= rule.refer_min_blast_frames
            && blast_fraction >= rule.refer_min_blast_fraction
        {
            Verdict::Refer
        } else if uncertain_fraction > rule.max_uncertain_fraction {
            Verdict::Uncertain
        } else {
            Verdict::NoBlasts
        };
        SlideOutcome {
            verdict,
            blast_fraction,
            dominant_subtype: dominant_subtype.filter(|_| verdict == Verdict::Refer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["Benign", "Early", "Pre", "Pro"].map(String::from).to_vec()
    }

    fn frame(probs: [f32; 4]) -> FrameDecision {
        decide_frame(&DecisionConfig::default(), &labels(), &probs)
    }

    #[test]
    fn frames_below_the_threshold_are_uncertain_whatever_their_label() {
        let d = frame([0.1, 0.79, 0.05, 0.06]);
        assert_eq!(
            (d.kind, d.label.as_str(), d.class),
            (Decision::Uncertain, "Early", 1)
        );
        assert_eq!(frame([0.9, 0.05, 0.03, 0.02]).kind, Decision::Normal);
        assert_eq!(frame([0.0, 0.0, 0.05, 0.95]).kind, Decision::Blast);
        // NaN probabilities never pass as confident.
        assert_eq!(frame([f32::NAN; 4]).kind, Decision::Uncertain);
    }

    #[test]
    fn normal_labels_match_case_insensitively() {
        let cfg = DecisionConfig {
            normal_labels: vec!["benign".into()],
            ..DecisionConfig::default()
        };
        let d = decide_frame(&cfg, &labels(), &[0.95, 0.05, 0.0, 0.0]);
        assert_eq!(d.kind, Decision::Normal);
    }

    fn tally(normal: u32, blasts: &[(usize, u32)], uncertain: u32, retakes: u32) -> SlideTally {
        let mut t = SlideTally::new(&labels());
        for _ in 0..normal {
            t.add(&frame([0.99, 0.01, 0.0, 0.0]));
        }
        for &(class, n) in blasts {
            let mut p = [0.0; 4];
            p[class] = 0.97;
            p[0] = 0.03;
            for _ in 0..n {
                t.add(&frame(p));
            }
        }
        for _ in 0..uncertain {
            t.add(&frame([0.4, 0.3, 0.2, 0.1]));
        }
        for _ in 0..retakes {
            t.add_retake();
        }
        t
    }

    fn verdict(t: &SlideTally) -> SlideOutcome {
        t.outcome(&SlideRule::default(), &DecisionConfig::default())
    }

    #[test]
    fn too_few_good_frames_is_insufficient_even_with_blasts() {
        let t = tally(3, &[(3, 5)], 0, 40);
        assert_eq!((t.frames, t.good, t.retakes), (48, 8, 40));
        assert_eq!(verdict(&t).verdict, Verdict::Insufficient);
        assert_eq!(verdict(&t).dominant_subtype, None);
    }

    #[test]
    fn blasts_above_both_floors_refer_with_the_dominant_subtype() {
        let t = tally(30, &[(1, 1), (3, 2)], 0, 0);
        let o = verdict(&t);
        assert_eq!(o.verdict, Verdict::Refer);
        assert_eq!(o.dominant_subtype.as_deref(), Some("Pro"));
        assert!((o.blast_fraction - 3.0 / 33.0).abs() < 1e-12);
        assert_eq!(t.counts, vec![30, 1, 0, 2]);
    }

    #[test]
    fn a_single_blast_or_a_tiny_fraction_does_not_refer() {
        assert_eq!(
            verdict(&tally(30, &[(2, 1)], 0, 0)).verdict,
            Verdict::NoBlasts
        );
        // 2 blasts in 100 confident frames: 2 % < 5 %.
        assert_eq!(
            verdict(&tally(98, &[(2, 2)], 0, 0)).verdict,
            Verdict::NoBlasts
        );
    }

    #[test]
    fn many_uncertain_frames_make_the_slide_uncertain_unless_blasts_were_seen() {
        assert_eq!(verdict(&tally(5, &[], 6, 0)).verdict, Verdict::Uncertain);
        assert_eq!(verdict(&tally(5, &[], 5, 0)).verdict, Verdict::NoBlasts);
        assert_eq!(verdict(&tally(5, &[(2, 2)], 10, 0)).verdict, Verdict::Refer);
    }

    #[test]
    fn uncertain_frames_are_not_counted_as_cells() {
        let t = tally(10, &[], 4, 0);
        assert_eq!(t.counts, vec![10, 0, 0, 0]);
        assert_eq!((t.good, t.uncertain, t.confident()), (14, 4, 10));
    }
}
