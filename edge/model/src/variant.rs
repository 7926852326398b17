//! Picking the model variant (f32 or int8) that runs fastest on this machine.
//!
//! The device may be given several files of one model: the f32 export and its int8 version from
//! `quantize`. Which is faster depends on the CPU (tract's int8 kernels pay off on ARM, not
//! necessarily on x86), so at start-up each candidate gets a short timed warm-up with the
//! [`crate::bench`] harness and the fastest is kept. A slow int8 model can then never make the
//! device slower than its f32 model. All candidates must share one contract (labels, input size,
//! mean, std, resize): anything else is refused, since the choice must not change what the
//! device answers, only how fast.

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::classifier::OnnxClassifier;
use crate::contract::metadata_keys::QUANTIZATION as QUANTIZATION_KEY;
use crate::onnx::{ContractOverrides, ModelError};

/// The numeric precision of one model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Float model (no quantization recipe in its metadata).
    F32,
    /// Quantized by `quantize` (metadata key [`QUANTIZATION_KEY`] present).
    Int8,
}

impl Precision {
    /// The precision of a loaded model, from its metadata.
    pub fn of(model: &OnnxClassifier) -> Precision {
        if model.metadata().iter().any(|(k, _)| k == QUANTIZATION_KEY) {
            Precision::Int8
        } else {
            Precision::F32
        }
    }
}

/// Which variant to run (`--variant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Only f32 models are candidates.
    F32,
    /// Only int8 models are candidates.
    Int8,
    /// Every model is a candidate; the fastest wins (default).
    #[default]
    Auto,
}

impl std::str::FromStr for Variant {
    type Err = VariantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Variant::F32),
            "int8" => Ok(Variant::Int8),
            "auto" => Ok(Variant::Auto),
            other => Err(VariantError::Unknown(other.to_string())),
        }
    }
}

impl Variant {
    fn admits(self, p: Precision) -> bool {
        match self {
            Variant::Auto => true,
            Variant::F32 => p == Precision::F32,
            Variant::Int8 => p == Precision::Int8,
        }
    }
}

