//! `edge evaluate --acceptance`: does the model hold on a clinic's own microscope? A site
//! photographs 50–100 fields it has labeled (blast or normal, or the model's own labels), and
//! the device's path judges them — the camera's declared pixel size, the quality gate, the
//! model with its unfamiliarity score, the frame rule — against fixed criteria ([`Criteria`]).
//! The answer is ACCEPTED or NOT ACCEPTED with every figure, its Wilson 95 % interval and the
//! bar it had to meet.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::evaluate::EvaluateError;
use leukoscope_model::metrics::Proportion;
use leukoscope_model::operating_point::{OperatingPoint, operating_point_scored};
use leukoscope_model::scale::fields::ScaleFraming;
use leukoscope_screening::{Decision, decide_frame_with_familiarity, is_normal};
use serde::Serialize;

use crate::config::RunConfig;
use crate::quality::QualityGate;

/// The bars a site's pictures must meet. The device's own validation split meets them with
/// room (see the model card); they are deliberately coarse, because 50–100 fields cannot
/// measure a rate finer than a few percent.
#[derive(Debug, Clone, Serialize)]
pub struct Criteria {
    /// Pictures the model judged (after the quality gate), at least.
    pub min_pictures: u64,
    /// Blast pictures and normal pictures, each at least.
    pub min_per_group: u64,
    /// Blast pictures decided `blast` (uncertain counts as not found), at least.
    pub min_sensitivity: f64,
    /// Blast pictures confidently decided `normal` — the error that clears a sick slide — at most.
    pub max_missed_blast: f64,
    /// Normal pictures decided `normal` (uncertain counts as not cleared), at least.
    pub min_specificity: f64,
    /// Pictures decided `uncertain` for any reason, at most.
    pub max_abstention: f64,
    /// Pictures the model finds unfamiliar (unlike its training pictures), at most.
    pub max_unfamiliar: f64,
    /// Readable pictures the quality gate refuses whole, at most.
    pub max_refused: f64,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria {
            min_pictures: 50,
            min_per_group: 20,
            min_sensitivity: 0.90,
            max_missed_blast: 0.02,
            min_specificity: 0.85,
            max_abstention: 0.10,
            max_unfamiliar: 0.10,
            max_refused: 0.20,
        }
    }
}

/// One criterion: what was measured against what was required.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The measured figure (with its interval, when it is a proportion).
    pub measured: String,
    /// The bar.
    pub required: String,
    /// Whether the bar is met.
    pub met: bool,
}

/// The site's verdict on the model.
#[derive(Debug, Clone, Serialize)]
pub struct Acceptance {
    /// The model file.
    pub model: PathBuf,
    /// The site's labeled folder.
    pub data: PathBuf,
    /// How the pictures were framed: the declared pixel size, or the centre crop.
    pub framing: String,
    /// Readable pictures that the quality gate refused whole (path, reason).
    pub refused: Vec<(PathBuf, String)>,
    /// Unreadable pictures (path, reason).
    pub unreadable: Vec<(PathBuf, String)>,
    /// The device's decisions on the judged pictures.
    pub operating_point: OperatingPoint,
    /// Blast pictures confidently decided normal.
    pub missed_blast: Proportion,
    /// The pictures decided wrongly with confidence (path, true group, decided label): the ones
    /// to look at first.
    pub confidently_wrong: Vec<(PathBuf, String, String)>,
    /// The criteria in order.
    pub checks: Vec<Check>,
    /// Every criterion met.
    pub accepted: bool,
}

/// The labeled pictures of a site folder, as (path, label index of `labels`): subfolders
/// named by the model's labels, or `blast` and `normal` when the site knows only that (they
/// are counted as the model's first blast label and first normal label: only blast or normal
/// is judged).
pub fn site_files(
    data: &Path,
    labels: &[String],
    normal_labels: &[String],
) -> Result<Vec<(PathBuf, usize)>> {
    let is_normal = |l: &String| is_normal(normal_labels, l);
    let first_normal = labels.iter().position(is_normal);
    let first_blast = labels.iter().position(|l| !is_normal(l));
    let mut folders: Vec<(String, PathBuf)> = std::fs::read_dir(data)
        .with_context(|| format!("{}: cannot read the site folder", data.display()))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    folders.sort();
    if folders.is_empty() {
        bail!(
            "{}: no subfolders; put the labeled pictures in `blast/` and `normal/` (or in \
             folders named by the model's labels {labels:?})",
            data.display()
        );
    }
    let mut files = Vec::new();
    for (name, path) in folders {
        let index = match labels.iter().position(|l| *l == name) {
            Some(i) => Some(i),
            None if name.eq_ignore_ascii_case("blast") => first_blast,
            None if name.eq_ignore_ascii_case("normal") => first_normal,
            None => bail!(
                "{}: `{name}` is neither `blast`, `normal` nor a label of the model {labels:?}",
                data.display()
            ),
        };
        let Some(index) = index else {
            bail!(
                "{}: `{name}` cannot be judged: the model has no {name} label",
                data.display()
            );
        };
        files.extend(
            leukoscope_model::images::expand_paths(&[path])
                .into_iter()
                .map(|p| (p, index)),
        );
    }
    Ok(files)
}

