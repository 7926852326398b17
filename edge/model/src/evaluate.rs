//! `edge evaluate`: a model on a clinic's own labeled folder, with the same metrics and report
//! as `trainer evaluate`, and the figures at the device's operating point
//! ([`ScreeningSettings`]: frame decision, slide rule, slide simulation).

use std::path::{Path, PathBuf};

use image::RgbImage;
use thiserror::Error;

use crate::classifier::OnnxClassifier;
use crate::evaluation_report::{ReportContext, ReportError, write_report_with};
use crate::images::expand_paths;
use crate::metrics::{ClassificationReport, MetricsError, evaluate};
use crate::onnx::ModelError;
use crate::operating_point::{ScreeningFigures, ScreeningSettings};
use crate::preprocess::{Preprocessor, decode_image};
use crate::scale::fields::{FieldCutter, ScaleFraming};
use crate::seeded::SplitMix64;

/// Why an evaluation could not be made.
#[derive(Debug, Error)]
pub enum EvaluateError {
    /// The folder is not a labeled folder of this model's classes.
    #[error("{}: {reason}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest cannot be read, or a picture it lists has changed.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The quality gate of [`evaluate_files_gated`] refused every readable picture.
    #[error(
        "the quality gate refused every readable picture ({} of them; first: {})",
        refused.len(),
        refused.first().map_or("", |r| r.1.as_str())
    )]
    AllRefused {
        /// The refused pictures (path, reason).
        refused: Vec<(PathBuf, String)>,
        /// The unreadable ones (path, reason).
        skipped: Vec<(PathBuf, String)>,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The metrics could not be computed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Result of an evaluation.
pub struct Evaluation {
    /// The metrics.
    pub report: ClassificationReport,
    /// Images that could not be read (path, reason); they are not counted.
    pub skipped: Vec<(PathBuf, String)>,
    /// Each counted picture's file, in the order of `truth`.
    pub pictures: Vec<PathBuf>,
    /// The true class of each counted picture.
    pub truth: Vec<usize>,
    /// The model's probabilities for each counted picture, in label order.
    pub probabilities: Vec<Vec<f32>>,
    /// The model's unfamiliarity score for each counted picture (`None` for a model without
    /// one).
    pub unfamiliarity: Vec<Option<f32>>,
    /// The figures at the device's operating point, when they were computed (the report's).
    pub screening: Option<ScreeningFigures>,
    /// Pictures the quality gate refused whole (path, the gate's reason); not counted
    /// ([`evaluate_files_gated`]; empty otherwise).
    pub refused: Vec<(PathBuf, String)>,
}

impl Evaluation {
    /// Whether each counted picture is unfamiliar under `contract`'s threshold (a score above
    /// it, or not a number); `None` when the contract names no unfamiliarity score.
    pub fn unfamiliar(&self, contract: &crate::contract::ModelContract) -> Option<Vec<bool>> {
        let u = contract.unfamiliarity.as_ref()?;
        Some(
            self.unfamiliarity
                .iter()
                .map(|s| s.is_some_and(|s| u.is_unfamiliar(s)))
                .collect(),
        )
    }
}

/// A change made to every picture before preprocessing, to test what the model relies on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Perturbation {
    /// The picture as it is.
    None,
    /// The bottom-right `width × height` pixels painted white (where the dataset's scale-bar
    /// label sits): a model that needs them learned an artefact, not cells.
    BlankCorner {
        /// Width of the blanked corner, pixels.
        width: u32,
        /// Height of the blanked corner, pixels.
        height: u32,
    },
    /// Each channel scaled by a factor drawn uniformly from `1 ± amount` per picture (seeded,
    /// reproducible): a model that collapses learned each class's colour cast.
    ColorJitter {
        /// Largest relative change, e.g. 0.1 for ±10 %.
        amount: f32,
        /// Seed of the factors.
        seed: u64,
    },
}

