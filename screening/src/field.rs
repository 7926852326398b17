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

/// The frames of one field: the sum of the probabilities of its classified frames (all of them,
/// and the familiar ones), how many of them the model found unfamiliar and how many of its
/// frames the quality gate rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldVotes {
    sum: Vec<f64>,
    familiar_sum: Vec<f64>,
    classified: u32,
    unfamiliar: u32,
    retakes: u32,
}

/// Adds `probabilities` to `sum`; a vote of the wrong length or with a non-finite value makes
/// the whole sum NaN (the field can then no longer be confident).
fn add_to(sum: &mut [f64], probabilities: &[f32]) {
    if probabilities.len() != sum.len() || probabilities.iter().any(|p| !p.is_finite()) {
        sum.iter_mut().for_each(|s| *s = f64::NAN);
        return;
    }
    for (s, &p) in sum.iter_mut().zip(probabilities) {
        *s += f64::from(p);
    }
}

fn mean_of(sum: &[f64], n: u32) -> Option<Vec<f32>> {
    (n > 0).then(|| sum.iter().map(|s| (s / f64::from(n)) as f32).collect())
}

impl FieldVotes {
    /// No frame yet, for a model with `classes` outputs.
    pub fn new(classes: usize) -> Self {
        FieldVotes {
            sum: vec![0.0; classes],
            familiar_sum: vec![0.0; classes],
            classified: 0,
            unfamiliar: 0,
            retakes: 0,
        }
    }

    /// Adds a classified frame's probabilities (in label order). A frame with a different
    /// number of probabilities, or a non-finite one, adds an uncertain vote: the field can then
    /// no longer be confident.
    pub fn add(&mut self, probabilities: &[f32]) {
        self.classified += 1;
        add_to(&mut self.sum, probabilities);
        add_to(&mut self.familiar_sum, probabilities);
    }

    /// Adds a classified frame the model found unfamiliar: it counts towards the field being
    /// unfamiliar, and its probabilities never make the field confident.
    pub fn add_unfamiliar(&mut self, probabilities: &[f32]) {
        self.classified += 1;
        self.unfamiliar += 1;
        add_to(&mut self.sum, probabilities);
    }

    /// Counts a frame of this field that the quality gate rejected.
    pub fn add_retake(&mut self) {
        self.retakes += 1;
    }

    /// Frames classified (familiar and unfamiliar).
    pub fn classified(&self) -> u32 {
        self.classified
    }

    /// Classified frames the model found unfamiliar.
    pub fn unfamiliar(&self) -> u32 {
        self.unfamiliar
    }

    /// Frames rejected by the quality gate.
    pub fn retakes(&self) -> u32 {
        self.retakes
    }

    /// Whether the field is unfamiliar: the majority (more than half) of its classified frames
    /// are.
    pub fn is_unfamiliar(&self) -> bool {
        self.unfamiliar * 2 > self.classified
    }

    /// The mean probabilities of the familiar classified frames, or of all classified frames
    /// when none was familiar (none classified: `None`). Without unfamiliar frames: the mean of
    /// every classified frame.
    pub fn mean(&self) -> Option<Vec<f32>> {
        mean_of(&self.familiar_sum, self.classified - self.unfamiliar)
            .or_else(|| mean_of(&self.sum, self.classified))
    }

    /// The field's decision (`None` when no frame of the field passed the quality gate): an
    /// unfamiliar field ([`is_unfamiliar`](Self::is_unfamiliar)) is uncertain with the reason
    /// `unfamiliar` (its top class kept for the record); otherwise the frame rule on
    /// [`mean`](Self::mean), the familiar frames' mean.
    pub fn decision(&self, config: &DecisionConfig, labels: &[String]) -> Option<FrameDecision> {
        let mean = self.mean()?;
        if mean.len() != labels.len() || labels.is_empty() {
            return None;
        }
        let decision = decide_frame(config, labels, &mean);
        Some(if self.is_unfamiliar() {
            decision.unfamiliar()
        } else {
            decision
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decision, UncertainReason};

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
        bad.add(&[0.99, 0.01, 0.0, f32::INFINITY]);
        assert_eq!(
            bad.decision(&cfg, &labels()).unwrap().kind,
            Decision::Uncertain
        );

        let mut bad = FieldVotes::new(4);
        bad.add(&[0.99, 0.01, 0.0, 0.0]);
        bad.add(&[f32::NAN, 0.0, 0.0, 0.0]);
        assert_eq!(
            bad.decision(&cfg, &labels()).unwrap().kind,
            Decision::Uncertain
        );
    }

    #[test]
    fn a_field_whose_frames_are_mostly_unfamiliar_is_uncertain_for_that_reason() {
        let cfg = DecisionConfig::default();
        let blast = [0.0, 0.0, 0.01, 0.99];
        let mut field = FieldVotes::new(4);
        field.add_unfamiliar(&blast);
        field.add_unfamiliar(&blast);
        field.add(&blast);
        assert_eq!((field.classified(), field.unfamiliar()), (3, 2));
        assert!(field.is_unfamiliar());
        let d = field.decision(&cfg, &labels()).unwrap();
        assert_eq!(
            (d.kind, d.reason, d.label.as_str()),
            (
                Decision::Uncertain,
                Some(UncertainReason::Unfamiliar),
                "Pro"
            )
        );

        // Half unfamiliar is not a majority: the familiar frames decide, and the unfamiliar
        // frame's confident blast vote does not count.
        let mut half = FieldVotes::new(4);
        half.add(&[0.95, 0.05, 0.0, 0.0]);
        half.add_unfamiliar(&blast);
        assert!(!half.is_unfamiliar());
        let d = half.decision(&cfg, &labels()).unwrap();
        assert_eq!((d.kind, d.reason, d.class), (Decision::Normal, None, 0));
        assert!((d.confidence - 0.95).abs() < 1e-6);

        // Only unfamiliar frames: the record keeps their top class.
        let mut all = FieldVotes::new(4);
        all.add_unfamiliar(&[0.9, 0.1, 0.0, 0.0]);
        assert_eq!(all.mean().unwrap()[0], 0.9);
        assert_eq!(
            all.decision(&cfg, &labels()).unwrap().reason,
            Some(UncertainReason::Unfamiliar)
        );
    }
}