/// Judges the site folder `data` with `model` as a device with `config` would (its
/// `[decision]`, `[quality]`), framing each picture with `framing` (the camera's declared
/// pixel size; `None`: the centre crop), against `criteria`.
pub fn judge(
    model: &OnnxClassifier,
    config: &RunConfig,
    data: &Path,
    framing: Option<ScaleFraming>,
    criteria: &Criteria,
) -> Result<Acceptance> {
    let contract = model.contract();
    let files = site_files(data, &contract.labels, &config.decision.normal_labels)?;
    let mut gate = QualityGate::new(config.quality.clone());
    let mut refuse = |img: &image::RgbImage| {
        gate.assess(img)
            .1
            .map(|r| format!("quality gate: {}", r.as_str()))
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("judging {} pictures", files.len()));
    let e = leukoscope_model::evaluate::evaluate_files_gated(model, &files, framing, &mut refuse);
    bar.finish_and_clear();
    // Nothing passed the gate: a verdict (refused 100 %), not an error.
    let (pictures, truth, probabilities, unfamiliar, refused, skipped) = match e {
        Ok(e) => {
            let unfamiliar = e.unfamiliar(contract);
            (
                e.pictures,
                e.truth,
                e.probabilities,
                unfamiliar,
                e.refused,
                e.skipped,
            )
        }
        Err(EvaluateError::AllRefused { refused, skipped }) => {
            let unfamiliar = contract.unfamiliarity.as_ref().map(|_| Vec::new());
            (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                unfamiliar,
                refused,
                skipped,
            )
        }
        Err(e) => return Err(e.into()),
    };
    let op = operating_point_scored(
        &contract.labels,
        &truth,
        &probabilities,
        unfamiliar.as_deref(),
        &config.decision,
        "the device config's [decision]",
    );
    let mut confidently_wrong = Vec::new();
    for (i, (path, &t)) in pictures.iter().zip(&truth).enumerate() {
        let rejected = unfamiliar.as_ref().is_some_and(|u| u[i]);
        let d = decide_frame_with_familiarity(
            &config.decision,
            &contract.labels,
            &probabilities[i],
            rejected,
        );
        let truly_normal = is_normal(&config.decision.normal_labels, &contract.labels[t]);
        let wrong = match d.kind {
            Decision::Normal => !truly_normal,
            Decision::Blast => truly_normal,
            Decision::Uncertain => false,
        };
        if wrong {
            let group = if truly_normal { "normal" } else { "blast" };
            confidently_wrong.push((path.clone(), group.to_string(), d.label.clone()));
        }
    }
    let missed_blast = missed_blast(&op);
    let readable = (truth.len() + refused.len()) as u64;
    let refused_share = Proportion::new(refused.len() as u64, readable);
    let checks = checks(
        criteria,
        &op,
        &missed_blast,
        &refused_share,
        truth.len() as u64,
    );
    let accepted = checks.iter().all(|c| c.met);
    Ok(Acceptance {
        model: model.path().to_path_buf(),
        data: data.to_path_buf(),
        framing: match framing {
            Some(f) => format!(
                "pictures declared at {} µm/px, resampled to the model's {} µm/px and cut into \
                 fields (a picture's probabilities are the mean of its gated fields')",
                f.camera_um_per_px, f.model_um_per_px
            ),
            None => "no pixel size declared: the centre of each picture, as the device does \
                     without [source] um_per_px"
                .into(),
        },
        refused,
        unreadable: skipped,
        operating_point: op,
        missed_blast,
        confidently_wrong,
        checks,
        accepted,
    })
}

