//! One microscope field: its frames' votes and its decision.

use crate::decision::{DecisionConfig, FrameDecision, decide_frame};

/// Which field a result belongs to: the field number within the session and, when frames are
/// cut into tiles, the tile. Each tile position of a field is a field of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldKey {
    /// The field number (1 for the session's first field).
    pub field: u32,
    /// The tile, when frames are tiled.
    pub tile: Option<u32>,
}

impl FieldKey {
    /// Field `field`, untiled.
    pub fn whole(field: u32) -> Self {
        FieldKey { field, tile: None }
    }
}

/// The frames of one field: the sum of the probabilities of its classified frames and how many
/// of its frames the quality gate rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldVotes {
    sum: Vec<f64>,
    classified: u32,
    retakes: u32,
}

impl FieldVotes {
    /// No frame yet, for a model with `classes` outputs.
    pub fn new(classes: usize) -> Self {
        FieldVotes {
            sum: vec![0.0; classes],
            classified: 0,
            retakes: 0,
        }
    }

    /// Adds a classified frame's probabilities (in label order). A frame with a different
    /// number of probabilities, or a non-finite one, adds an uncertain vote: the field can then
    /// no longer be confident.
    pub fn add(&mut self, probabilities: &[f32]) {
        self.classified += 1;
        if probabilities.len() != self.sum.len() || probabilities.iter().any(|p| !p.is_finite()) {
            self.sum.iter_mut().for_each(|s| *s = f64::NAN);
            return;
        }
        for (s, &p) in self.sum.iter_mut().zip(probabilities) {
            *s += f64::from(p);
        }
    }

    /// Counts a frame of this field that the quality gate rejected.
    pub fn add_retake(&mut self) {
        self.retakes += 1;
    }

    /// Frames classified.
    pub fn classified(&self) -> u32 {
        self.classified
    }

    /// Frames rejected by the quality gate.
    pub fn retakes(&self) -> u32 {
        self.retakes
    }

    /// The mean probabilities of the classified frames (none classified: `None`).
    pub fn mean(&self) -> Option<Vec<f32>> {
        (self.classified > 0).then(|| {
            self.sum
                .iter()
                .map(|s| (s / f64::from(self.classified)) as f32)
                .collect()
        })
    }

    /// The field's decision: the frame rule on [`mean`](Self::mean) (`None` when no frame of the
    /// field passed the quality gate).
    pub fn decision(&self, config: &DecisionConfig, labels: &[String]) -> Option<FrameDecision> {
        let mean = self.mean()?;
        if mean.len() != labels.len() || labels.is_empty() {
            return None;
        }
        Some(decide_frame(config, labels, &mean))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Decision;

    fn labels() -> Vec<String> {
        ["Benign", "Early", "Pre", "Pro"].map(String::from).to_vec()
    }

    #[test]
    fn agreeing_frames_make_a_confident_field_and_disagreeing_ones_an_uncertain_one() {
        let cfg = DecisionConfig::default();
        let mut agree = FieldVotes::new(4);
        agree.add(&[0.9, 0.05, 0.03, 0.02]);
        agree.add(&[0.85, 0.1, 0.03, 0.02]);
        let d = agree.decision(&cfg, &labels()).unwrap();
        assert_eq!((d.kind, d.class), (Decision::Normal, 0));
        assert!((d.confidence - 0.875).abs() < 1e-6);

        let mut disagree = FieldVotes::new(4);
        disagree.add(&[0.95, 0.05, 0.0, 0.0]);
        disagree.add(&[0.05, 0.0, 0.0, 0.95]);
        assert_eq!(
            disagree.decision(&cfg, &labels()).unwrap().kind,
            Decision::Uncertain
        );
    }

    #[test]
    fn a_field_of_retakes_only_has_no_decision_and_bad_votes_cannot_be_confident() {
        let cfg = DecisionConfig::default();
        let mut retakes = FieldVotes::new(4);
        retakes.add_retake();
        assert_eq!((retakes.classified(), retakes.retakes()), (0, 1));
        assert_eq!(retakes.decision(&cfg, &labels()), None);

        let mut bad = FieldVotes::new(4);
        bad.add(&[0.99, 0.01, 0.0, 0.0]);
        bad.add(&[f32::NAN, 0.0, 0.0, 0.0]);
        assert_eq!(
            bad.decision(&cfg, &labels()).unwrap().kind,
            Decision::Uncertain
        );
    }
}
