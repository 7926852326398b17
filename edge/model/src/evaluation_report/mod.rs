//! The evaluation report: a folder with `report.json`, `report.md` and PNG plots.
//!
//! [`write_report`] turns a [`ClassificationReport`] (from [`crate::metrics::evaluate`]), a
//! [`ReportContext`] and, after training, the per-epoch history into:
//!
//! - `report.json`: `{"context": …, "metrics": …, "history": …, "intervals": …}`, readable with
//!   [`read_report`]; with [`ScreeningFigures`] ([`write_report_with`]) also `operating_point`,
//!   `calibration` and `slide_simulation`;
//! - `report.md`: the human-readable report, linking the plots;
//! - `confusion_matrix.png`: counts per (true, predicted) class, coloured by row share;
//! - `roc.png`: one-vs-rest ROC curves with their AUC;
//! - `training_curves.png`: loss and accuracy per epoch, when a non-empty history is given;
//! - `reliability.png`: the reliability diagram (accuracy per confidence bin, with counts), with
//!   the screening figures.
//!
//! Every proportion shown (accuracy, per-class precision and recall, sensitivity, specificity,
//! abstention, slide verdict shares) carries its Wilson 95 % interval
//! ([`crate::metrics::wilson_interval`]).
//!
//! The plots are drawn with the kit in [`plot`] (embedded font, colours, PNG encoding), which the
//! device's session report uses too; `report.md` is written by `markdown.rs`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::calibration::Calibration;
use crate::metrics::{ClassificationReport, ReportIntervals};
use crate::operating_point::{OperatingPoint, ScreeningFigures};
use crate::slide_simulation::SlideSimulation;

mod charts;
mod markdown;
pub mod plot;

use charts::{draw_confusion, draw_history, draw_reliability, draw_roc, subtitle};
use markdown::markdown;
use plot::{register_font, render_png};

/// Everything besides the metrics that a report states.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportContext {
    /// Report title, e.g. "MobileNetV2 ×0.5 @128 — test split".
    pub title: String,
    /// Model family and settings, free text.
    pub model: String,
    /// Dataset path or manifest sha256, free text.
    pub dataset: String,
    /// The evaluated split: "test", "val", or "all" (`edge evaluate`).
    pub split: String,
    /// Number of model parameters.
    pub parameters: Option<u64>,
    /// Size of the model file in bytes.
    pub model_bytes: Option<u64>,
    /// Training throughput in images per second.
    pub train_images_per_s: Option<f64>,
    /// Inference throughput in images per second.
    pub inference_images_per_s: Option<f64>,
    /// Free-text notes, e.g. "class-weighted loss", "balanced sampling", caveats.
    pub notes: Vec<String>,
}

/// One epoch of training, for the curves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (usually from 1).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy, as a fraction.
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub valid_loss: f64,
    /// Validation accuracy, as a fraction.
    pub valid_accuracy: f64,
    /// Learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// Training throughput in images per second.
    pub images_per_s: f64,
}

/// The content of `report.json`.
///
/// Non-finite numbers (a diverged loss) are written as `null` by JSON and cannot be read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportDocument {
    /// What was evaluated.
    pub context: ReportContext,
    /// The metrics.
    pub metrics: ClassificationReport,
    /// Training history, if the report was written after training.
    pub history: Option<Vec<EpochRecord>>,
    /// Wilson 95 % intervals of accuracy and per-class precision and recall (absent in reports
    /// written before they were added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<ReportIntervals>,
    /// Blast-vs-normal figures at the device's operating point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<OperatingPoint>,
    /// Reliability diagram and expected calibration error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Simulated slides under the device's slide rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide_simulation: Option<SlideSimulation>,
}

/// Serializes like [`ReportDocument`] without copying.
#[derive(Serialize)]
struct ReportDocumentRef<'a> {
    context: &'a ReportContext,
    metrics: &'a ClassificationReport,
    history: Option<&'a [EpochRecord]>,
    intervals: &'a ReportIntervals,
    #[serde(skip_serializing_if = "Option::is_none")]
    operating_point: Option<&'a OperatingPoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    calibration: Option<&'a Calibration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slide_simulation: Option<&'a SlideSimulation>,
}

/// The files a report consists of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFiles {
    /// `report.json`.
    pub json: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `confusion_matrix.png`.
    pub confusion_matrix: PathBuf,
    /// `roc.png`.
    pub roc: PathBuf,
    /// `training_curves.png`, written only with a non-empty history.
    pub training_curves: Option<PathBuf>,
    /// `reliability.png`, written only with the screening figures.
    pub reliability: Option<PathBuf>,
}