/// Blast pictures confidently decided `normal`, of all blast pictures.
fn missed_blast(op: &OperatingPoint) -> Proportion {
    let missed = op
        .per_class
        .iter()
        .filter(|c| !c.normal)
        .map(|c| c.decided_normal)
        .sum();
    Proportion::new(missed, op.sensitivity.n)
}

fn percent(p: &Proportion) -> String {
    match p.value {
        Some(v) => format!(
            "{:.1} % ({}/{}; {:.1}–{:.1})",
            100.0 * v,
            p.successes,
            p.n,
            100.0 * p.low,
            100.0 * p.high
        ),
        None => "– (none)".into(),
    }
}

fn checks(
    c: &Criteria,
    op: &OperatingPoint,
    missed_blast: &Proportion,
    refused: &Proportion,
    judged: u64,
) -> Vec<Check> {
    // An empty group cannot meet a bar: `value` is None there.
    let at_least = |name: &str, p: &Proportion, bar: f64| Check {
        name: name.into(),
        measured: percent(p),
        required: format!("≥ {:.0} %", 100.0 * bar),
        met: p.value.is_some_and(|v| v >= bar),
    };
    let at_most = |name: &str, p: &Proportion, bar: f64| Check {
        name: name.into(),
        measured: percent(p),
        required: format!("≤ {:.0} %", 100.0 * bar),
        met: p.value.is_some_and(|v| v <= bar),
    };
    let mut checks = vec![
        Check {
            name: "pictures judged".into(),
            measured: judged.to_string(),
            required: format!("≥ {}", c.min_pictures),
            met: judged >= c.min_pictures,
        },
        Check {
            name: "blast pictures / normal pictures".into(),
            measured: format!("{} / {}", op.sensitivity.n, op.specificity.n),
            required: format!("≥ {} each", c.min_per_group),
            met: op.sensitivity.n >= c.min_per_group && op.specificity.n >= c.min_per_group,
        },
        at_least(
            "blast sensitivity (uncertain = not found)",
            &op.sensitivity,
            c.min_sensitivity,
        ),
        at_most(
            "blast pictures confidently called normal",
            missed_blast,
            c.max_missed_blast,
        ),
        at_least(
            "specificity (uncertain = not cleared)",
            &op.specificity,
            c.min_specificity,
        ),
        at_most("uncertain, any reason", &op.abstention, c.max_abstention),
    ];
    if let Some(u) = &op.unfamiliar {
        checks.push(at_most("unfamiliar to the model", u, c.max_unfamiliar));
    }
    checks.push(at_most(
        "refused by the quality gate",
        refused,
        c.max_refused,
    ));
    checks
}

