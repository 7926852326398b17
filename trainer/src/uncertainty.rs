//! `trainer uncertainty`: temperature scaling and the unfamiliarity score, fitted on a model's
//! own split and written into its ONNX file (`leukoscope_model::familiarity`).
//!
//! The features of the training split give the class means and the shared covariance; the
//! validation split gives the temperature and the threshold (at most 1 % of its pictures
//! rejected). The test split is not read. With augmented copies, the training features also
//! hold each training picture as another lamp, white balance, stain batch or JPEG setting
//! would show it ([`AugmentConfig::photometric`]): acquisition colour the model learned to
//! handle counts as familiar (at a price: the wider fit also lets another magnification look
//! more familiar). The threshold still comes from the unchanged validation split. Runs in tract on the exported f32 file, so it needs no
//! training backend and works on any leukoscope f32 ONNX file with its manifest.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use leukoscope_model::calibration::{DEFAULT_BINS, reliability};
use leukoscope_model::contract::metadata_keys;
use leukoscope_model::evaluate::{Selection, labeled_files};
use leukoscope_model::familiarity::{
    self, MahalanobisFit, Unfamiliarity, VALIDATION_REJECTION, apply_temperature, fit_temperature,
    pooled_features, threshold_for,
};
use leukoscope_model::onnx::OnnxFile;
use leukoscope_model::preprocess::{Preprocessor, decode_image};
use prost::Message;
use rand::SeedableRng;
use serde::Serialize;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::data::augment::AugmentConfig;
use crate::progress;

/// What `trainer uncertainty` is asked to do.
pub struct UncertaintyRequest<'a> {
    /// The f32 model file.
    pub model: &'a Path,
    /// The labeled folder the model was trained on.
    pub data: &'a Path,
    /// The run's split (`manifest.csv`).
    pub manifest: &'a Path,
    /// Where to write the model with the score and the temperature.
    pub out: &'a Path,
    /// Covariance shrinkage.
    pub shrinkage: f64,
    /// The features tensor; `None`: the pooled features ([`pooled_features`]).
    pub features: Option<String>,
    /// Augmented copies of each training picture added to the fit (0: the pictures only).
    pub augmented_copies: usize,
    /// Seed of those copies' augmentation.
    pub seed: u64,
    /// The fitted temperature is kept at or above this (1: never sharpen; 0: as fitted).
    pub min_temperature: f32,
}

/// What was fitted and measured (written beside the model as `<out>.uncertainty.json`).
#[derive(Debug, Serialize)]
pub struct UncertaintyReport {
    /// The model file read.
    pub model: PathBuf,
    /// The features tensor and its dimensions.
    pub features: String,
    /// Feature dimensions.
    pub dims: usize,
    /// Training pictures the score was fitted on.
    pub train_pictures: usize,
    /// Augmented copies of each training picture in the fit.
    pub augmented_copies: usize,
    /// Validation pictures the temperature and threshold were set on.
    pub validation_pictures: usize,
    /// The temperature written into the model: the fit, kept at or above the request's
    /// `min_temperature`.
    pub temperature: f32,
    /// The temperature that minimises the validation negative log-likelihood.
    pub fitted_temperature: f32,
    /// Validation negative log-likelihood before and after temperature scaling.
    pub validation_nll: [f64; 2],
    /// Validation expected calibration error (10 bins) before and after.
    pub validation_ece: [f64; 2],
    /// The threshold and the share of the validation split above it.
    pub threshold: f32,
    /// Share of validation pictures above the threshold.
    pub validation_rejected: f32,
    /// Score percentiles (50, 90, 99, max) on the training and validation splits.
    pub train_score_percentiles: [f32; 4],
    /// The same on the validation split.
    pub validation_score_percentiles: [f32; 4],
    /// Largest difference between the score tract computes from the written file and the fit's
    /// own, over the first validation pictures (a check of the graph).
    pub graph_check_max_abs_diff: f32,
}

/// Features and logits of a split's pictures, with their classes.
struct SplitOutputs {
    features: Vec<Vec<f32>>,
    logits: Vec<Vec<f32>>,
    classes: Vec<usize>,
}

/// How many augmented copies of each picture [`run_split`] adds, and their seed.
#[derive(Clone, Copy)]
struct Copies {
    count: usize,
    seed: u64,
}

