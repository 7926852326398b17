//! The model at the device's operating point: each picture decided by the device's frame rule
//! ([`leukoscope_screening::decide_frame`]: a threshold on the top probability, then normal or
//! blast by label), and blast-vs-normal sensitivity, specificity and abstention counted from
//! those decisions.
//!
//! A picture's true kind is *normal* when its true label is one of the decision's
//! `normal_labels`, *blast* otherwise. A blast picture decided `blast` is detected whatever
//! subtype it was given (the slide verdict refers on blasts of any subtype). An abstention
//! (`uncertain`) on a blast picture is **not** a detection in the headline sensitivity: the
//! device does not count it as a blast. The same figures among the answered pictures only are
//! given beside it.
//!
//! For a model that scores unfamiliarity, a picture above its contract's threshold is decided
//! `uncertain` (reason `unfamiliar`, [`leukoscope_screening::decide_frame_with_familiarity`]):
//! an abstention like any other, also counted on its own ([`OperatingPoint::unfamiliar`],
//! [`ClassDecisions::rejected_unfamiliar`]). Without scores every figure is what it was.

use serde::{Deserialize, Serialize};

use leukoscope_screening::{
    Decision, DecisionConfig, SlideRule, decide_frame_with_familiarity, is_normal,
};

use crate::calibration::{Calibration, DEFAULT_BINS, reliability};
use crate::metrics::Proportion;
use crate::slide_simulation::{SimulationConfig, SlideSimulation, simulate_scored};

/// The device settings an evaluation is made at: the frame decision, the slide rule, how slides
/// are simulated, and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ScreeningSettings {
    /// The frame decision (`[decision]` of the device config).
    pub decision: DecisionConfig,
    /// The slide rule (`[slide.rule]`).
    pub rule: SlideRule,
    /// The slide simulation.
    pub simulation: SimulationConfig,
    /// Where the decision and rule came from, in words, for the report.
    pub settings_from: String,
}

impl Default for ScreeningSettings {
    /// The device's defaults ([`DecisionConfig::default`], [`SlideRule::default`]) and the
    /// default simulation.
    fn default() -> Self {
        ScreeningSettings {
            decision: DecisionConfig::default(),
            rule: SlideRule::default(),
            simulation: SimulationConfig::default(),
            settings_from: "the device defaults (DecisionConfig::default(), \
                            SlideRule::default()); no device config was read"
                .into(),
        }
    }
}

/// Everything a report states at the device's operating point: the blast-vs-normal figures,
/// the calibration, and the slide simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct ScreeningFigures {
    /// Sensitivity, specificity, abstention.
    pub operating_point: OperatingPoint,
    /// Reliability diagram and ECE.
    pub calibration: Calibration,
    /// Simulated slides.
    pub slide_simulation: SlideSimulation,
}

impl ScreeningFigures {
    /// The figures of `probabilities` (rows in `labels` order) against `truth` (true class
    /// indices) at `settings`.
    ///
    /// # Panics
    /// If a row's length differs from `labels` or a true class is out of range (check with
    /// [`crate::metrics::evaluate`] first).
    pub fn compute(
        labels: &[String],
        truth: &[usize],
        probabilities: &[Vec<f32>],
        settings: &ScreeningSettings,
    ) -> Self {
        Self::compute_scored(labels, truth, probabilities, None, settings)
    }

    /// [`compute`](Self::compute) for a model that scores unfamiliarity: `unfamiliar[i]` says
    /// whether picture `i` is above the contract's threshold (`None`: a model without the score,
    /// exactly [`compute`](Self::compute)).
    ///
    /// # Panics
    /// As [`compute`](Self::compute).
    pub fn compute_scored(
        labels: &[String],
        truth: &[usize],
        probabilities: &[Vec<f32>],
        unfamiliar: Option<&[bool]>,
        settings: &ScreeningSettings,
    ) -> Self {
        ScreeningFigures {
            operating_point: operating_point_scored(
                labels,
                truth,
                probabilities,
                unfamiliar,
                &settings.decision,
                &settings.settings_from,
            ),
            calibration: reliability(truth, probabilities, DEFAULT_BINS),
            slide_simulation: simulate_scored(
                labels,
                truth,
                probabilities,
                unfamiliar,
                &settings.decision,
                &settings.rule,
                &settings.simulation,
                &settings.settings_from,
            ),
        }
    }
}

