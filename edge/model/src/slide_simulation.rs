//! What the slide rule makes of the model: slides assembled from evaluated pictures.
//!
//! The data sets hold single pictures, not slides, so slides are simulated: each slide is
//! `fields_per_slide` (K) pictures drawn from the evaluated ones, each picture one field (one
//! classified frame), decided with the device's frame rule and tallied with the device's
//! [`SlideTally`] under its [`SlideRule`] — the code `edge run` uses. Conditions:
//!
//! - **benign**: K normal pictures (true label one of the normal labels);
//! - **blast share b**, for each configured b: `round(b·K)` blast pictures (at least one) and
//!   normal pictures for the rest of the K fields.
//!
//! Every field is an independent draw from its pool (with replacement: a bootstrap of the
//! per-field error rates). Drawing without replacement would tie the slides to the few pictures
//! of a split: with 44 normal pictures and 30 fields, a single normal picture called a blast
//! could never make the two blast fields that refer, however often the model errs like that on
//! real fields. Draws are seeded ([`SplitMix64`]), so a simulation is reproducible from its seed.
//!
//! Slide sensitivity is the share of blast slides referred; slide specificity the share of
//! benign slides called `no_blasts`. Their Wilson intervals count simulation noise only: the
//! slides reuse the same few pictures, which are themselves a sample, so the intervals are
//! narrower than the uncertainty about real slides. Real slides also differ from these (fields
//! of one patient are alike; a smear has far more normal cells than blasts at low counts).

use serde::{Deserialize, Serialize};

use leukoscope_screening::{DecisionConfig, FieldKey, SlideRule, SlideTally, Verdict};
use leukoscope_screening::{decide_frame_with_familiarity, is_normal};

use crate::metrics::Proportion;
use crate::seeded::SplitMix64;

/// How slides are simulated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulationConfig {
    /// Fields (pictures) per slide, K.
    pub fields_per_slide: u32,
    /// Slides per condition, N.
    pub slides_per_condition: u32,
    /// Blast shares b of the blast-slide conditions (0 < b ≤ 1).
    pub blast_shares: Vec<f64>,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            fields_per_slide: 30,
            slides_per_condition: 1000,
            blast_shares: vec![0.1, 0.3, 1.0],
            seed: 17,
        }
    }
}

/// The verdicts of one simulated condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConditionOutcome {
    /// `benign` or `blast share 0.10`.
    pub name: String,
    /// b: the share of blast fields asked for (0 for benign slides).
    pub blast_share: f64,
    /// Blast fields per slide (`round(b·K)`, at least one for a blast slide).
    pub blast_fields: u32,
    /// Normal fields per slide.
    pub normal_fields: u32,
    /// Slides simulated.
    pub slides: u64,
    /// The right verdict: `refer` for a blast slide, `no_blasts` for a benign one (slide
    /// sensitivity or specificity).
    pub correct: Proportion,
    /// Slides referred.
    pub refer: Proportion,
    /// Slides called `no_blasts`.
    pub no_blasts: Proportion,
    /// Slides called `uncertain`.
    pub uncertain: Proportion,
    /// Slides called `insufficient`.
    pub insufficient: Proportion,
    /// Slides called `unfamiliar`; `None` for a model without an unfamiliarity score (and then
    /// left out of `report.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfamiliar: Option<Proportion>,
}

/// A slide-level simulation (`report.json` key `slide_simulation`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlideSimulation {
    /// How slides were drawn.
    pub config: SimulationConfig,
    /// The slide rule applied.
    pub rule: SlideRule,
    /// The frame decision applied to every field.
    pub decision: DecisionConfig,
    /// Where the rule and decision came from, in words.
    pub settings_from: String,
    /// Normal pictures drawn from.
    pub normal_pictures: u64,
    /// Blast pictures drawn from.
    pub blast_pictures: u64,
    /// Benign slides; `None` without normal pictures.
    pub benign: Option<ConditionOutcome>,
    /// Blast slides per blast share, in the configured order; a share whose pictures are
    /// missing is left out (see `missing`).
    pub blast: Vec<ConditionOutcome>,
    /// Conditions that could not be simulated, and why.
    pub missing: Vec<String>,
}