impl ReportFiles {
    /// Every written file.
    pub fn all(&self) -> Vec<&Path> {
        let mut v = vec![
            self.json.as_path(),
            self.markdown.as_path(),
            self.confusion_matrix.as_path(),
            self.roc.as_path(),
        ];
        v.extend(self.training_curves.as_deref());
        v.extend(self.reliability.as_deref());
        v
    }
}

/// A report that could not be written or read.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The report folder could not be created.
    #[error("cannot create report folder {}: {source}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be written or read.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// "write" or "read".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The JSON document could not be encoded or parsed.
    #[error("{}: invalid report JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A plot could not be drawn or encoded.
    #[error("cannot draw {}: {message}", path.display())]
    Plot {
        /// The file.
        path: PathBuf,
        /// What went wrong, in words.
        message: String,
    },
    /// The embedded font could not be loaded.
    #[error("the embedded plot font could not be loaded")]
    Font,
    /// The metrics contradict themselves (e.g. a confusion matrix that does not match the labels).
    #[error("inconsistent metrics: {0}")]
    Inconsistent(String),
}

/// Name of the JSON file in a report folder.
pub const JSON_FILE: &str = "report.json";
/// Name of the Markdown file in a report folder.
pub const MARKDOWN_FILE: &str = "report.md";
/// Name of the confusion matrix plot.
pub const CONFUSION_FILE: &str = "confusion_matrix.png";
/// Name of the ROC plot.
pub const ROC_FILE: &str = "roc.png";
/// Name of the training curves plot.
pub const CURVES_FILE: &str = "training_curves.png";
/// Name of the reliability diagram.
pub const RELIABILITY_FILE: &str = "reliability.png";

/// Pixel size (width, height) of the confusion matrix plot.
const CONFUSION_SIZE: (u32, u32) = (1000, 900);
/// Pixel size of the ROC plot.
const ROC_SIZE: (u32, u32) = (900, 860);
/// Pixel size of the training curves plot.
const CURVES_SIZE: (u32, u32) = (1400, 620);
/// Pixel size of the reliability diagram.
const RELIABILITY_SIZE: (u32, u32) = (900, 900);

/// Writes the report files into `dir`, creating it if needed, and returns their paths.
///
/// `training_curves.png` is written only when `history` is given and not empty. Existing files
/// of the same names are replaced. Without the screening figures: see [`write_report_with`].
pub fn write_report(
    dir: &Path,
    ctx: &ReportContext,
    metrics: &ClassificationReport,
    history: Option<&[EpochRecord]>,
) -> Result<ReportFiles, ReportError> {
    write_report_with(dir, ctx, metrics, history, None)
}

/// [`write_report`] with the figures at the device's operating point (sensitivity,
/// specificity, abstention, calibration, slide simulation) when `screening` is given: their
/// `report.json` keys, `report.md` sections and `reliability.png`.
pub fn write_report_with(
    dir: &Path,
    ctx: &ReportContext,
    metrics: &ClassificationReport,
    history: Option<&[EpochRecord]>,
    screening: Option<&ScreeningFigures>,
) -> Result<ReportFiles, ReportError> {
    check_consistency(metrics)?;
    std::fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let history = history.filter(|h| !h.is_empty());
    let files = ReportFiles {
        json: dir.join(JSON_FILE),
        markdown: dir.join(MARKDOWN_FILE),
        confusion_matrix: dir.join(CONFUSION_FILE),
        roc: dir.join(ROC_FILE),
        training_curves: history.map(|_| dir.join(CURVES_FILE)),
        reliability: screening.map(|_| dir.join(RELIABILITY_FILE)),
    };

    let intervals = ReportIntervals::of(metrics);
    let doc = ReportDocumentRef {
        context: ctx,
        metrics,
        history,
        intervals: &intervals,
        operating_point: screening.map(|s| &s.operating_point),
        calibration: screening.map(|s| &s.calibration),
        slide_simulation: screening.map(|s| &s.slide_simulation),
    };
    let json = serde_json::to_string_pretty(&doc).map_err(|source| ReportError::Json {
        path: files.json.clone(),
        source,
    })?;
    write_file(&files.json, json.as_bytes())?;
    write_file(
        &files.markdown,
        markdown(ctx, metrics, history, &intervals, screening).as_bytes(),
    )?;

    register_font()?;
    let subtitle = subtitle(ctx);
    render_png(&files.confusion_matrix, CONFUSION_SIZE, |root| {
        draw_confusion(root, &metrics.labels, &metrics.confusion, &subtitle)
    })?;
    render_png(&files.roc, ROC_SIZE, |root| {
        draw_roc(root, metrics, &subtitle)
    })?;
    if let (Some(path), Some(h)) = (&files.training_curves, history) {
        render_png(path, CURVES_SIZE, |root| draw_history(root, h, &subtitle))?;
    }
    if let (Some(path), Some(s)) = (&files.reliability, screening) {
        let threshold = f64::from(s.operating_point.decision.min_confidence);
        render_png(path, RELIABILITY_SIZE, |root| {
            draw_reliability(root, &s.calibration, threshold, &subtitle)
        })?;
    }
    Ok(files)
}