fn run_split(
    file: &OnnxFile,
    plan: &std::sync::Arc<TypedRunnableModel>,
    data: &Path,
    manifest: &Path,
    split: &str,
    copies: Copies,
) -> Result<SplitOutputs> {
    let contract = file.contract();
    let selection = Selection {
        manifest: Some((manifest.to_path_buf(), split.to_string())),
    };
    let files = labeled_files(data, &contract.labels, &selection)?;
    let mut pre = Preprocessor::new(contract.clone());
    let mut input = vec![0.0; contract.input_len()];
    let shape = [
        1,
        3,
        contract.input_height as usize,
        contract.input_width as usize,
    ];
    let bar = progress::bar((files.len() * (1 + copies.count)) as u64, split);
    let augmentation = AugmentConfig::photometric();
    let mut rng = rand::rngs::StdRng::seed_from_u64(copies.seed);
    let mut out = SplitOutputs {
        features: Vec::new(),
        logits: Vec::new(),
        classes: Vec::new(),
    };
    for (path, class) in &files {
        let original = decode_image(path)?;
        for copy in 0..=copies.count {
            // The augmentation works on the picture at the model's input size, as in training.
            let img = if copy == 0 {
                original.clone()
            } else {
                let framed = pre.fit(&original)?;
                crate::data::augment::augment(&framed, &augmentation, &mut rng)
            };
            pre.run_into(&img, &mut input)?;
            let x = Tensor::from_shape(&shape, &input)?;
            let result = plan
                .run(tvec!(x.into()))
                .with_context(|| format!("{}: inference failed", path.display()))?;
            let values = |i: usize| -> Result<Vec<f32>> {
                Ok(result[i]
                    .to_plain_array_view::<f32>()?
                    .iter()
                    .copied()
                    .collect())
            };
            out.features.push(values(0)?);
            out.logits.push(values(1)?);
            out.classes.push(*class);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

fn softmax(l: &[f32], t: f32) -> Vec<f32> {
    let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f32> = l.iter().map(|&v| ((v - max) / t).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn nll(logits: &[Vec<f32>], truth: &[usize], t: f32) -> f64 {
    logits
        .iter()
        .zip(truth)
        .map(|(l, &y)| -f64::from(softmax(l, t)[y].max(1e-12)).ln())
        .sum::<f64>()
        / logits.len().max(1) as f64
}

fn percentiles(scores: &[f32]) -> [f32; 4] {
    let mut s = scores.to_vec();
    s.sort_by(f32::total_cmp);
    let at = |q: f64| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
    [at(0.5), at(0.9), at(0.99), at(1.0)]
}

/// Fits the temperature and the unfamiliarity score of `req.model` and writes the new file.
pub fn run(req: &UncertaintyRequest<'_>) -> Result<UncertaintyReport> {
    let file = OnnxFile::read(req.model)?;
    let contract = file.contract().clone();
    if contract.unfamiliarity.is_some() || contract.temperature.is_some() {
        bail!(
            "{}: already carries a temperature or an unfamiliarity score; start from the exported \
             file",
            req.model.display()
        );
    }
    if file
        .metadata()
        .iter()
        .any(|(k, _)| k == metadata_keys::QUANTIZATION)
    {
        bail!(
            "{}: an int8 file; fit on the f32 export, then quantize the result",
            req.model.display()
        );
    }
    let graph = file.graph();
    let features = match &req.features {
        Some(f) => f.clone(),
        None => pooled_features(graph).with_context(|| {
            format!(
                "{}: no Flatten or GlobalAveragePool node; name the features with --features",
                req.model.display()
            )
        })?,
    };
    let logits = graph
        .node
        .iter()
        .find(|n| n.op_type == "Softmax" && n.output.iter().any(|o| o == "probabilities"))
        .map(|n| n.input[0].clone())
        .with_context(|| {
            format!(
                "{}: no Softmax node computes 'probabilities'",
                req.model.display()
            )
        })?;
    let plan = file.plan(&[features.as_str(), logits.as_str()])?;
    let copies = Copies {
        count: req.augmented_copies,
        seed: req.seed,
    };
    let train = run_split(&file, &plan, req.data, req.manifest, "train", copies)?;
    let unchanged = Copies { count: 0, seed: 0 };
    let val = run_split(&file, &plan, req.data, req.manifest, "val", unchanged)?;

    let k = contract.num_classes();
    let fit = MahalanobisFit::fit(&train.features, &train.classes, k, req.shrinkage)?;
    let train_scores: Vec<f32> = train.features.iter().map(|f| fit.score(f)).collect();
    let val_scores: Vec<f32> = val.features.iter().map(|f| fit.score(f)).collect();
    let threshold =
        threshold_for(&val_scores, VALIDATION_REJECTION).context("no validation pictures")?;
    let rejected =
        val_scores.iter().filter(|&&s| s > threshold).count() as f32 / val_scores.len() as f32;
    let fitted_temperature = fit_temperature(&val.logits, &val.classes);
    let temperature = fitted_temperature.max(req.min_temperature);
    let probs = |t: f32| -> Vec<Vec<f32>> { val.logits.iter().map(|l| softmax(l, t)).collect() };
    let ece_before = reliability(&val.classes, &probs(1.0), DEFAULT_BINS).ece;
    let ece_after = reliability(&val.classes, &probs(temperature), DEFAULT_BINS).ece;

    let mut proto: pb::ModelProto = file.proto().clone();
    let g = proto.graph.as_mut().context("the model has no graph")?;
    fit.append_to_graph(g, &features)?;
    apply_temperature(g, temperature)?;
    let mut calibrated = contract.clone();
    calibrated.unfamiliarity = Some(Unfamiliarity {
        output: familiarity::OUTPUT.into(),
        method: "mahalanobis".into(),
        features: features.clone(),
        dims: fit.dims(),
        threshold,
        validation_rejected: rejected,
        shrinkage: fit.shrinkage() as f32,
    });
    calibrated.temperature = Some(temperature);
    let new_keys = [metadata_keys::UNFAMILIARITY, metadata_keys::TEMPERATURE];
    proto
        .metadata_props
        .retain(|e| !new_keys.contains(&e.key.as_str()));
    for (key, value) in calibrated.to_metadata() {
        if new_keys.contains(&key.as_str()) {
            proto
                .metadata_props
                .push(pb::StringStringEntryProto { key, value });
        }
    }
    let bytes = proto.encode_to_vec();

    // The file as the device reads it must give the fit's score.
    let written = leukoscope_model::classifier::OnnxClassifier::from_bytes(
        req.out,
        &bytes,
        &Default::default(),
    )?;
    let mut pre = Preprocessor::new(contract.clone());
    let mut input = vec![0.0; contract.input_len()];
    let files = labeled_files(
        req.data,
        &contract.labels,
        &Selection {
            manifest: Some((req.manifest.to_path_buf(), "val".into())),
        },
    )?;
    let mut max_diff = 0.0f32;
    for ((path, _), expected) in files.iter().zip(&val_scores).take(8) {
        pre.run_into(&decode_image(path)?, &mut input)?;
        let got = written
            .predict(&input)?
            .unfamiliarity
            .context("the written file gives no unfamiliarity score")?;
        max_diff = max_diff.max((got - expected).abs());
    }
    if max_diff > 1e-3 * threshold.max(1.0) {
        bail!(
            "the score computed from the written graph differs from the fit by {max_diff} \
             (threshold {threshold}): not written"
        );
    }
    if let Some(dir) = req.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        leukoscope_model::durable::create_dir_all(dir)?;
    }
    leukoscope_model::durable::write_atomic(req.out, &bytes)?;

    let report = UncertaintyReport {
        model: req.model.to_path_buf(),
        features,
        dims: fit.dims(),
        train_pictures: train.classes.len() / (1 + req.augmented_copies),
        augmented_copies: req.augmented_copies,
        validation_pictures: val.classes.len(),
        temperature,
        fitted_temperature,
        validation_nll: [
            nll(&val.logits, &val.classes, 1.0),
            nll(&val.logits, &val.classes, temperature),
        ],
        validation_ece: [ece_before, ece_after],
        threshold,
        validation_rejected: rejected,
        train_score_percentiles: percentiles(&train_scores),
        validation_score_percentiles: percentiles(&val_scores),
        graph_check_max_abs_diff: max_diff,
    };
    let mut json = req.out.as_os_str().to_owned();
    json.push(".uncertainty.json");
    leukoscope_model::durable::write_atomic(
        Path::new(&json),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok(report)
}
