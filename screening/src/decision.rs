//! A frame's probabilities → its decision.

use serde::{Deserialize, Serialize};

/// What the device made of one classified frame (or field). Serialized as its
/// [`as_str`](Self::as_str) word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// A normal white cell.
    Normal,
    /// A blast.
    Blast,
    /// Below the confidence threshold: not counted as a cell of either kind.
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

/// Why a decision is [`Decision::Uncertain`] (`uncertain_reason`). Serialized as its
/// [`as_str`](Self::as_str) word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UncertainReason {
    /// The top-class probability is below [`DecisionConfig::min_confidence`] (or not a number).
    LowConfidence,
    /// The model's unfamiliarity score is above the threshold its contract carries: the picture
    /// is unlike what the model was validated on, whatever its probabilities say.
    Unfamiliar,
}

impl UncertainReason {
    /// Every reason, in declaration order.
    pub const ALL: [UncertainReason; 2] =
        [UncertainReason::LowConfidence, UncertainReason::Unfamiliar];

    /// The `uncertain_reason` value: `low_confidence` or `unfamiliar`.
    pub fn as_str(self) -> &'static str {
        match self {
            UncertainReason::LowConfidence => "low_confidence",
            UncertainReason::Unfamiliar => "unfamiliar",
        }
    }

    /// The reason for its `as_str` word.
    pub fn from_word(word: &str) -> Option<UncertainReason> {
        UncertainReason::ALL
            .into_iter()
            .find(|r| r.as_str() == word)
    }
}

/// How a frame's probabilities become a decision (config section `[decision]`).
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

/// The decision for one classified frame (or one field).
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
    /// Why it is uncertain (`None` unless `kind` is [`Decision::Uncertain`]).
    pub reason: Option<UncertainReason>,
}

impl FrameDecision {
    /// This decision for a picture the model found unfamiliar: uncertain with the reason
    /// [`UncertainReason::Unfamiliar`], keeping the top class and its probability for the record.
    pub fn unfamiliar(self) -> FrameDecision {
        FrameDecision {
            kind: Decision::Uncertain,
            reason: Some(UncertainReason::Unfamiliar),
            ..self
        }
    }
}

/// Index of the largest value (ties: the lowest index; 0 for an empty slice).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate().skip(1) {
        if v > values[best] {
            best = i;
        }
    }
    best
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
    let class = argmax(probabilities);
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
        reason: (kind == Decision::Uncertain).then_some(UncertainReason::LowConfidence),
    }
}

/// [`decide_frame`] for a model that also scores how unfamiliar the picture is: `unfamiliar`
/// (the score is above the contract's threshold, or not a number) makes the frame uncertain
/// with the reason [`UncertainReason::Unfamiliar`], whatever its probabilities; otherwise the
/// decision is exactly [`decide_frame`]'s.
///
/// # Panics
/// As [`decide_frame`].
pub fn decide_frame_with_familiarity(
    config: &DecisionConfig,
    labels: &[String],
    probabilities: &[f32],
    unfamiliar: bool,
) -> FrameDecision {
    let decision = decide_frame(config, labels, probabilities);
    if unfamiliar {
        decision.unfamiliar()
    } else {
        decision
    }
}

/// Whether `label` is a normal cell: one of `normal_labels` (ASCII case-insensitive). Every other
/// label is a blast subtype.
pub fn is_normal(normal_labels: &[String], label: &str) -> bool {
    normal_labels.iter().any(|n| n.eq_ignore_ascii_case(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn labels() -> Vec<String> {
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

    #[test]
    fn argmax_ties_go_to_the_lowest_index() {
        assert_eq!(argmax(&[0.4, 0.4, 0.2]), 0);
        assert_eq!(argmax(&[0.1, 0.45, 0.45]), 1);
        assert_eq!(argmax(&[0.1, 0.2, 0.7]), 2);
    }

    #[test]
    fn an_unfamiliar_frame_is_uncertain_whatever_its_probabilities() {
        let cfg = DecisionConfig::default();
        let confident = [0.0, 0.0, 0.01, 0.99];
        let d = decide_frame_with_familiarity(&cfg, &labels(), &confident, true);
        assert_eq!(
            (d.kind, d.reason, d.label.as_str(), d.class),
            (
                Decision::Uncertain,
                Some(UncertainReason::Unfamiliar),
                "Pro",
                3
            )
        );
        // Familiar: exactly the frame rule.
        let d = decide_frame_with_familiarity(&cfg, &labels(), &confident, false);
        assert_eq!(d, decide_frame(&cfg, &labels(), &confident));
        assert_eq!((d.kind, d.reason), (Decision::Blast, None));
        // Unfamiliar outranks low confidence.
        let low = [0.4, 0.3, 0.2, 0.1];
        assert_eq!(
            decide_frame(&cfg, &labels(), &low).reason,
            Some(UncertainReason::LowConfidence)
        );
        assert_eq!(
            decide_frame_with_familiarity(&cfg, &labels(), &low, true).reason,
            Some(UncertainReason::Unfamiliar)
        );
    }

    #[test]
    fn reasons_serialize_as_their_words() {
        for r in UncertainReason::ALL {
            let json = format!("\"{}\"", r.as_str());
            assert_eq!(serde_json::to_string(&r).unwrap(), json);
            assert_eq!(serde_json::from_str::<UncertainReason>(&json).unwrap(), r);
            assert_eq!(UncertainReason::from_word(r.as_str()), Some(r));
        }
        assert_eq!(UncertainReason::Unfamiliar.as_str(), "unfamiliar");
        assert_eq!(UncertainReason::from_word("unsure"), None);
    }

    #[test]
    fn decisions_serialize_as_their_words() {
        for d in [Decision::Normal, Decision::Blast, Decision::Uncertain] {
            let json = format!("\"{}\"", d.as_str());
            assert_eq!(serde_json::to_string(&d).unwrap(), json);
            assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);
        }
    }
}