impl Perturbation {
    /// The shortcut checks: the 60×30 px scale-bar corner blanked, and ±10 % colour.
    pub const SHORTCUT_CHECKS: [Perturbation; 2] = [
        Perturbation::BlankCorner {
            width: 60,
            height: 30,
        },
        Perturbation::ColorJitter {
            amount: 0.1,
            seed: 42,
        },
    ];

    /// A short name for tables.
    pub fn name(&self) -> String {
        match self {
            Perturbation::None => "none".into(),
            Perturbation::BlankCorner { width, height } => {
                format!("bottom-right {width}x{height} px blanked")
            }
            Perturbation::ColorJitter { amount, .. } => {
                format!("colour jitter ±{:.0} %", amount * 100.0)
            }
        }
    }

    /// Applies the change to picture number `index` of an evaluation.
    pub fn apply(&self, img: &mut RgbImage, index: usize) {
        match *self {
            Perturbation::None => {}
            Perturbation::BlankCorner { width, height } => {
                let (w, h) = img.dimensions();
                for y in h.saturating_sub(height)..h {
                    for x in w.saturating_sub(width)..w {
                        img.put_pixel(x, y, image::Rgb([255, 255, 255]));
                    }
                }
            }
            Perturbation::ColorJitter { amount, seed } => {
                let mut rng =
                    SplitMix64::new(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let factors: [f32; 3] =
                    std::array::from_fn(|_| 1.0 + amount * (2.0 * rng.unit() - 1.0));
                for p in img.pixels_mut() {
                    for (c, f) in p.0.iter_mut().zip(factors) {
                        *c = (f32::from(*c) * f).round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
    }
}

/// Which pictures of a labeled folder to evaluate.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only the files a trainer `manifest.csv` puts in this split (`train`, `val`, `test`),
    /// with paths relative to the folder.
    pub manifest: Option<(PathBuf, String)>,
}

/// The labeled pictures of `data` (one subfolder per class, named by `labels`), as
/// (path, class index), in a stable order.
pub fn labeled_files(
    data: &Path,
    labels: &[String],
    selection: &Selection,
) -> Result<Vec<(PathBuf, usize)>, EvaluateError> {
    let folder_err = |reason: String| EvaluateError::Folder {
        path: data.to_path_buf(),
        reason,
    };
    if let Some((manifest, split)) = &selection.manifest {
        let bad = |reason: String| EvaluateError::Folder {
            path: manifest.clone(),
            reason,
        };
        let rows = crate::manifest::read(manifest)?;
        let chosen: Vec<&crate::manifest::ManifestRow> = rows
            .iter()
            .filter(|r| r.split.to_string() == *split)
            .collect();
        crate::manifest::check_digests(manifest, data, &chosen)?;
        let mut files = Vec::new();
        for row in chosen {
            let index = labels.iter().position(|l| *l == row.class).ok_or_else(|| {
                bad(format!(
                    "{}: class {:?} is not a label of this model {labels:?}",
                    row.file, row.class
                ))
            })?;
            files.push((data.join(&row.file), index));
        }
        if files.is_empty() {
            return Err(EvaluateError::Folder {
                path: manifest.clone(),
                reason: format!("no file in split {split:?}"),
            });
        }
        return Ok(files);
    }
    let mut classes: Vec<String> = std::fs::read_dir(data)
        .map_err(|e| folder_err(format!("cannot read folder: {e}")))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(folder_err(format!(
            "no class folders; expected subfolders named by the model's labels {labels:?}"
        )));
    }
    let unknown: Vec<&String> = classes.iter().filter(|c| !labels.contains(c)).collect();
    if !unknown.is_empty() {
        return Err(folder_err(format!(
            "class folder(s) {unknown:?} are not labels of this model; its labels are {labels:?}"
        )));
    }
    let mut files = Vec::new();
    for class in &classes {
        let index = labels
            .iter()
            .position(|l| l == class)
            .expect("checked above");
        files.extend(
            expand_paths(&[data.join(class)])
                .into_iter()
                .map(|p| (p, index)),
        );
    }
    Ok(files)
}

/// Runs `model` on `files` with `perturbation` applied; returns the metrics and the pictures
/// that could not be read.
pub fn evaluate_files(
    model: &OnnxClassifier,
    files: &[(PathBuf, usize)],
    perturbation: Perturbation,
) -> Result<Evaluation, EvaluateError> {
    evaluate_files_at(model, files, perturbation, None)
}

/// [`evaluate_files`] with the pictures' pixel size declared (`framing`: the camera's and the
/// model's, [`crate::scale::fields`]): each picture is resampled to the model's pixel size and
/// cut into model-input fields, and its probabilities are the mean of its fields' (the device's
/// field rule averages frames the same way). `None`: each picture's centre crop, as before.
pub fn evaluate_files_at(
    model: &OnnxClassifier,
    files: &[(PathBuf, usize)],
    perturbation: Perturbation,
    framing: Option<ScaleFraming>,
) -> Result<Evaluation, EvaluateError> {
    evaluate_pictures(model, files, perturbation, framing, None)
}

/// A quality gate for [`evaluate_files_gated`]: why it refuses a picture, or `None`.
pub type QualityGateFn<'a> = dyn FnMut(&RgbImage) -> Option<String> + 'a;

/// [`evaluate_files_at`] (no perturbation) behind a quality gate, as the device judges its
/// frames: `gate` sees each field (or, without `framing`, the whole picture) and returns why
/// it refuses it, or `None`. Refused fields are left out of their picture's mean; a picture
/// whose every field is refused lands in [`Evaluation::refused`] with the first reason.
pub fn evaluate_files_gated(
    model: &OnnxClassifier,
    files: &[(PathBuf, usize)],
    framing: Option<ScaleFraming>,
    gate: &mut QualityGateFn<'_>,
) -> Result<Evaluation, EvaluateError> {
    evaluate_pictures(model, files, Perturbation::None, framing, Some(gate))
}

fn evaluate_pictures(
    model: &OnnxClassifier,
    files: &[(PathBuf, usize)],
    perturbation: Perturbation,
    framing: Option<ScaleFraming>,
    mut gate: Option<&mut QualityGateFn<'_>>,
) -> Result<Evaluation, EvaluateError> {
    let labels = &model.contract().labels;
    let mut pre = Preprocessor::new(model.contract().clone());
    let mut input = vec![0.0; model.contract().input_len()];
    let mut cutter = framing.map(FieldCutter::new);
    let (mut truth, mut probabilities, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let (mut unfamiliarity, mut refused, mut counted) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (path, class)) in files.iter().enumerate() {
        let img = match decode_image(path) {
            Ok(mut img) => {
                perturbation.apply(&mut img, i);
                img
            }
            Err(e) => {
                skipped.push((path.clone(), e.to_string()));
                continue;
            }
        };
        // Without a declared scale the gate judges the whole picture, as the device does.
        let mut pictures: Vec<RgbImage> = match &mut cutter {
            Some(c) => c.cut(&img).into_iter().map(|f| f.image).collect(),
            None => vec![img],
        };
        if let Some(gate) = &mut gate {
            let mut first_reason = None;
            pictures.retain(|p| match gate(p) {
                Some(reason) => {
                    first_reason.get_or_insert(reason);
                    false
                }
                None => true,
            });
            if let (true, Some(reason)) = (pictures.is_empty(), first_reason) {
                refused.push((path.clone(), reason));
                continue;
            }
        }
        // A picture cut into fields: its probabilities and unfamiliarity are its fields' means.
        let share = 1.0 / pictures.len().max(1) as f32;
        let mut mean = vec![0.0f32; labels.len()];
        let mut mean_unfamiliarity: Option<f32> = None;
        let mut failed = None;
        for picture in &pictures {
            if let Err(e) = pre.run_into(picture, &mut input) {
                failed = Some(e.to_string());
                break;
            }
            let prediction = model.predict(&input)?;
            for (m, v) in mean.iter_mut().zip(&prediction.probabilities) {
                *m += v * share;
            }
            if let Some(u) = prediction.unfamiliarity {
                *mean_unfamiliarity.get_or_insert(0.0) += u * share;
            }
        }
        match failed {
            None if !pictures.is_empty() => {
                probabilities.push(mean);
                unfamiliarity.push(mean_unfamiliarity);
                truth.push(*class);
                counted.push(path.clone());
            }
            None => skipped.push((path.clone(), "empty picture".into())),
            Some(reason) => skipped.push((path.clone(), reason)),
        }
    }
    if truth.is_empty() && !refused.is_empty() {
        return Err(EvaluateError::AllRefused { refused, skipped });
    }
    if truth.is_empty() {
        return Err(EvaluateError::Folder {
            path: files
                .first()
                .and_then(|(p, _)| p.parent())
                .map_or_else(PathBuf::new, Path::to_path_buf),
            reason: "no readable images".into(),
        });
    }
    let report = evaluate(labels, &truth, &probabilities)?;
    Ok(Evaluation {
        report,
        skipped,
        pictures: counted,
        truth,
        probabilities,
        unfamiliarity,
        screening: None,
        refused,
    })
}

/// Evaluates `model` on `data` (one subfolder per class, named by the model's labels) and writes
/// the report into `out`. Class folders that are not labels are an error listing the labels;
/// labels without a folder are simply absent from the data.
pub fn evaluate_folder(
    model: &OnnxClassifier,
    data: &Path,
    out: &Path,
) -> Result<Evaluation, EvaluateError> {
    evaluate_selection(model, data, &Selection::default(), out)
}

/// [`evaluate_folder`] on a selection of the folder (e.g. a manifest's test split), at the
/// device's default settings.
pub fn evaluate_selection(
    model: &OnnxClassifier,
    data: &Path,
    selection: &Selection,
    out: &Path,
) -> Result<Evaluation, EvaluateError> {
    evaluate_selection_with(model, data, selection, &ScreeningSettings::default(), out)
}

/// [`evaluate_selection`] at the operating point of `settings`.
pub fn evaluate_selection_with(
    model: &OnnxClassifier,
    data: &Path,
    selection: &Selection,
    settings: &ScreeningSettings,
    out: &Path,
) -> Result<Evaluation, EvaluateError> {
    evaluate_selection_at(model, data, selection, settings, out, None)
}

/// [`evaluate_selection_with`] with the pictures' pixel size declared ([`evaluate_files_at`]).
pub fn evaluate_selection_at(
    model: &OnnxClassifier,
    data: &Path,
    selection: &Selection,
    settings: &ScreeningSettings,
    out: &Path,
    framing: Option<ScaleFraming>,
) -> Result<Evaluation, EvaluateError> {
    let files = labeled_files(data, &model.contract().labels, selection)?;
    let mut evaluation = evaluate_files_at(model, &files, Perturbation::None, framing)?;
    let unfamiliar = evaluation.unfamiliar(model.contract());
    let screening = ScreeningFigures::compute_scored(
        &model.contract().labels,
        &evaluation.truth,
        &evaluation.probabilities,
        unfamiliar.as_deref(),
        settings,
    );
    let mut notes = vec![format!(
        "Model metadata: {} entries.",
        model.metadata().len()
    )];
    if let Some(f) = framing {
        notes.push(format!(
            "Pictures declared at {} µm/px, resampled to the model's {} µm/px and cut into \
             model-input fields; a picture's probabilities are the mean of its fields'.",
            f.camera_um_per_px, f.model_um_per_px
        ));
    }
    if !evaluation.skipped.is_empty() {
        notes.push(format!(
            "{} unreadable file(s) were skipped.",
            evaluation.skipped.len()
        ));
    }
    let split = match &selection.manifest {
        Some((manifest, split)) => format!("{split} (from {})", manifest.display()),
        None => "all".into(),
    };
    let ctx = ReportContext {
        title: format!("{} — {}", file_name(model.path()), file_name(data)),
        model: model.path().display().to_string(),
        dataset: data.display().to_string(),
        split,
        model_bytes: std::fs::metadata(model.path()).ok().map(|m| m.len()),
        notes,
        ..Default::default()
    };
    write_report_with(out, &ctx, &evaluation.report, None, Some(&screening))?;
    evaluation.screening = Some(screening);
    Ok(evaluation)
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(w: u32, h: u32) -> RgbImage {
        RgbImage::from_pixel(w, h, image::Rgb([100, 150, 200]))
    }

    #[test]
    fn blank_corner_paints_exactly_the_corner() {
        let mut img = grey(100, 50);
        Perturbation::BlankCorner {
            width: 60,
            height: 30,
        }
        .apply(&mut img, 0);
        let white = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == [255; 3])
            .count();
        assert_eq!(white, 60 * 30);
        assert_eq!(img.get_pixel(40, 20).0, [255; 3]);
        assert_eq!(img.get_pixel(39, 20).0, [100, 150, 200]);
        assert_eq!(img.get_pixel(40, 19).0, [100, 150, 200]);
        // A picture smaller than the corner is blanked whole, without panicking.
        let mut small = grey(10, 10);
        Perturbation::SHORTCUT_CHECKS[0].apply(&mut small, 0);
        assert!(small.pixels().all(|p| p.0 == [255; 3]));
    }

    #[test]
    fn colour_jitter_stays_within_its_bounds_and_is_reproducible() {
        let jitter = Perturbation::SHORTCUT_CHECKS[1];
        let mut changed = 0;
        for i in 0..200 {
            let (mut a, mut b) = (grey(4, 4), grey(4, 4));
            jitter.apply(&mut a, i);
            jitter.apply(&mut b, i);
            assert_eq!(a, b);
            let p = a.get_pixel(0, 0).0;
            for (got, base) in p.iter().zip([100.0f32, 150.0, 200.0]) {
                let ratio = f32::from(*got) / base;
                assert!((0.895..=1.105).contains(&ratio), "{ratio}");
            }
            changed += usize::from(p != [100, 150, 200]);
        }
        assert!(
            changed > 190,
            "jitter changed only {changed} of 200 pictures"
        );
    }

    #[test]
    fn a_manifest_selects_its_split_with_quoted_names() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.csv");
        // Every listed file exists with the listed digest: readers check it.
        let mut digest = std::collections::HashMap::new();
        for (name, bytes) in [("A/1.jpg", "1"), ("B/x,\"y\".jpg", "x"), ("A/2.jpg", "2")] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            digest.insert(name, crate::manifest::sha256_hex(bytes.as_bytes()));
        }
        std::fs::write(
            &manifest,
            format!(
                "file,sha256,class,split\nA/1.jpg,{},A,train\n\"B/x,\"\"y\"\".jpg\",{},B,test\nA/2.jpg,{},A,test\n",
                digest["A/1.jpg"], digest["B/x,\"y\".jpg"], digest["A/2.jpg"]
            ),
        )
        .unwrap();
        let labels = vec!["A".to_string(), "B".to_string()];
        let sel = Selection {
            manifest: Some((manifest.clone(), "test".into())),
        };
        let files = labeled_files(dir.path(), &labels, &sel).unwrap();
        assert_eq!(
            files,
            vec![
                (dir.path().join("B/x,\"y\".jpg"), 1),
                (dir.path().join("A/2.jpg"), 0)
            ]
        );
        let sel = Selection {
            manifest: Some((manifest, "holdout".into())),
        };
        let err = labeled_files(dir.path(), &labels, &sel)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("holdout"), "{err}");
    }
}