impl SlideSimulation {
    /// Slide sensitivity at each blast share: (b, share of blast slides referred).
    pub fn sensitivity(&self) -> impl Iterator<Item = (f64, &Proportion)> {
        self.blast.iter().map(|c| (c.blast_share, &c.correct))
    }

    /// Slide specificity: the share of benign slides called `no_blasts`.
    pub fn specificity(&self) -> Option<&Proportion> {
        self.benign.as_ref().map(|c| &c.correct)
    }
}

/// Simulates slides from evaluated pictures: `probabilities` (rows in `labels` order) paired
/// with `truth` (true class indices). See the module documentation.
///
/// # Panics
/// If a row's length differs from `labels` or a true class is out of range.
pub fn simulate(
    labels: &[String],
    truth: &[usize],
    probabilities: &[Vec<f32>],
    decision: &DecisionConfig,
    rule: &SlideRule,
    config: &SimulationConfig,
    settings_from: &str,
) -> SlideSimulation {
    simulate_scored(
        labels,
        truth,
        probabilities,
        None,
        decision,
        rule,
        config,
        settings_from,
    )
}

/// [`simulate`] for a model that scores unfamiliarity: `unfamiliar[i]` says whether picture `i`
/// is above the contract's threshold, so a field drawn from it is unfamiliar (uncertain, never
/// counted) and slides can be called `unfamiliar`; `None` is exactly [`simulate`].
///
/// # Panics
/// As [`simulate`].
#[allow(clippy::too_many_arguments)]
pub fn simulate_scored(
    labels: &[String],
    truth: &[usize],
    probabilities: &[Vec<f32>],
    unfamiliar: Option<&[bool]>,
    decision: &DecisionConfig,
    rule: &SlideRule,
    config: &SimulationConfig,
    settings_from: &str,
) -> SlideSimulation {
    let (mut normal, mut blast) = (Vec::new(), Vec::new());
    for (i, &t) in truth.iter().enumerate().take(probabilities.len()) {
        if is_normal(&decision.normal_labels, &labels[t]) {
            normal.push(i);
        } else {
            blast.push(i);
        }
    }
    let k = config.fields_per_slide;
    let run = |index: u64, name: String, blast_share: f64, blast_fields: u32| {
        // One stream per condition, so adding a condition leaves the others' draws unchanged.
        let mut rng = SplitMix64::new(config.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut counts = [0u64; 5];
        let mut picks = Vec::with_capacity(k as usize);
        for _ in 0..config.slides_per_condition {
            picks.clear();
            draw(&mut rng, &blast, blast_fields as usize, &mut picks);
            draw(&mut rng, &normal, (k - blast_fields) as usize, &mut picks);
            let mut tally = SlideTally::new(labels);
            for (field, &i) in picks.iter().enumerate() {
                let p = &probabilities[i];
                let rejected = unfamiliar.is_some_and(|u| u.get(i).copied().unwrap_or(false));
                let d = decide_frame_with_familiarity(decision, labels, p, rejected);
                tally.add(Some(FieldKey::whole(field as u32 + 1)), &d, p);
            }
            let slot = match tally.outcome(rule, decision).verdict {
                Verdict::Refer => 0,
                Verdict::NoBlasts => 1,
                Verdict::Uncertain => 2,
                Verdict::Insufficient | Verdict::Incomplete => 3,
                Verdict::Unfamiliar => 4,
            };
            counts[slot] += 1;
        }
        let n = u64::from(config.slides_per_condition);
        let p = |c: u64| Proportion::new(c, n);
        ConditionOutcome {
            name,
            blast_share,
            blast_fields,
            normal_fields: k - blast_fields,
            slides: n,
            correct: p(if blast_fields > 0 {
                counts[0]
            } else {
                counts[1]
            }),
            refer: p(counts[0]),
            no_blasts: p(counts[1]),
            uncertain: p(counts[2]),
            insufficient: p(counts[3]),
            unfamiliar: unfamiliar.map(|_| p(counts[4])),
        }
    };

    let mut missing = Vec::new();
    let benign = if normal.is_empty() {
        missing.push("benign slides: no normal picture".to_string());
        None
    } else {
        Some(run(0, "benign".into(), 0.0, 0))
    };
    let mut blast_outcomes = Vec::new();
    for (i, &b) in config.blast_shares.iter().enumerate() {
        let b = if b.is_finite() {
            b.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let blast_fields = ((b * f64::from(k)).round() as u32).clamp(1.min(k), k);
        let name = format!("blast share {b:.2}");
        if blast.is_empty() {
            missing.push(format!("{name}: no blast picture"));
        } else if blast_fields < k && normal.is_empty() {
            missing.push(format!("{name}: no normal picture for the other fields"));
        } else {
            blast_outcomes.push(run(i as u64 + 1, name, b, blast_fields));
        }
    }
    SlideSimulation {
        config: config.clone(),
        rule: rule.clone(),
        decision: decision.clone(),
        settings_from: settings_from.to_string(),
        normal_pictures: normal.len() as u64,
        blast_pictures: blast.len() as u64,
        benign,
        blast: blast_outcomes,
        missing,
    }
}

/// Appends `count` independent picks from `pool` (with replacement) to `out`.
fn draw(rng: &mut SplitMix64, pool: &[usize], count: usize, out: &mut Vec<usize>) {
    if pool.is_empty() {
        return;
    }
    out.extend((0..count).map(|_| pool[rng.below(pool.len() as u64) as usize]));
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

    /// 40 pictures of each class, each given `predict(true class, index)`.
    fn pictures(predict: impl Fn(usize, usize) -> Vec<f32>) -> (Vec<usize>, Vec<Vec<f32>>) {
        let truth: Vec<usize> = (0..160).map(|i| i % 4).collect();
        let probs = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| predict(t, i))
            .collect();
        (truth, probs)
    }

    fn sim(truth: &[usize], probs: &[Vec<f32>], config: &SimulationConfig) -> SlideSimulation {
        simulate(
            &labels(),
            truth,
            probs,
            &DecisionConfig::default(),
            &SlideRule::default(),
            config,
            "test",
        )
    }

    fn small() -> SimulationConfig {
        SimulationConfig {
            slides_per_condition: 200,
            ..SimulationConfig::default()
        }
    }

    #[test]
    fn a_perfect_classifier_refers_every_blast_slide_and_clears_every_benign_one() {
        let (truth, probs) = pictures(|t, _| row(t, 0.99));
        let s = sim(&truth, &probs, &small());
        assert_eq!((s.normal_pictures, s.blast_pictures), (40, 120));
        let benign = s.benign.as_ref().unwrap();
        assert_eq!((benign.correct.successes, benign.correct.n), (200, 200));
        assert_eq!(s.specificity().unwrap().value, Some(1.0));
        assert_eq!(s.blast.len(), 3);
        for (b, sens) in s.sensitivity() {
            assert_eq!(sens.value, Some(1.0), "b = {b}");
        }
        let fields: Vec<u32> = s.blast.iter().map(|c| c.blast_fields).collect();
        assert_eq!(fields, [3, 9, 30]);
        assert!(s.missing.is_empty());
    }

    #[test]
    fn a_classifier_that_abstains_on_everything_gives_uncertain_slides() {
        let (truth, probs) = pictures(|_, _| vec![0.25; 4]);
        let s = sim(&truth, &probs, &small());
        for c in s.benign.iter().chain(&s.blast) {
            assert_eq!(c.uncertain.value, Some(1.0), "{}", c.name);
            assert_eq!(c.correct.successes, 0, "{}", c.name);
        }
    }

    #[test]
    fn missed_blasts_lower_slide_sensitivity_at_low_blast_shares_first() {
        // Every other blast picture is called Benign: at b = 0.1 (3 blast fields) a slide is
        // referred only when at least 2 of its 3 blast fields are caught.
        let (truth, probs) = pictures(|t, i| {
            if t != 0 && (i / 4) % 2 == 0 {
                row(0, 0.95)
            } else {
                row(t, 0.95)
            }
        });
        let s = sim(&truth, &probs, &small());
        let sens: Vec<f64> = s.sensitivity().map(|(_, p)| p.value.unwrap()).collect();
        assert!(sens[0] > 0.2 && sens[0] < 0.8, "{sens:?}");
        assert_eq!(sens[2], 1.0, "{sens:?}");
        assert!(sens[0] < sens[1], "{sens:?}");
        assert_eq!(s.specificity().unwrap().value, Some(1.0));
    }

    #[test]
    fn too_few_fields_per_slide_are_insufficient_and_a_seed_gives_the_same_slides() {
        let (truth, probs) = pictures(|t, i| row(if i % 7 == 0 { 0 } else { t }, 0.9));
        let few = SimulationConfig {
            fields_per_slide: 5,
            ..small()
        };
        let s = sim(&truth, &probs, &few);
        assert_eq!(s.benign.as_ref().unwrap().insufficient.value, Some(1.0));
        assert_eq!(s, sim(&truth, &probs, &few));
    }

    #[test]
    fn conditions_without_their_pictures_are_listed_as_missing() {
        let truth = vec![1, 2, 3];
        let probs = vec![row(1, 0.9), row(2, 0.9), row(3, 0.9)];
        let s = sim(&truth, &probs, &small());
        assert_eq!(s.benign, None);
        // b = 1.0 needs no normal picture; the other shares do.
        assert_eq!(s.blast.len(), 1);
        assert_eq!(s.blast[0].refer.value, Some(1.0));
        assert_eq!(s.missing.len(), 3, "{:?}", s.missing);
    }

    #[test]
    fn one_false_blast_picture_can_refer_a_benign_slide_as_often_as_its_rate_says() {
        // 1 of 40 normal pictures is called a blast: each field of a benign slide is a false
        // blast with probability 1/40, and a slide of 30 fields is referred when at least 2 are:
        // 1 − (39/40)^30 − 30·(1/40)·(39/40)^29 = 0.1709.
        let (truth, probs) = pictures(|t, i| row(if i == 0 { 3 } else { t }, 0.95));
        let config = SimulationConfig {
            slides_per_condition: 4000,
            ..SimulationConfig::default()
        };
        let s = sim(&truth, &probs, &config);
        let refer = s.benign.unwrap().refer;
        assert!(
            refer.low < 0.1709 && 0.1709 < refer.high,
            "{refer:?} should cover 0.1709"
        );
    }

    #[test]
    fn draws_are_independent_picks_from_the_pool() {
        let mut rng = SplitMix64::new(1);
        let pool: Vec<usize> = (100..103).collect();
        let mut out = Vec::new();
        draw(&mut rng, &pool, 300, &mut out);
        assert_eq!(out.len(), 300);
        for p in &pool {
            let n = out.iter().filter(|&i| i == p).count();
            assert!((70..130).contains(&n), "{p}: {n} of 300");
        }
        draw(&mut rng, &[], 5, &mut out);
        assert_eq!(out.len(), 300);
    }

    #[test]
    fn mostly_unfamiliar_pictures_make_unfamiliar_slides_and_blasts_still_refer() {
        let (truth, probs) = pictures(|t, _| row(t, 0.99));
        // Every normal picture unfamiliar, every blast picture familiar.
        let unfamiliar: Vec<bool> = truth.iter().map(|&t| t == 0).collect();
        let s = simulate_scored(
            &labels(),
            &truth,
            &probs,
            Some(&unfamiliar),
            &DecisionConfig::default(),
            &SlideRule::default(),
            &small(),
            "test",
        );
        let benign = s.benign.as_ref().unwrap();
        assert_eq!(benign.unfamiliar.as_ref().unwrap().value, Some(1.0));
        assert_eq!(benign.correct.value, Some(0.0));
        // Blast slides: 3 of 30 familiar blast fields still refer (the safe direction).
        for c in &s.blast {
            assert_eq!(c.refer.value, Some(1.0), "{}", c.name);
            assert_eq!(c.unfamiliar.as_ref().unwrap().value, Some(0.0));
        }
        // Without scores: exactly the plain simulation.
        let plain = sim(&truth, &probs, &small());
        assert!(plain.benign.as_ref().unwrap().unfamiliar.is_none());
        assert_eq!(plain.benign.as_ref().unwrap().correct.value, Some(1.0));
    }
}