impl Acceptance {
    /// The verdict, the criteria and what to do next, as Markdown.
    pub fn report(&self) -> String {
        let mut s = format!(
            "# Site acceptance: {}\n\n**{}**\n\nModel `{}`, site pictures `{}`; {}.\n\n",
            if self.accepted {
                "ACCEPTED"
            } else {
                "NOT ACCEPTED"
            },
            if self.accepted {
                "Every criterion is met: the model may be used on this microscope, with its \
                 settings as evaluated."
            } else {
                "At least one criterion is not met: do not screen with this model on this \
                 microscope until it is (see the model card: check the pixel size and the \
                 pictures, or fine-tune on this site's pictures with `trainer fit --init-from`)."
            },
            self.model.display(),
            self.data.display(),
            self.framing
        );
        s.push_str("| criterion | measured (Wilson 95 %) | required | met |\n|---|---|---|---|\n");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                c.name,
                c.measured,
                c.required,
                if c.met { "yes" } else { "**no**" }
            );
        }
        if self
            .operating_point
            .per_class
            .iter()
            .any(|c| c.pictures > 0)
        {
            s.push_str(
                "\n| label | pictures | decided normal | decided blast | uncertain | of which unfamiliar |\n\
                 |---|---:|---:|---:|---:|---:|\n",
            );
        }
        for c in self
            .operating_point
            .per_class
            .iter()
            .filter(|c| c.pictures > 0)
        {
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {} | {} | {} |",
                c.label,
                if c.normal { " (normal)" } else { " (blast)" },
                c.pictures,
                c.decided_normal,
                c.decided_blast,
                c.decided_uncertain,
                c.rejected_unfamiliar
            );
        }
        if !self.confidently_wrong.is_empty() {
            let _ = writeln!(
                s,
                "\nDecided wrongly with confidence ({}; look at these first):\n",
                self.confidently_wrong.len()
            );
            for (path, group, label) in &self.confidently_wrong {
                let _ = writeln!(s, "- `{}`: {group}, decided {label}", path.display());
            }
        }
        for (what, list) in [
            ("Refused by the quality gate", &self.refused),
            ("Unreadable", &self.unreadable),
        ] {
            if !list.is_empty() {
                let _ = writeln!(s, "\n{what} ({}, not judged):\n", list.len());
                for (path, reason) in list {
                    let _ = writeln!(s, "- `{}`: {reason}", path.display());
                }
            }
        }
        s
    }

    /// Writes `acceptance.md` and `acceptance.json` into the report folder `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        leukoscope_model::durable::create_dir_all(out)?;
        leukoscope_model::durable::write_atomic(
            &out.join("acceptance.md"),
            self.report().as_bytes(),
        )
        .context("cannot write acceptance.md")?;
        leukoscope_model::durable::write_atomic(
            &out.join("acceptance.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
        .context("cannot write acceptance.json")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(blast: (u64, u64, u64), normal: (u64, u64, u64)) -> OperatingPoint {
        // (decided normal, decided blast, uncertain) per group, as probabilities that decide so.
        let labels: Vec<String> = ["Benign", "Early"].map(String::from).to_vec();
        let mut truth = Vec::new();
        let mut probs = Vec::new();
        for (class, (n, b, u)) in [(1usize, blast), (0usize, normal)] {
            for (count, row) in [(n, [0.95, 0.05]), (b, [0.05, 0.95]), (u, [0.5, 0.5])] {
                for _ in 0..count {
                    truth.push(class);
                    probs.push(row.to_vec());
                }
            }
        }
        operating_point_scored(&labels, &truth, &probs, None, &Default::default(), "test")
    }

    fn verdict(o: &OperatingPoint) -> Vec<bool> {
        let judged = o.sensitivity.n + o.specificity.n;
        checks(
            &Criteria::default(),
            o,
            &missed_blast(o),
            &Proportion::new(0, judged),
            judged,
        )
        .iter()
        .map(|c| c.met)
        .collect()
    }

    #[test]
    fn a_site_like_the_validation_split_is_accepted() {
        let o = op((0, 29, 1), (29, 0, 1));
        assert!(verdict(&o).iter().all(|m| *m), "{:?}", verdict(&o));
    }

    #[test]
    fn one_confidently_missed_blast_in_thirty_fails_and_so_do_small_or_lopsided_sets() {
        // 1 of 30 blasts cleared = 3.3 % > 2 %: that criterion alone fails.
        let v = verdict(&op((1, 29, 0), (30, 0, 0)));
        assert_eq!(v, [true, true, true, false, true, true, true]);
        // 10 normal pictures: too few to judge specificity.
        let v = verdict(&op((0, 45, 0), (10, 0, 0)));
        assert!(!v[1] && v[0]);
        // 40 pictures in all.
        assert!(!verdict(&op((0, 20, 0), (20, 0, 0)))[0]);
        // A third uncertain: sensitivity and abstention fail.
        let v = verdict(&op((0, 20, 10), (20, 0, 10)));
        assert!(!v[2] && !v[4] && !v[5]);
    }

    #[test]
    fn site_folders_may_be_blast_and_normal_or_the_model_labels_but_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let labels: Vec<String> = ["Benign", "Early", "Pre"].map(String::from).to_vec();
        let normal = vec!["Benign".to_string()];
        for (folder, name) in [("blast", "a.png"), ("normal", "b.png"), ("Pre", "c.png")] {
            std::fs::create_dir_all(dir.path().join(folder)).unwrap();
            image::RgbImage::new(4, 4)
                .save(dir.path().join(folder).join(name))
                .unwrap();
        }
        let files = site_files(dir.path(), &labels, &normal).unwrap();
        let classes: Vec<usize> = files.iter().map(|(_, c)| *c).collect();
        assert_eq!(classes, [2, 1, 0], "{files:?}"); // Pre, blast, normal (byte order)
        std::fs::create_dir_all(dir.path().join("lymphocyte")).unwrap();
        let e = site_files(dir.path(), &labels, &normal).unwrap_err();
        assert!(e.to_string().contains("`lymphocyte` is neither"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = site_files(empty.path(), &labels, &normal).unwrap_err();
        assert!(e.to_string().contains("blast/"), "{e}");
    }
}