/// Reads a `report.json` written by [`write_report`].
pub fn read_report(path: &Path) -> Result<ReportDocument, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Checks that labels, per-class rows, the confusion matrix and the ROC curves agree in size,
/// so that drawing can index freely.
fn check_consistency(m: &ClassificationReport) -> Result<(), ReportError> {
    let k = m.labels.len();
    if k == 0 {
        return Err(ReportError::Inconsistent("no class labels".into()));
    }
    if m.per_class.len() != k || m.roc.len() != k {
        return Err(ReportError::Inconsistent(format!(
            "{k} labels but {} per-class rows and {} ROC curves",
            m.per_class.len(),
            m.roc.len()
        )));
    }
    if m.confusion.len() != k || m.confusion.iter().any(|r| r.len() != k) {
        return Err(ReportError::Inconsistent(format!(
            "the confusion matrix is not {k}×{k}"
        )));
    }
    if m.roc.iter().any(|c| c.fpr.len() != c.tpr.len()) {
        return Err(ReportError::Inconsistent(
            "a ROC curve has different numbers of FPR and TPR values".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::evaluate;
    use crate::metrics::tests::assert_json_close;

    /// 3 classes, confusion (rows true, columns predicted) [[5,1,0],[2,3,1],[0,1,4]], with
    /// probabilities that vary within each cell so the ROC curves have several steps.
    fn known_metrics() -> ClassificationReport {
        let (labels, truth, probs) = known_samples();
        evaluate(&labels, &truth, &probs).unwrap()
    }

    /// The labels, true classes and probabilities behind [`known_metrics`]: the top probability
    /// of the k-th sample of a cell is 0.5 + 0.08·k.
    fn known_samples() -> (Vec<String>, Vec<usize>, Vec<Vec<f32>>) {
        let cm = [[5, 1, 0], [2, 3, 1], [0, 1, 4]];
        let labels: Vec<String> = ["lymphoblast", "myeloblast", "normal"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut truth = Vec::new();
        let mut probs = Vec::new();
        for (t, row) in cm.iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                for k in 0..count {
                    let top = 0.5 + 0.08 * k as f32;
                    let mut r = vec![(1.0 - top) / 2.0; 3];
                    r[p] = top;
                    truth.push(t);
                    probs.push(r);
                }
            }
        }
        (labels, truth, probs)
    }

    fn context() -> ReportContext {
        ReportContext {
            title: "MobileNetV2 ×0.5 @128 — test split".into(),
            model: "mobilenetv2, width 0.5, input 128".into(),
            dataset: "data/manifest.json sha256 0123abcd".into(),
            split: "test".into(),
            parameters: Some(700_000),
            model_bytes: Some(2_900_000),
            train_images_per_s: Some(210.5),
            inference_images_per_s: Some(48.0),
            notes: vec!["class-weighted loss".into()],
        }
    }

    fn history() -> Vec<EpochRecord> {
        (1..=12)
            .map(|e| {
                let x = e as f64;
                EpochRecord {
                    epoch: e,
                    train_loss: 1.2 / x.sqrt(),
                    train_accuracy: 1.0 - 0.6 / x.sqrt(),
                    valid_loss: 1.3 / x.sqrt() + 0.01 * x,
                    valid_accuracy: 0.95 - 0.6 / x.sqrt(),
                    learning_rate: 1e-3 * 0.9f64.powi(e as i32),
                    images_per_s: 200.0,
                }
            })
            .collect()
    }

    fn png_size(path: &Path) -> (u32, u32) {
        let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (img.width(), img.height())
    }

    #[test]
    fn writes_every_file_and_they_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/report");
        let m = known_metrics();
        let h = history();
        let files = write_report(&out, &context(), &m, Some(&h)).unwrap();
        assert_eq!(files.all().len(), 5);
        for f in files.all() {
            assert!(f.is_file(), "{} missing", f.display());
        }
        assert_eq!(png_size(&files.confusion_matrix), CONFUSION_SIZE);
        assert_eq!(png_size(&files.roc), ROC_SIZE);
        assert_eq!(
            png_size(files.training_curves.as_ref().unwrap()),
            CURVES_SIZE
        );

        let doc = read_report(&files.json).unwrap();
        assert_json_close(&doc.metrics, &m);
        assert_eq!(doc.metrics.confusion, m.confusion);
        assert_eq!(doc.context, context());
        assert_json_close(&doc.history, &Some(h.clone()));
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
        for key in ["context", "metrics", "history"] {
            assert!(raw.get(key).is_some(), "report.json lacks {key}");
        }

        let md = std::fs::read_to_string(&files.markdown).unwrap();
        // Headline: accuracy 12/17, kappa 107/192, MCC 107/√36480.
        assert!(md.contains("| 0.7059 |"), "{md}");
        assert!(md.contains(&format!("| {:.4} |", m.macro_avg.f1)), "{md}");
        assert!(md.contains("| 0.5573 |"), "{md}");
        assert!(md.contains("| 0.5602 |"), "{md}");
        // Per-class rows: lymphoblast P 5/7, R 5/6, spec 9/11, F1 10/13, F2 25/31, support 6.
        let auc = m.per_class[0].auc.unwrap();
        assert!(
            md.contains(&format!(
                "| lymphoblast | 0.7143 | 0.8333 | 0.8182 | 0.7692 | 0.8065 | {auc:.4} | 6 |"
            )),
            "{md}"
        );
        assert!(md.contains("| myeloblast | 0.6000 | 0.5000 | 0.8182 | 0.5455 | 0.5172 |"));
        assert!(md.contains("| normal | 0.8000 | 0.8000 | 0.9167 | 0.8000 | 0.8000 |"));
        assert!(md.contains("| **macro avg** | 0.7048 | 0.7111 |"), "{md}");
        assert!(
            md.contains("| **weighted avg** | 0.6992 | 0.7059 |"),
            "{md}"
        );
        assert!(md.contains("| **myeloblast** | 2 | 3 | 1 |"), "{md}");
        assert!(md.contains("not a diagnostic claim"));
        assert!(md.contains("class-weighted loss"));
        for f in [CONFUSION_FILE, ROC_FILE, CURVES_FILE] {
            assert!(md.contains(&format!("]({f})")), "no link to {f}");
        }
    }

    #[test]
    fn the_operating_point_calibration_and_slides_are_written_with_their_intervals() {
        use crate::operating_point::{ScreeningFigures, ScreeningSettings};
        use leukoscope_screening::DecisionConfig;

        let (labels, truth, probs) = known_samples();
        let m = evaluate(&labels, &truth, &probs).unwrap();
        // At 0.5 every picture is answered, so the decisions are the predicted classes: blast
        // rows 6 + 5 of 12 called a blast, 4 of 5 normal pictures called normal.
        let settings = ScreeningSettings {
            decision: DecisionConfig {
                min_confidence: 0.5,
                normal_labels: vec!["normal".into()],
            },
            settings_from: "a test".into(),
            ..ScreeningSettings::default()
        };
        let figures = ScreeningFigures::compute(&labels, &truth, &probs, &settings);
        let dir = tempfile::tempdir().unwrap();
        let files = write_report_with(dir.path(), &context(), &m, None, Some(&figures)).unwrap();
        let reliability = files.reliability.clone().unwrap();
        assert_eq!(png_size(&reliability), RELIABILITY_SIZE);
        assert_eq!(files.all().len(), 5);

        let doc = read_report(&files.json).unwrap();
        let op = doc.operating_point.unwrap();
        assert_eq!((op.sensitivity.successes, op.sensitivity.n), (11, 12));
        assert_eq!((op.specificity.successes, op.specificity.n), (4, 5));
        assert_eq!((op.abstention.successes, op.abstention.n), (0, 17));
        assert_eq!(doc.intervals.unwrap().accuracy.successes, 12);
        let sim = doc.slide_simulation.unwrap();
        assert_eq!((sim.normal_pictures, sim.blast_pictures), (5, 12));
        assert_eq!(sim.config.seed, settings.simulation.seed);
        assert_eq!(sim.blast.len(), 3);
        assert!(doc.calibration.unwrap().ece > 0.0);
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
        for key in [
            "context",
            "metrics",
            "history",
            "intervals",
            "operating_point",
            "calibration",
            "slide_simulation",
        ] {
            assert!(raw.get(key).is_some(), "report.json lacks {key}");
        }
        // A report written before these keys existed still reads.
        let mut old = raw.clone();
        for key in [
            "intervals",
            "operating_point",
            "calibration",
            "slide_simulation",
        ] {
            old.as_object_mut().unwrap().remove(key);
        }
        let old_path = dir.path().join("old.json");
        std::fs::write(&old_path, old.to_string()).unwrap();
        let old = read_report(&old_path).unwrap();
        assert_eq!((old.operating_point, old.intervals), (None, None));

        let md = std::fs::read_to_string(&files.markdown).unwrap();
        // 11/12 = 0.9167, Wilson 95 %: 0.6461–0.9851.
        assert!(
            md.contains("(uncertain = missed) | 0.9167 | 0.6461–0.9851 | 11 / 12 |"),
            "{md}"
        );
        assert!(md.contains("| 0.8000 | 0.3755–0.9638 | 4 / 5 |"), "{md}");
        assert!(md.contains("| Accuracy | 0.7059 |"), "{md}");
        assert!(md.contains("| lymphoblast recall | 0.8333 |"), "{md}");
        assert!(md.contains("Settings: a test."), "{md}");
        assert!(md.contains(&format!("seed **{}**", settings.simulation.seed)));
        assert!(md.contains(&format!("]({RELIABILITY_FILE})")));
        assert!(md.contains("Slide specificity"));
    }

    #[test]
    fn no_history_means_no_training_curves() {
        let dir = tempfile::tempdir().unwrap();
        let m = known_metrics();
        for h in [None, Some(&[][..])] {
            let files = write_report(dir.path(), &ReportContext::default(), &m, h).unwrap();
            assert_eq!(files.training_curves, None);
            assert!(!dir.path().join(CURVES_FILE).exists());
            let md = std::fs::read_to_string(&files.markdown).unwrap();
            assert!(!md.contains(CURVES_FILE));
            assert!(md.starts_with("# Evaluation report"));
        }
    }

    #[test]
    fn unwritable_folder_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the folder should be: creating the folder must fail.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"not a folder").unwrap();
        let target = blocker.join("report");
        let err = write_report(&target, &context(), &known_metrics(), None).unwrap_err();
        assert!(matches!(err, ReportError::CreateDir { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn unwritable_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where report.json should be: writing it must fail and name it.
        std::fs::create_dir(dir.path().join(JSON_FILE)).unwrap();
        let err = write_report(dir.path(), &context(), &known_metrics(), None).unwrap_err();
        assert!(matches!(err, ReportError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains(JSON_FILE), "{err}");
    }

    #[test]
    fn inconsistent_metrics_are_rejected_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = known_metrics();
        m.confusion.pop();
        let err = write_report(dir.path(), &context(), &m, None).unwrap_err();
        assert!(matches!(err, ReportError::Inconsistent(_)), "{err}");
        assert!(!dir.path().join(JSON_FILE).exists());
    }

    #[test]
    fn many_classes_and_long_labels_still_render() {
        let labels: Vec<String> = (0..12)
            .map(|i| format!("a rather long class name number {i}"))
            .collect();
        let truth: Vec<usize> = (0..120).map(|i| i % 12).collect();
        let probs: Vec<Vec<f32>> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let mut r = vec![0.05f32; 12];
                r[if i.is_multiple_of(5) { (t + 1) % 12 } else { t }] = 0.45;
                r
            })
            .collect();
        let m = evaluate(&labels, &truth, &probs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = write_report(dir.path(), &context(), &m, Some(&history()[..1])).unwrap();
        assert_eq!(png_size(&files.confusion_matrix), CONFUSION_SIZE);
        assert_eq!(
            png_size(files.training_curves.as_ref().unwrap()),
            CURVES_SIZE
        );
    }

    /// Writes sample reports for looking at: `EDGE_REPORT_PREVIEW=/some/dir cargo test -p edge
    /// --no-default-features -- --ignored report_preview`.
    #[test]
    #[ignore]
    fn report_preview() {
        let Some(dir) = std::env::var_os("EDGE_REPORT_PREVIEW") else {
            return;
        };
        let dir = PathBuf::from(dir);
        write_report(
            &dir.join("small"),
            &context(),
            &known_metrics(),
            Some(&history()),
        )
        .unwrap();
        let labels: Vec<String> = (0..12)
            .map(|i| format!("a rather long class name number {i}"))
            .collect();
        let truth: Vec<usize> = (0..1200).map(|i| i % 12).collect();
        let probs: Vec<Vec<f32>> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let mut r = vec![0.05f32; 12];
                r[if i.is_multiple_of(5) { (t + 1) % 12 } else { t }] = 0.45;
                r
            })
            .collect();
        let m = evaluate(&labels, &truth, &probs).unwrap();
        write_report(&dir.join("many"), &context(), &m, Some(&history()[..1])).unwrap();
    }
}
