//! A slide's frames and fields → its verdict.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, DecisionConfig, FrameDecision, UncertainReason, is_normal};
use crate::field::{FieldKey, FieldVotes};
use crate::verdict::Verdict;

/// How a slide's fields become a verdict (config section `[slide.rule]`; see the crate
/// documentation for the order). The keys of the frame-counting rule before fields were
/// tracked (`min_good_frames`, `refer_min_blast_frames`) are still accepted and mean the
/// same numbers of fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlideRule {
    /// Fewer good fields (with a frame that passed the quality gate) than this → INSUFFICIENT.
    #[serde(alias = "min_good_frames")]
    pub min_good_fields: u32,
    /// Blast fields needed to refer.
    #[serde(alias = "refer_min_blast_frames")]
    pub refer_min_blast_fields: u32,
    /// Blast fields / confident fields needed to refer (0..1).
    pub refer_min_blast_fraction: f64,
    /// Uncertain fields / good fields above this → UNCERTAIN (0..1).
    pub max_uncertain_fraction: f64,
    /// Unfamiliar fields / good fields above this → UNFAMILIAR (0..1): the model was not
    /// validated for pictures like these. Only a model that scores unfamiliarity makes
    /// unfamiliar fields.
    pub max_unfamiliar_fraction: f64,
}

impl Default for SlideRule {
    fn default() -> Self {
        SlideRule {
            min_good_fields: 10,
            refer_min_blast_fields: 2,
            refer_min_blast_fraction: 0.05,
            max_uncertain_fraction: 0.5,
            max_unfamiliar_fraction: 0.5,
        }
    }
}

/// Blast / confident: 0 when nothing was confident.
pub fn blast_fraction(blasts: u32, confident: u32) -> f64 {
    if confident == 0 {
        0.0
    } else {
        f64::from(blasts) / f64::from(confident)
    }
}

/// What a slide's fields add up to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FieldCounts {
    /// Good fields: fields with at least one frame that passed the quality gate.
    pub good: u32,
    /// Fields seen whose every frame was rejected by the quality gate.
    pub retake_only: u32,
    /// Good fields whose decision is uncertain (the unfamiliar ones included).
    pub uncertain: u32,
    /// Good fields that are uncertain because the model found most of their frames unfamiliar
    /// (a part of `uncertain`, never counted as normal or blast).
    #[serde(default)]
    pub unfamiliar: u32,
    /// Confident blast fields.
    pub blasts: u32,
    /// Confident fields per class, in label order.
    pub counts: Vec<u32>,
}

impl FieldCounts {
    /// Confident fields (normal + blast).
    pub fn confident(&self) -> u32 {
        self.good - self.uncertain
    }
}

/// Running counts of one slide session: every frame (for the record) and every field (for the
/// verdict).
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
    /// Good frames that are uncertain (below the confidence threshold, or unfamiliar).
    pub uncertain: u32,
    /// Good frames the model found unfamiliar (a part of `uncertain`).
    pub unfamiliar: u32,
    /// Confident blast frames.
    pub blasts: u32,
    fields: BTreeMap<FieldKey, FieldVotes>,
}