/// How the pictures of one true class were decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassDecisions {
    /// The true class.
    pub label: String,
    /// Whether the class is a normal cell (one of the normal labels).
    pub normal: bool,
    /// Pictures of the class.
    pub pictures: u64,
    /// Decided `normal`.
    pub decided_normal: u64,
    /// Decided `blast`.
    pub decided_blast: u64,
    /// Decided `uncertain`.
    pub decided_uncertain: u64,
    /// The share decided `uncertain`.
    pub abstention: Proportion,
    /// Of the `uncertain` ones, the pictures rejected as unfamiliar (0 for a model without the
    /// score, and then left out of `report.json`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rejected_unfamiliar: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Blast-vs-normal figures at one operating point (`report.json` key `operating_point`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// The decision settings: threshold and normal labels.
    pub decision: DecisionConfig,
    /// Where the settings came from, in words (a config file, a flag, the device defaults).
    pub settings_from: String,
    /// Blast pictures decided `blast`, over all blast pictures (an abstention is a miss).
    pub sensitivity: Proportion,
    /// Blast pictures decided `blast`, over the blast pictures not decided `uncertain`.
    pub sensitivity_answered: Proportion,
    /// Normal pictures decided `normal`, over all normal pictures (an abstention is not a
    /// correct all-clear).
    pub specificity: Proportion,
    /// Normal pictures decided `normal`, over the normal pictures not decided `uncertain`.
    pub specificity_answered: Proportion,
    /// Pictures decided `uncertain`, over all pictures.
    pub abstention: Proportion,
    /// Blast pictures decided `uncertain`, over blast pictures.
    pub abstention_blast: Proportion,
    /// Normal pictures decided `uncertain`, over normal pictures.
    pub abstention_normal: Proportion,
    /// Per true class, in label order.
    pub per_class: Vec<ClassDecisions>,
    /// Pictures rejected as unfamiliar (decided `uncertain` for that reason), over all
    /// pictures; `None` for a model without the score (and then left out of `report.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfamiliar: Option<Proportion>,
}

/// The decisions of `probabilities` (rows in `labels` order, paired with `truth`, the true class
/// indices) under `decision`, counted against the truth.
///
/// # Panics
/// If a row's length differs from `labels` or a true class is out of range (the metrics,
/// computed first from the same rows, refuse both).
pub fn operating_point(
    labels: &[String],
    truth: &[usize],
    probabilities: &[Vec<f32>],
    decision: &DecisionConfig,
    settings_from: &str,
) -> OperatingPoint {
    operating_point_scored(labels, truth, probabilities, None, decision, settings_from)
}