/// Why no variant could be chosen.
#[derive(Debug, Error)]
pub enum VariantError {
    /// Not `f32`, `int8` or `auto`.
    #[error("unknown variant '{0}' (expected f32, int8 or auto)")]
    Unknown(String),
    /// No model files were given, or the folder holds none.
    #[error("{}: no .onnx model files", path.display())]
    NoModels {
        /// The folder (or `-` for an empty list).
        path: PathBuf,
    },
    /// Two candidates have different contracts.
    #[error("{} and {} do not share one contract ({reason}); give variants of the same model only", first.display(), other.display())]
    ContractMismatch {
        /// The first model.
        first: PathBuf,
        /// The model that differs.
        other: PathBuf,
        /// Which field differs.
        reason: String,
    },
    /// The requested variant is not among the models.
    #[error("no {wanted:?} model among {available:?}")]
    Missing {
        /// The requested variant.
        wanted: Variant,
        /// The models given, with their precision.
        available: Vec<(PathBuf, Precision)>,
    },
    /// A model failed to load or run.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The `.onnx` files of a model directory, sorted by name.
pub fn model_files(dir: &Path) -> Result<Vec<PathBuf>, VariantError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        VariantError::Model(ModelError::Read {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(VariantError::NoModels {
            path: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// Loads every file (same overrides for all) and checks they share one contract.
pub fn load_all(
    paths: &[PathBuf],
    overrides: &ContractOverrides,
) -> Result<Vec<OnnxClassifier>, VariantError> {
    let models = paths
        .iter()
        .map(|p| OnnxClassifier::load(p, overrides))
        .collect::<Result<Vec<_>, _>>()?;
    check_same_contract(&models)?;
    Ok(models)
}

/// Refuses models whose contracts differ (labels, input size, mean, std, resize method).
pub fn check_same_contract(models: &[OnnxClassifier]) -> Result<(), VariantError> {
    let Some(first) = models.first() else {
        return Err(VariantError::NoModels { path: "-".into() });
    };
    let a = first.contract();
    for m in &models[1..] {
        let b = m.contract();
        let reason = if a.labels != b.labels {
            format!("labels {:?} vs {:?}", a.labels, b.labels)
        } else if (a.input_height, a.input_width) != (b.input_height, b.input_width) {
            format!(
                "input size {} vs {}",
                a.input_size_string(),
                b.input_size_string()
            )
        } else if a.mean != b.mean || a.std != b.std {
            format!(
                "normalization mean {:?} std {:?} vs mean {:?} std {:?}",
                a.mean, a.std, b.mean, b.std
            )
        } else if a.resize != b.resize {
            format!("resize {} vs {}", a.resize.as_str(), b.resize.as_str())
        } else {
            continue;
        };
        return Err(VariantError::ContractMismatch {
            first: first.path().to_path_buf(),
            other: m.path().to_path_buf(),
            reason,
        });
    }
    Ok(())
}

/// The warm-up timing of one candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// The model file.
    pub path: PathBuf,
    /// Its precision.
    pub precision: Precision,
    /// Median inference time (ms), `None` when the variant excluded it from timing.
    pub inference_ms_p50: Option<f64>,
    /// 95th percentile inference time (ms).
    pub inference_ms_p95: Option<f64>,
}

/// The chosen model and what was measured.
#[derive(Clone, Debug, Serialize)]
pub struct Choice {
    /// Index of the chosen model in the list given.
    pub index: usize,
    /// One entry per model, in the order given.
    pub timings: Vec<Timing>,
}

/// Index of the fastest timed candidate (lowest median; ties go to the first).
pub fn fastest(timings: &[Timing]) -> Option<usize> {
    timings
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.inference_ms_p50.map(|ms| (i, ms)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
        .map(|(i, _)| i)
}

/// Times every candidate admitted by `variant` (`runs` timed inferences after a short warm-up,
/// on the bench's synthetic smear picture, `threads` as given to
/// [`crate::bench::set_engine_threads`]) and returns the fastest. A single admitted candidate is
/// still timed, so the figures can be logged.
pub fn choose(
    models: &[OnnxClassifier],
    variant: Variant,
    runs: usize,
    threads: usize,
) -> Result<Choice, VariantError> {
    check_same_contract(models)?;
    if !models.iter().any(|m| variant.admits(Precision::of(m))) {
        return Err(VariantError::Missing {
            wanted: variant,
            available: models
                .iter()
                .map(|m| (m.path().to_path_buf(), Precision::of(m)))
                .collect(),
        });
    }
    let jpeg = crate::bench::sample_jpeg();
    let runs = runs.max(1);
    let mut timings = Vec::with_capacity(models.len());
    for m in models {
        let precision = Precision::of(m);
        let (p50, p95) = if variant.admits(precision) {
            let b = crate::bench::run(m, &jpeg, runs, (runs / 4).max(2), threads)?;
            (Some(b.inference_ms_p50), Some(b.inference_ms_p95))
        } else {
            (None, None)
        };
        tracing::info!(
            model = %m.path().display(),
            ?precision,
            inference_ms_p50 = ?p50,
            "variant warm-up"
        );
        timings.push(Timing {
            path: m.path().to_path_buf(),
            precision,
            inference_ms_p50: p50,
            inference_ms_p95: p95,
        });
    }
    let index = fastest(&timings).expect("at least one candidate was timed");
    Ok(Choice { index, timings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ModelContract;
    use crate::onnx::graph::{GraphBuilder, value_info};
    use prost::Message;

    /// A tiny valid classifier: GlobalAveragePool → Flatten → Softmax over 3 channels (labels
    /// a, b, c), with the contract and optionally the quantization key in its metadata.
    fn write_model(dir: &Path, name: &str, labels: &[&str], size: u32, int8: bool) -> PathBuf {
        let contract = ModelContract::new(labels.iter().map(|s| s.to_string()).collect(), size);
        let mut g = GraphBuilder::new();
        let pooled = g.node("GlobalAveragePool", &["image"], vec![], None);
        let flat = g.flatten(&pooled);
        g.softmax(&flat, "probabilities");
        let mut metadata = contract.to_metadata();
        if int8 {
            metadata.push((QUANTIZATION_KEY.into(), "{}".into()));
        }
        let s = Some(i64::from(size));
        let model = g.finish(
            value_info("image", &[None, Some(3), s, s]),
            vec![value_info("probabilities", &[None, Some(3)])],
            metadata,
            "test",
        );
        let path = dir.join(name);
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        path
    }

    #[test]
    fn variants_parse_and_precision_comes_from_metadata() {
        assert_eq!("auto".parse::<Variant>().unwrap(), Variant::Auto);
        assert_eq!("INT8".parse::<Variant>().unwrap(), Variant::Int8);
        assert_eq!("f32".parse::<Variant>().unwrap(), Variant::F32);
        assert!(
            "f16"
                .parse::<Variant>()
                .unwrap_err()
                .to_string()
                .contains("f16")
        );
        let d = tempfile::tempdir().unwrap();
        let f = write_model(d.path(), "a.onnx", &["a", "b", "c"], 8, false);
        let q = write_model(d.path(), "a-int8.onnx", &["a", "b", "c"], 8, true);
        let models = load_all(&[f, q], &Default::default()).unwrap();
        assert_eq!(Precision::of(&models[0]), Precision::F32);
        assert_eq!(Precision::of(&models[1]), Precision::Int8);
    }

    #[test]
    fn the_requested_variant_is_chosen_and_every_candidate_timed_in_auto() {
        let d = tempfile::tempdir().unwrap();
        let f = write_model(d.path(), "m.onnx", &["a", "b", "c"], 8, false);
        let q = write_model(d.path(), "m-int8.onnx", &["a", "b", "c"], 8, true);
        let models = load_all(&[f, q], &Default::default()).unwrap();
        let c = choose(&models, Variant::Int8, 3, 1).unwrap();
        assert_eq!(c.index, 1);
        assert!(c.timings[0].inference_ms_p50.is_none());
        assert!(c.timings[1].inference_ms_p50.is_some());
        let c = choose(&models, Variant::F32, 3, 1).unwrap();
        assert_eq!(c.index, 0);
        let c = choose(&models, Variant::Auto, 3, 1).unwrap();
        assert!(c.timings.iter().all(|t| t.inference_ms_p50.is_some()));
        assert_eq!(Some(c.index), fastest(&c.timings));
        // Only f32 models given, int8 asked.
        let only_f32 = load_all(&[d.path().join("m.onnx")], &Default::default()).unwrap();
        let e = choose(&only_f32, Variant::Int8, 3, 1).unwrap_err();
        assert!(matches!(e, VariantError::Missing { .. }), "{e}");
    }

    #[test]
    fn fastest_takes_the_lowest_median_of_the_timed_ones() {
        let t = |ms: Option<f64>| Timing {
            path: "x".into(),
            precision: Precision::F32,
            inference_ms_p50: ms,
            inference_ms_p95: ms,
        };
        assert_eq!(fastest(&[t(Some(4.0)), t(Some(2.5)), t(None)]), Some(1));
        assert_eq!(fastest(&[t(None), t(Some(3.0)), t(Some(3.0))]), Some(1));
        assert_eq!(fastest(&[t(None)]), None);
    }

    #[test]
    fn different_contracts_and_empty_folders_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = write_model(d.path(), "a.onnx", &["a", "b", "c"], 8, false);
        let b = write_model(d.path(), "b.onnx", &["x", "y", "z"], 8, true);
        let e = load_all(&[a.clone(), b], &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("labels") && e.contains("b.onnx"), "{e}");
        let c = write_model(d.path(), "c.onnx", &["a", "b", "c"], 16, true);
        let e = load_all(&[a, c], &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("input size"), "{e}");
        assert_eq!(model_files(d.path()).unwrap().len(), 3);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            model_files(empty.path()),
            Err(VariantError::NoModels { .. })
        ));
    }
}