/// A slide's verdict with the figures behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The fields the verdict counted.
    pub fields: FieldCounts,
    /// Blast fields / confident fields (0 when there are none).
    pub blast_fraction: f64,
    /// The most frequent blast label among the fields, when the slide is referred (ties: first in
    /// label order).
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
            unfamiliar: 0,
            blasts: 0,
            fields: BTreeMap::new(),
        }
    }

    /// The labels, in count order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Counts a frame rejected by the quality gate, of `field` (`None`: between fields).
    pub fn add_retake(&mut self, field: Option<FieldKey>) {
        self.frames += 1;
        self.retakes += 1;
        if let Some(key) = field {
            self.votes(key).add_retake();
        }
    }

    /// Counts a classified frame of `field` (`None`: between fields, counted for no field) with
    /// its decision and probabilities. A decision uncertain for the reason
    /// [`UncertainReason::Unfamiliar`] counts as an unfamiliar frame (of its field too).
    pub fn add(
        &mut self,
        field: Option<FieldKey>,
        decision: &FrameDecision,
        probabilities: &[f32],
    ) {
        self.frames += 1;
        self.good += 1;
        let unfamiliar = decision.reason == Some(UncertainReason::Unfamiliar);
        if unfamiliar {
            self.unfamiliar += 1;
        }
        match decision.kind {
            Decision::Uncertain => self.uncertain += 1,
            Decision::Blast => {
                self.blasts += 1;
                self.counts[decision.class] += 1;
            }
            Decision::Normal => self.counts[decision.class] += 1,
        }
        if let Some(key) = field {
            let votes = self.votes(key);
            if unfamiliar {
                votes.add_unfamiliar(probabilities);
            } else {
                votes.add(probabilities);
            }
        }
    }

    fn votes(&mut self, key: FieldKey) -> &mut FieldVotes {
        let classes = self.labels.len();
        self.fields
            .entry(key)
            .or_insert_with(|| FieldVotes::new(classes))
    }

    /// Confident frames (normal + blast).
    pub fn confident(&self) -> u32 {
        self.good - self.uncertain
    }

    /// The fields seen so far, with their votes, in field order.
    pub fn field_votes(&self) -> impl Iterator<Item = (&FieldKey, &FieldVotes)> {
        self.fields.iter()
    }

    /// What the fields add up to under `config`.
    pub fn field_counts(&self, config: &DecisionConfig) -> FieldCounts {
        let mut out = FieldCounts {
            counts: vec![0; self.labels.len()],
            ..FieldCounts::default()
        };
        for votes in self.fields.values() {
            let Some(decision) = votes.decision(config, &self.labels) else {
                out.retake_only += 1;
                continue;
            };
            out.good += 1;
            if decision.reason == Some(UncertainReason::Unfamiliar) {
                out.unfamiliar += 1;
            }
            match decision.kind {
                Decision::Uncertain => out.uncertain += 1,
                Decision::Blast => {
                    out.blasts += 1;
                    out.counts[decision.class] += 1;
                }
                Decision::Normal => out.counts[decision.class] += 1,
            }
        }
        out
    }

    /// The verdict under `rule` for what was counted so far.
    pub fn outcome(&self, rule: &SlideRule, config: &DecisionConfig) -> SlideOutcome {
        let fields = self.field_counts(config);
        let blast_fraction = blast_fraction(fields.blasts, fields.confident());
        let share = |n: u32| {
            if fields.good == 0 {
                0.0
            } else {
                f64::from(n) / f64::from(fields.good)
            }
        };
        let uncertain_fraction = share(fields.uncertain);
        let unfamiliar_fraction = share(fields.unfamiliar);
        let verdict = if fields.good < rule.min_good_fields {
            Verdict::Insufficient
        } else if fields.blasts >= rule.refer_min_blast_fields
            && blast_fraction >= rule.refer_min_blast_fraction
        {
            Verdict::Refer
        } else if unfamiliar_fraction > rule.max_unfamiliar_fraction {
            Verdict::Unfamiliar
        } else if uncertain_fraction > rule.max_uncertain_fraction {
            Verdict::Uncertain
        } else {
            Verdict::NoBlasts
        };
        let dominant_subtype = (verdict == Verdict::Refer)
            .then(|| {
                self.labels
                    .iter()
                    .zip(&fields.counts)
                    .filter(|(label, n)| **n > 0 && !is_normal(&config.normal_labels, label))
                    .fold(None::<(&String, u32)>, |best, (label, &n)| match best {
                        Some((_, m)) if m >= n => best,
                        _ => Some((label, n)),
                    })
                    .map(|(label, _)| label.clone())
            })
            .flatten();
        SlideOutcome {
            verdict,
            fields,
            blast_fraction,
            dominant_subtype,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide_frame;

    fn labels() -> Vec<String> {
        ["Benign", "Early", "Pre", "Pro"].map(String::from).to_vec()
    }

    /// A tally of one-frame fields: `normal` benign fields, `blasts` (class, fields), `uncertain`
    /// fields and `retakes` retake-only fields, each frame `repeat` times.
    fn tally(
        normal: u32,
        blasts: &[(usize, u32)],
        uncertain: u32,
        retakes: u32,
        repeat: u32,
    ) -> SlideTally {
        let cfg = DecisionConfig::default();
        let mut t = SlideTally::new(&labels());
        let mut field = 0;
        let mut add = |t: &mut SlideTally, p: [f32; 4], n: u32| {
            for _ in 0..n {
                field += 1;
                for _ in 0..repeat {
                    t.add(
                        Some(FieldKey::whole(field)),
                        &decide_frame(&cfg, &labels(), &p),
                        &p,
                    );
                }
            }
        };
        add(&mut t, [0.99, 0.01, 0.0, 0.0], normal);
        for &(class, n) in blasts {
            let mut p = [0.03, 0.0, 0.0, 0.0];
            p[class] = 0.97;
            add(&mut t, p, n);
        }
        add(&mut t, [0.4, 0.3, 0.2, 0.1], uncertain);
        for i in 0..retakes {
            t.add_retake(Some(FieldKey::whole(10_000 + i)));
        }
        t
    }

    /// Adds `n` one-frame fields the model found unfamiliar (each frame a confident `class`
    /// vote), numbered from `first`.
    fn add_unfamiliar(t: &mut SlideTally, first: u32, n: u32, class: usize) {
        let cfg = DecisionConfig::default();
        let mut p = [0.01, 0.0, 0.0, 0.0];
        p[class] = 0.99;
        for i in 0..n {
            let d = crate::decide_frame_with_familiarity(&cfg, &labels(), &p, true);
            t.add(Some(FieldKey::whole(first + i)), &d, &p);
        }
    }

    fn verdict(t: &SlideTally) -> SlideOutcome {
        t.outcome(&SlideRule::default(), &DecisionConfig::default())
    }

    #[test]
    fn one_field_held_for_many_frames_is_one_field() {
        let t = tally(1, &[], 0, 0, 60);
        assert_eq!((t.frames, t.good), (60, 60));
        let o = verdict(&t);
        assert_eq!((o.fields.good, o.verdict), (1, Verdict::Insufficient));
        // Two frames of one blast field are one blast field: not enough to refer.
        let t = tally(20, &[(3, 1)], 0, 0, 2);
        assert_eq!(t.blasts, 2);
        assert_eq!(verdict(&t).verdict, Verdict::NoBlasts);
    }

    #[test]
    fn too_few_good_fields_is_insufficient_even_with_blasts() {
        let t = tally(3, &[(3, 5)], 0, 40, 1);
        let o = verdict(&t);
        assert_eq!((o.fields.good, o.fields.retake_only), (8, 40));
        assert_eq!(
            (o.verdict, o.dominant_subtype),
            (Verdict::Insufficient, None)
        );
    }

    #[test]
    fn blast_fields_above_both_floors_refer_with_the_dominant_subtype() {
        let t = tally(30, &[(1, 1), (3, 2)], 0, 0, 3);
        let o = verdict(&t);
        assert_eq!(o.verdict, Verdict::Refer);
        assert_eq!(o.dominant_subtype.as_deref(), Some("Pro"));
        assert!((o.blast_fraction - 3.0 / 33.0).abs() < 1e-12);
        assert_eq!(o.fields.counts, vec![30, 1, 0, 2]);
        assert_eq!(t.counts, vec![90, 3, 0, 6]);
    }

    #[test]
    fn a_single_blast_field_or_a_tiny_fraction_does_not_refer() {
        assert_eq!(
            verdict(&tally(30, &[(2, 1)], 0, 0, 1)).verdict,
            Verdict::NoBlasts
        );
        // 2 blast fields in 100 confident fields: 2 % < 5 %.
        assert_eq!(
            verdict(&tally(98, &[(2, 2)], 0, 0, 1)).verdict,
            Verdict::NoBlasts
        );
    }

    #[test]
    fn many_uncertain_fields_make_the_slide_uncertain_unless_blasts_were_seen() {
        assert_eq!(verdict(&tally(5, &[], 6, 0, 1)).verdict, Verdict::Uncertain);
        assert_eq!(verdict(&tally(5, &[], 5, 0, 1)).verdict, Verdict::NoBlasts);
        assert_eq!(
            verdict(&tally(5, &[(2, 2)], 10, 0, 1)).verdict,
            Verdict::Refer
        );
    }

    #[test]
    fn frames_between_fields_count_for_no_field() {
        let cfg = DecisionConfig::default();
        let mut t = SlideTally::new(&labels());
        let p = [0.0, 0.0, 0.01, 0.99];
        for _ in 0..50 {
            t.add(None, &decide_frame(&cfg, &labels(), &p), &p);
        }
        t.add_retake(None);
        let o = verdict(&t);
        assert_eq!((t.frames, t.blasts), (51, 50));
        assert_eq!(
            (o.fields.good, o.fields.blasts, o.verdict),
            (0, 0, Verdict::Insufficient)
        );
    }

    #[test]
    fn tiles_of_one_field_are_fields_of_their_own() {
        let cfg = DecisionConfig::default();
        let mut t = SlideTally::new(&labels());
        let p = [0.99, 0.01, 0.0, 0.0];
        for tile in 0..4 {
            let key = FieldKey {
                field: 1,
                tile: Some(tile),
            };
            t.add(Some(key), &decide_frame(&cfg, &labels(), &p), &p);
        }
        assert_eq!(t.field_counts(&cfg).good, 4);
    }

    #[test]
    fn the_old_frame_keys_are_still_accepted_as_field_counts() {
        let rule: SlideRule =
            serde_json::from_str(r#"{"min_good_frames": 7, "refer_min_blast_frames": 3}"#).unwrap();
        assert_eq!((rule.min_good_fields, rule.refer_min_blast_fields), (7, 3));
        let json = serde_json::to_value(&rule).unwrap();
        assert_eq!(json["min_good_fields"], 7);
    }

    #[test]
    fn unfamiliar_fields_are_uncertain_and_never_counted_as_cells() {
        let mut t = tally(5, &[], 0, 0, 1);
        // Confident blast votes, but unfamiliar: never a blast field.
        add_unfamiliar(&mut t, 100, 4, 3);
        assert_eq!((t.good, t.uncertain, t.unfamiliar, t.blasts), (9, 4, 4, 0));
        let o = verdict(&t);
        assert_eq!(
            (o.fields.good, o.fields.uncertain, o.fields.unfamiliar),
            (9, 4, 4)
        );
        assert_eq!((o.fields.blasts, o.fields.confident()), (0, 5));
        assert_eq!(o.fields.counts, vec![5, 0, 0, 0]);
    }

    #[test]
    fn the_verdict_order_is_insufficient_refer_unfamiliar_uncertain_no_blasts() {
        // Insufficient first: too few good fields, even when all are unfamiliar.
        let mut t = tally(0, &[], 0, 0, 1);
        add_unfamiliar(&mut t, 100, 9, 0);
        assert_eq!(verdict(&t).verdict, Verdict::Insufficient);

        // Most fields unfamiliar: UNFAMILIAR, not NO BLASTS or UNCERTAIN.
        let mut t = tally(4, &[], 0, 0, 1);
        add_unfamiliar(&mut t, 100, 6, 0);
        let o = verdict(&t);
        assert_eq!((o.verdict, o.fields.unfamiliar), (Verdict::Unfamiliar, 6));
        assert_eq!(o.verdict.as_str(), "unfamiliar");

        // Exactly half is not more than half: the other fields decide.
        let mut t = tally(5, &[], 0, 0, 1);
        add_unfamiliar(&mut t, 100, 5, 0);
        assert_eq!(verdict(&t).verdict, Verdict::NoBlasts);

        // Referring is the safe direction: enough confident blast fields among the familiar
        // ones still refer, however many fields are unfamiliar.
        let mut t = tally(20, &[(2, 2)], 0, 0, 1);
        add_unfamiliar(&mut t, 100, 40, 0);
        let o = verdict(&t);
        assert_eq!(
            (o.verdict, o.dominant_subtype.as_deref()),
            (Verdict::Refer, Some("Pre"))
        );

        // Unfamiliar fields are uncertain fields too: 3 unfamiliar + 3 low-confidence of 10
        // fields is not unfamiliar (3 of 10) but uncertain (6 of 10).
        let mut t = tally(4, &[], 3, 0, 1);
        add_unfamiliar(&mut t, 100, 3, 0);
        assert_eq!(verdict(&t).verdict, Verdict::Uncertain);

        // The threshold is the rule's.
        let mut t = tally(7, &[], 0, 0, 1);
        add_unfamiliar(&mut t, 100, 3, 0);
        let strict = SlideRule {
            max_unfamiliar_fraction: 0.2,
            ..SlideRule::default()
        };
        assert_eq!(verdict(&t).verdict, Verdict::NoBlasts);
        assert_eq!(
            t.outcome(&strict, &DecisionConfig::default()).verdict,
            Verdict::Unfamiliar
        );
    }

    #[test]
    fn a_rule_without_the_unfamiliar_key_gets_its_default() {
        let rule: SlideRule = serde_json::from_str(r#"{"max_uncertain_fraction": 0.4}"#).unwrap();
        assert_eq!(rule.max_unfamiliar_fraction, 0.5);
        let counts: FieldCounts = serde_json::from_str(
            r#"{"good": 3, "retake_only": 0, "uncertain": 1, "blasts": 0, "counts": [2, 0]}"#,
        )
        .unwrap();
        assert_eq!(counts.unfamiliar, 0);
    }
}