/// [`operating_point`] for a model that scores unfamiliarity: `unfamiliar[i]` says whether
/// picture `i` is above the contract's threshold (an abstention, also counted as rejected as
/// unfamiliar); `None` is exactly [`operating_point`].
///
/// # Panics
/// As [`operating_point`].
pub fn operating_point_scored(
    labels: &[String],
    truth: &[usize],
    probabilities: &[Vec<f32>],
    unfamiliar: Option<&[bool]>,
    decision: &DecisionConfig,
    settings_from: &str,
) -> OperatingPoint {
    let mut per_class: Vec<ClassDecisions> = labels
        .iter()
        .map(|l| ClassDecisions {
            label: l.clone(),
            normal: is_normal(&decision.normal_labels, l),
            pictures: 0,
            decided_normal: 0,
            decided_blast: 0,
            decided_uncertain: 0,
            abstention: Proportion::new(0, 0),
            rejected_unfamiliar: 0,
        })
        .collect();
    for (i, (&t, row)) in truth.iter().zip(probabilities).enumerate() {
        let c = &mut per_class[t];
        c.pictures += 1;
        let rejected = unfamiliar.is_some_and(|u| u.get(i).copied().unwrap_or(false));
        match decide_frame_with_familiarity(decision, labels, row, rejected).kind {
            Decision::Normal => c.decided_normal += 1,
            Decision::Blast => c.decided_blast += 1,
            Decision::Uncertain => c.decided_uncertain += 1,
        }
        c.rejected_unfamiliar += u64::from(rejected);
    }
    for c in &mut per_class {
        c.abstention = Proportion::new(c.decided_uncertain, c.pictures);
    }
    let sum = |normal: bool, f: fn(&ClassDecisions) -> u64| -> u64 {
        per_class.iter().filter(|c| c.normal == normal).map(f).sum()
    };
    let blast = sum(false, |c| c.pictures);
    let blast_hit = sum(false, |c| c.decided_blast);
    let blast_unsure = sum(false, |c| c.decided_uncertain);
    let normal = sum(true, |c| c.pictures);
    let normal_hit = sum(true, |c| c.decided_normal);
    let normal_unsure = sum(true, |c| c.decided_uncertain);
    OperatingPoint {
        decision: decision.clone(),
        settings_from: settings_from.to_string(),
        sensitivity: Proportion::new(blast_hit, blast),
        sensitivity_answered: Proportion::new(blast_hit, blast - blast_unsure),
        specificity: Proportion::new(normal_hit, normal),
        specificity_answered: Proportion::new(normal_hit, normal - normal_unsure),
        abstention: Proportion::new(blast_unsure + normal_unsure, blast + normal),
        abstention_blast: Proportion::new(blast_unsure, blast),
        abstention_normal: Proportion::new(normal_unsure, normal),
        unfamiliar: unfamiliar.map(|_| {
            Proportion::new(
                per_class.iter().map(|c| c.rejected_unfamiliar).sum(),
                blast + normal,
            )
        }),
        per_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["Benign", "Early", "Pre", "Pro"].map(String::from).to_vec()
    }

    fn row(class: usize, top: f32) -> Vec<f32> {
        let mut r = vec![(1.0 - top) / 3.0; 4];
        r[class] = top;
        r
    }

    #[test]
    fn abstentions_on_blasts_are_misses_in_the_headline_but_not_among_the_answered() {
        let mut truth = Vec::new();
        let mut probs = Vec::new();
        let mut add = |t: usize, r: Vec<f32>, n: usize| {
            for _ in 0..n {
                truth.push(t);
                probs.push(r.clone());
            }
        };
        // Benign: 8 normal, 1 uncertain, 1 called a blast.
        add(0, row(0, 0.95), 8);
        add(0, row(0, 0.6), 1);
        add(0, row(1, 0.9), 1);
        // Early: 5 called Pro (still a blast), 3 uncertain, 2 called Benign.
        add(1, row(3, 0.9), 5);
        add(1, row(1, 0.5), 3);
        add(1, row(0, 0.99), 2);
        // Pro: 10 right.
        add(3, row(3, 0.97), 10);
        let op = operating_point(
            &labels(),
            &truth,
            &probs,
            &DecisionConfig::default(),
            "test",
        );
        let pair = |p: &Proportion| (p.successes, p.n);
        assert_eq!(pair(&op.sensitivity), (15, 20));
        assert_eq!(pair(&op.sensitivity_answered), (15, 17));
        assert_eq!(pair(&op.specificity), (8, 10));
        assert_eq!(pair(&op.specificity_answered), (8, 9));
        assert_eq!(pair(&op.abstention), (4, 30));
        assert_eq!(pair(&op.abstention_blast), (3, 20));
        assert_eq!(pair(&op.abstention_normal), (1, 10));
        let early = &op.per_class[1];
        assert_eq!(
            (
                early.normal,
                early.decided_normal,
                early.decided_blast,
                early.decided_uncertain
            ),
            (false, 2, 5, 3)
        );
        assert_eq!(pair(&early.abstention), (3, 10));
        // A class without pictures has no abstention rate.
        assert_eq!(op.per_class[2].abstention.value, None);

        // At a threshold of 0.96 most become uncertain.
        let strict = DecisionConfig {
            min_confidence: 0.96,
            ..DecisionConfig::default()
        };
        let op = operating_point(&labels(), &truth, &probs, &strict, "test");
        assert_eq!(pair(&op.sensitivity), (10, 20));
        assert_eq!(pair(&op.specificity), (0, 10));
        assert_eq!(pair(&op.abstention), (18, 30));
    }

    #[test]
    fn unfamiliar_pictures_are_abstentions_counted_on_their_own() {
        // Benign: 6 confident, 4 confident but unfamiliar. Pro: 5 confident, 5 unfamiliar.
        let mut truth = vec![0; 10];
        truth.extend([3; 10]);
        let probs: Vec<Vec<f32>> = truth.iter().map(|&t| row(t, 0.97)).collect();
        let unfamiliar: Vec<bool> = (0..20).map(|i| (6..10).contains(&i) || i >= 15).collect();
        let op = operating_point_scored(
            &labels(),
            &truth,
            &probs,
            Some(&unfamiliar),
            &DecisionConfig::default(),
            "test",
        );
        let pair = |p: &Proportion| (p.successes, p.n);
        assert_eq!(pair(op.unfamiliar.as_ref().unwrap()), (9, 20));
        assert_eq!(pair(&op.abstention), (9, 20));
        assert_eq!(pair(&op.sensitivity), (5, 10));
        assert_eq!(pair(&op.sensitivity_answered), (5, 5));
        assert_eq!(pair(&op.specificity), (6, 10));
        let benign = &op.per_class[0];
        assert_eq!(
            (
                benign.decided_normal,
                benign.decided_uncertain,
                benign.rejected_unfamiliar
            ),
            (6, 4, 4)
        );
        assert_eq!(op.per_class[3].rejected_unfamiliar, 5);

        // Without scores: exactly the plain operating point, and report.json unchanged.
        let plain = operating_point(
            &labels(),
            &truth,
            &probs,
            &DecisionConfig::default(),
            "test",
        );
        let none = operating_point_scored(
            &labels(),
            &truth,
            &probs,
            None,
            &DecisionConfig::default(),
            "test",
        );
        assert_eq!(plain, none);
        assert_eq!(plain.unfamiliar, None);
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("unfamiliar").is_none());
        assert!(json["per_class"][0].get("rejected_unfamiliar").is_none());
        // All familiar: the same decisions as without scores, and a zero count.
        let familiar = operating_point_scored(
            &labels(),
            &truth,
            &probs,
            Some(&[false; 20]),
            &DecisionConfig::default(),
            "test",
        );
        assert_eq!(familiar.sensitivity, plain.sensitivity);
        assert_eq!(pair(familiar.unfamiliar.as_ref().unwrap()), (0, 20));
    }
}
