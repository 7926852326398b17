//! Which model the device runs: the `.onnx` files the config names, their integrity, and the
//! variant (f32 or int8) kept after timing each candidate.

use std::path::{Path, PathBuf};

use tracing::info;

use super::RunError;
use crate::config::RunConfig;
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::onnx::ContractOverrides;
use leukoscope_model::variant::{Precision, Variant, VariantError};

/// Timed inferences per candidate model when choosing the variant at start-up.
const VARIANT_WARMUP_RUNS: usize = 20;

/// What the loaded model is, for the records and the `MODEL` answer.
pub(super) struct LoadedModel {
    pub(super) classifier: OnnxClassifier,
    pub(super) sha256: String,
    pub(super) variant: String,
    pub(super) name: String,
}

/// The `.onnx` files named by `paths` (files as given, folders' `*.onnx` sorted by name).
pub fn model_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RunError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(
                leukoscope_model::variant::model_files(path)
                    .map_err(|e| RunError::ModelRefused(e.to_string()))?,
            );
        } else if path.exists() {
            files.push(path.clone());
        } else {
            return Err(RunError::ModelRefused(format!(
                "{}: no such file",
                path.display()
            )));
        }
    }
    if files.is_empty() {
        return Err(RunError::ModelRefused(format!(
            "no .onnx file in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(files)
}

/// Checks integrity, loads every candidate model (from the bytes checked) and keeps the one
/// `config.model.variant` asks for (or the fastest).
pub(super) fn load_model(config: &RunConfig) -> Result<LoadedModel, RunError> {
    let paths = crate::model_search::model_paths(&config.model.paths)
        .map_err(|e| RunError::ModelRefused(e.to_string()))?;
    let files = model_files(&paths)?;
    let mut verified = Vec::new();
    for file in &files {
        verified.push(
            crate::integrity::verify_model(
                file,
                &config.model.sha256,
                config.model.public_key.as_deref(),
            )
            .map_err(|e| RunError::ModelRefused(e.to_string()))?,
        );
    }
    let refused = |e: VariantError| RunError::ModelRefused(e.to_string());
    // Built from the bytes just verified: the files are not read again.
    let mut models = verified
        .iter()
        .map(|v| v.classifier(&ContractOverrides::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(e.into()))?;
    leukoscope_model::variant::check_same_contract(&models).map_err(refused)?;
    let mut digests: Vec<String> = verified.iter().map(|v| v.sha256().to_string()).collect();
    drop(verified);
    let wanted: Variant = config.model.variant.parse().map_err(refused)?;
    let choice = leukoscope_model::variant::choose(
        &models,
        wanted,
        VARIANT_WARMUP_RUNS,
        config.model.threads,
    )
    .map_err(refused)?;
    for t in &choice.timings {
        if let Some(ms) = t.inference_ms_p50 {
            info!(model = %t.path.display(), precision = ?t.precision, "warm-up: {ms:.2} ms per frame (median)");
        }
    }
    let classifier = models.swap_remove(choice.index);
    let sha256 = digests.swap_remove(choice.index);
    let variant = match Precision::of(&classifier) {
        Precision::F32 => "f32".to_string(),
        Precision::Int8 => "int8".to_string(),
    };
    let name = file_name(classifier.path());
    info!(model = name, sha256, variant, "model loaded");
    Ok(LoadedModel {
        classifier,
        sha256,
        variant,
        name,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
