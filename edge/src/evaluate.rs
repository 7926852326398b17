//! `edge evaluate`: a model on a clinic's own labeled folder, with the same metrics and report
//! as `trainer evaluate`.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::classify::expand_paths;
use crate::metrics::{ClassificationReport, MetricsError, evaluate};
use crate::model::{ModelError, OnnxClassifier};
use crate::preprocess::{Preprocessor, decode_image};
use crate::report::{ReportContext, ReportError, write_report};

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
}

/// Evaluates `model` on `data` (one subfolder per class, named by the model's labels) and writes
/// the report into `out`. Class folders that are not labels are an error listing the labels;
/// labels without a folder are simply absent from the data.
pub fn evaluate_folder(
    model: &OnnxClassifier,
    data: &Path,
    out: &Path,
) -> Result<Evaluation, EvaluateError> {
    let labels = &model.contract().labels;
    let folder_err = |reason: String| EvaluateError::Folder {
        path: data.to_path_buf(),
        reason,
    };
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
    let mut pre = Preprocessor::new(model.contract().clone());
    let mut input = vec![0.0; model.contract().input_len()];
    let (mut truth, mut probabilities, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for class in &classes {
        let index = labels
            .iter()
            .position(|l| l == class)
            .expect("checked above");
        for path in expand_paths(&[data.join(class)]) {
            let result = decode_image(&path)
                .map_err(|e| e.to_string())
                .and_then(|img| pre.run_into(&img, &mut input).map_err(|e| e.to_string()));
            match result {
                Ok(()) => {
                    probabilities.push(model.probabilities(&input)?);
                    truth.push(index);
                }
                Err(reason) => skipped.push((path, reason)),
            }
        }
    }
    if truth.is_empty() {
        return Err(folder_err("no readable images in the class folders".into()));
    }
    let report = evaluate(labels, &truth, &probabilities)?;
    let mut notes = vec![format!(
        "Model metadata: {} entries.",
        model.metadata().len()
    )];
    if !skipped.is_empty() {
        notes.push(format!(
            "{} unreadable file(s) were skipped.",
            skipped.len()
        ));
    }
    let ctx = ReportContext {
        title: format!("{} — {}", file_name(model.path()), file_name(data)),
        model: model.path().display().to_string(),
        dataset: data.display().to_string(),
        split: "all".into(),
        model_bytes: std::fs::metadata(model.path()).ok().map(|m| m.len()),
        notes,
        ..Default::default()
    };
    write_report(out, &ctx, &report, None)?;
    Ok(Evaluation { report, skipped })
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
