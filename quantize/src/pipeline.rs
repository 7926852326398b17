//! The whole job behind `quantize --model f32.onnx --calibration DIR --out int8.onnx`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

use crate::QuantizeError;
use crate::calibrate::{ImageSet, ImageSource, activation_tensors, collect};
use crate::ranges::{ActivationType, Method, Range};
use crate::report::{
    EvaluationSummary, Latency, LayerSqnr, Recipe, Report, Scores, ThresholdRefit,
};
use crate::rewrite::{Depthwise, Layer, LayerKind, RewriteOptions, rewrite};
use crate::sqnr::{Comparison, compare};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::contract::metadata_keys::{self, QUANTIZATION as RECIPE_KEY};
use leukoscope_model::familiarity::{Unfamiliarity, VALIDATION_REJECTION, threshold_for};
use leukoscope_model::onnx::{ModelError, OnnxFile};

/// Where long steps report progress (a progress bar in the CLI, nothing in tests).
pub trait Progress {
    /// A step of `len` units starts.
    fn begin(&self, what: &str, len: u64);
    /// One unit done.
    fn tick(&self);
}

/// Progress that goes nowhere.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: u64) {}
    fn tick(&self) {}
}

/// Everything `quantize` can be asked.
#[derive(Clone, Debug)]
pub struct Options {
    /// Calibration pictures.
    pub calibration: ImageSource,
    /// Calibration pictures used at most (stratified by class when labeled).
    pub samples: usize,
    /// Range method.
    pub method: Method,
    /// Activation integer type.
    pub activations: ActivationType,
    /// One weight scale per tensor instead of per output channel.
    pub per_tensor_weights: bool,
    /// Depthwise convolutions.
    pub depthwise: Depthwise,
    /// Nodes left in f32.
    pub keep_float: Vec<String>,
    /// Pictures for the report (default: the calibration pictures).
    pub evaluation: Option<ImageSource>,
    /// `--auto`: labeled validation pictures and the allowed accuracy drop in points.
    pub auto: Option<(ImageSource, f64)>,
    /// Timed runs per model for the latency comparison (0: no latency measurement).
    pub bench_runs: usize,
    /// Pictures on which a model with an unfamiliarity score gets its int8 threshold (the f32
    /// rule: at most 1 % of them above it); `None` keeps the f32 model's threshold.
    pub threshold_pictures: Option<ImageSource>,
}

fn describe(src: &ImageSource) -> String {
    match &src.manifest {
        Some((m, split)) => format!("{} ({} split of {})", src.dir.display(), split, m.display()),
        None => src.dir.display().to_string(),
    }
}

/// Reads the f32 model and refuses files that cannot be quantized.
pub fn read_f32_model(path: &Path) -> Result<OnnxFile, QuantizeError> {
    let file = OnnxFile::read(path)?;
    if let Some(reason) = crate::model_file::quantized_evidence(&file) {
        return Err(QuantizeError::AlreadyQuantized {
            path: path.to_path_buf(),
            reason,
        });
    }
    Ok(file)
}

/// The int8 model's bytes: the rewrite plus the recipe in its metadata.
pub fn encode(mut proto: pb::ModelProto, recipe: &Recipe) -> Vec<u8> {
    proto.metadata_props.retain(|e| e.key != RECIPE_KEY);
    proto.metadata_props.push(pb::StringStringEntryProto {
        key: RECIPE_KEY.into(),
        value: serde_json::to_string(recipe).expect("recipe serializes"),
    });
    proto.encode_to_vec()
}

fn recipe(opts: &Options, samples: usize, hash: String, keep: &BTreeSet<String>) -> Recipe {
    Recipe {
        method: opts.method.name().into(),
        percentile: match opts.method {
            Method::Percentile(p) => Some(p),
            _ => None,
        },
        samples,
        calibration_sha256: hash,
        activations: opts.activations.name().into(),
        weights: if opts.per_tensor_weights {
            "per-tensor"
        } else {
            "per-channel"
        }
        .into(),
        depthwise: match opts.depthwise {
            Depthwise::Float => "float",
            Depthwise::Int8 => "int8",
        }
        .into(),
        keep_float: keep.iter().cloned().collect(),
        representation: "QLinearConv (int8 weights per channel, int32 bias) with \
            QuantizeLinear/DequantizeLinear at float boundaries; DequantizeLinear int8 weights \
            for float layers"
            .into(),
        tool: format!("leukoscope quantize {}", env!("CARGO_PKG_VERSION")),
    }
}

fn scores(labels: &[String], truth: &[usize], p: &[Vec<f32>]) -> Result<Scores, QuantizeError> {
    let r = leukoscope_model::metrics::evaluate(labels, truth, p)
        .map_err(|e| QuantizeError::Option(format!("metrics: {e}")))?;
    Ok(Scores {
        accuracy: r.accuracy,
        macro_f1: r.macro_avg.f1,
    })
}

fn summarize(
    source: String,
    set: &ImageSet,
    c: &Comparison,
    labels: &[String],
) -> Result<EvaluationSummary, QuantizeError> {
    let top = |p: &[Vec<f32>]| -> Vec<usize> {
        p.iter()
            .map(|r| leukoscope_model::metrics::argmax(r))
            .collect()
    };
    let agreement = leukoscope_model::metrics::top1_agreement(
        &top(&c.f32_probabilities),
        &top(&c.int8_probabilities),
    );
    let (f, q) = if set.is_labeled() {
        let truth: Vec<usize> = set.files.iter().map(|f| f.1.expect("labeled")).collect();
        (
            Some(scores(labels, &truth, &c.f32_probabilities)?),
            Some(scores(labels, &truth, &c.int8_probabilities)?),
        )
    } else {
        (None, None)
    };
    Ok(EvaluationSummary {
        source,
        images: set.files.len(),
        top1_agreement: agreement,
        accuracy_change_points: match (&f, &q) {
            (Some(f), Some(q)) => Some(100.0 * (q.accuracy - f.accuracy)),
            _ => None,
        },
        f32: f,
        int8: q,
    })
}

/// The layer where the most quantization noise is added: the largest rise of the
/// noise-to-signal ratio from one layer to the next (SQNR is cumulative), among layers not
/// already float.
fn noisiest_layer(layers: &[Layer], sqnr_db: &[f64]) -> Option<usize> {
    let nsr = |db: f64| {
        if db.is_finite() {
            10f64.powf(-db / 10.0)
        } else {
            0.0
        }
    };
    let mut previous = 0.0;
    let mut best: Option<(f64, usize)> = None;
    for (k, (l, &db)) in layers.iter().zip(sqnr_db).enumerate() {
        let added = nsr(db) - previous;
        previous = nsr(db);
        if l.kind != LayerKind::Float && best.is_none_or(|b| added > b.0) {
            best = Some((added, k));
        }
    }
    best.map(|b| b.1)
}

/// Quantizes `model` into `out` and returns the report (also written beside `out`).
pub fn run(
    model: &Path,
    out: &Path,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Report, QuantizeError> {
    if opts.samples == 0 {
        return Err(QuantizeError::Option("--samples must be at least 1".into()));
    }
    let f32_model = read_f32_model(model)?;
    let contract = f32_model.contract().clone();

    let set = ImageSet::list(&opts.calibration, &contract)?.subset(opts.samples);
    let hash = set.hash()?;
    progress.begin("preparing calibration pictures", set.files.len() as u64);
    let inputs = set.inputs(&contract, &|| progress.tick())?;
    let tensors = activation_tensors(&f32_model);
    progress.begin("calibrating (2 passes)", 2 * inputs.len() as u64);
    let stats = collect(&f32_model, &tensors, &inputs, &|| progress.tick())?;
    let ranges: HashMap<String, Range> = stats
        .iter()
        .map(|(k, s)| (k.clone(), s.range(opts.method)))
        .collect();
    tracing::info!(
        tensors = ranges.len(),
        pictures = inputs.len(),
        "calibrated"
    );

    let mut keep: BTreeSet<String> = opts.keep_float.iter().cloned().collect();
    let build =
        |keep: &BTreeSet<String>| -> Result<(OnnxFile, Vec<Layer>, Vec<u8>), QuantizeError> {
            let rw = rewrite(
                &f32_model,
                &ranges,
                &RewriteOptions {
                    activations: opts.activations,
                    per_tensor_weights: opts.per_tensor_weights,
                    keep_float: keep.clone(),
                    depthwise: opts.depthwise,
                },
            )?;
            let bytes = encode(rw.proto, &recipe(opts, set.files.len(), hash.clone(), keep));
            Ok((OnnxFile::from_bytes(out, &bytes)?, rw.layers, bytes))
        };

    let mut auto_steps = Vec::new();
    let (mut int8_model, mut layers, mut bytes) = build(&keep)?;
    if let Some((val_src, budget)) = &opts.auto {
        let val = ImageSet::list(val_src, &contract)?;
        if !val.is_labeled() {
            return Err(QuantizeError::Data {
                path: val_src.dir.clone(),
                reason: "--auto needs a labeled validation folder (one subfolder per label)".into(),
            });
        }
        progress.begin("preparing validation pictures", val.files.len() as u64);
        let val_inputs = val.inputs(&contract, &|| progress.tick())?;
        loop {
            progress.begin("validating", val_inputs.len() as u64);
            let c = compare(&f32_model, &int8_model, &layers, &val_inputs, &|| {
                progress.tick()
            })?;
            let s = summarize(describe(val_src), &val, &c, &contract.labels)?;
            let drop = -s.accuracy_change_points.unwrap_or(0.0);
            let step = format!(
                "{} layer(s) float {:?}: validation accuracy drop {drop:.2} pt (budget {budget:.2})",
                keep.len(),
                keep
            );
            tracing::info!("{step}");
            auto_steps.push(step);
            if drop <= *budget {
                break;
            }
            let Some(k) = noisiest_layer(&layers, &c.sqnr_db) else {
                auto_steps.push("every layer is float already; the budget cannot be met".into());
                break;
            };
            keep.insert(layers[k].node.clone());
            (int8_model, layers, bytes) = build(&keep)?;
        }
    }

    let unfamiliarity = match (&contract.unfamiliarity, &opts.threshold_pictures) {
        (Some(u), Some(src)) => {
            let set = ImageSet::list(src, &contract)?;
            progress.begin(
                "setting the int8 unfamiliarity threshold",
                set.files.len() as u64,
            );
            let inputs = set.inputs(&contract, &|| progress.tick())?;
            let (refit, refitted) = refit_threshold(out, &bytes, u, &inputs, describe(src))?;
            bytes = refitted;
            Some(refit)
        }
        _ => None,
    };

    write_atomically(out, &bytes)?;

    let (eval_src, eval_set) = match &opts.evaluation {
        Some(src) => (describe(src), ImageSet::list(src, &contract)?),
        None => (
            format!("{} (calibration pictures)", describe(&opts.calibration)),
            set.clone(),
        ),
    };
    let eval_inputs = if opts.evaluation.is_some() {
        progress.begin("preparing evaluation pictures", eval_set.files.len() as u64);
        eval_set.inputs(&contract, &|| progress.tick())?
    } else {
        inputs
    };
    progress.begin("evaluating f32 and int8", eval_inputs.len() as u64);
    let c = compare(&f32_model, &int8_model, &layers, &eval_inputs, &|| {
        progress.tick()
    })?;
    let evaluation = summarize(eval_src, &eval_set, &c, &contract.labels)?;
    let mut per_layer: Vec<LayerSqnr> = layers
        .iter()
        .zip(&c.sqnr_db)
        .map(|(l, db)| LayerSqnr {
            node: l.node.clone(),
            op: l.op.clone(),
            kind: l.kind,
            sqnr_db: db.is_finite().then_some(*db),
        })
        .collect();
    per_layer.sort_by(|a, b| {
        let v = |x: &LayerSqnr| x.sqnr_db.unwrap_or(f64::INFINITY);
        v(a).total_cmp(&v(b))
    });

    let (latency_f32, latency_int8) = if opts.bench_runs > 0 {
        progress.begin("timing f32 and int8 in tract", 2);
        let a = latency(model, opts.bench_runs)?;
        progress.tick();
        let b = latency(out, opts.bench_runs)?;
        progress.tick();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let bytes_f32 = file_len(model)?;
    let bytes_int8 = bytes.len() as u64;
    let report = Report {
        model_f32: model.to_path_buf(),
        model_int8: out.to_path_buf(),
        bytes_f32,
        bytes_int8,
        size_ratio: bytes_int8 as f64 / bytes_f32 as f64,
        recipe: recipe(opts, set.files.len(), hash, &keep),
        evaluation,
        layers: per_layer,
        latency_f32,
        latency_int8,
        auto_steps,
        unfamiliarity,
    };
    report.write_json(&Report::path_for(out))?;
    Ok(report)
}

/// Latency of a model file with `edge bench`'s harness (synthetic smear JPEG, one thread), and
/// where the time goes.
pub fn latency(path: &Path, runs: usize) -> Result<Latency, QuantizeError> {
    let m = leukoscope_model::classifier::OnnxClassifier::load(path, &Default::default())?;
    let b = leukoscope_model::bench::run(
        &m,
        &leukoscope_model::bench::sample_jpeg(),
        runs,
        runs / 5 + 2,
        1,
    )?;
    Ok(Latency {
        inference_ms_p50: b.inference_ms_p50,
        inference_ms_p95: b.inference_ms_p95,
        runs,
        profile: crate::profile::profile_path(path, runs.min(20))?,
    })
}

/// The int8 model's own unfamiliarity threshold: its scores on `inputs` (the quantized features
/// move them), the f32 rule applied ([`VALIDATION_REJECTION`]), written into the contract in
/// `bytes`. Returns what was done and the new bytes.
fn refit_threshold(
    out: &Path,
    bytes: &[u8],
    f32_score: &Unfamiliarity,
    inputs: &[Vec<f32>],
    source: String,
) -> Result<(ThresholdRefit, Vec<u8>), QuantizeError> {
    let model = OnnxClassifier::from_bytes(out, bytes, &Default::default())?;
    let scores = inputs
        .iter()
        .map(|x| {
            model.predict(x).map(|p| p.unfamiliarity).and_then(|u| {
                u.ok_or_else(|| ModelError::Engine {
                    path: out.to_path_buf(),
                    reason: "the int8 model gives no unfamiliarity score".into(),
                })
            })
        })
        .collect::<Result<Vec<f32>, ModelError>>()?;
    let threshold =
        threshold_for(&scores, VALIDATION_REJECTION).ok_or_else(|| QuantizeError::Data {
            path: PathBuf::from(&source),
            reason: "no pictures to set the unfamiliarity threshold on".into(),
        })?;
    let share_above = |t: f32| {
        scores.iter().filter(|&&s| !s.is_finite() || s > t).count() as f32 / scores.len() as f32
    };
    let mut contract = model.contract().clone();
    let mut score = f32_score.clone();
    score.threshold = threshold;
    score.validation_rejected = share_above(threshold);
    contract.unfamiliarity = Some(score);
    let mut proto = pb::ModelProto::decode(bytes).map_err(|e| QuantizeError::NotOnnx {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    let key = metadata_keys::UNFAMILIARITY;
    proto.metadata_props.retain(|e| e.key != key);
    proto.metadata_props.extend(
        contract
            .to_metadata()
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(key, value)| pb::StringStringEntryProto { key, value }),
    );
    let refit = ThresholdRefit {
        source,
        pictures: scores.len(),
        f32_threshold: f32_score.threshold,
        int8_rejected_at_f32_threshold: share_above(f32_score.threshold),
        int8_threshold: threshold,
        int8_rejected: share_above(threshold),
    };
    Ok((refit, proto.encode_to_vec()))
}

fn file_len(p: &Path) -> Result<u64, QuantizeError> {
    std::fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| QuantizeError::Io {
            path: p.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Writes `bytes` to a temporary file beside `path`, then renames it: a reader never sees half a
/// model, and an existing file is only replaced by a complete one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), QuantizeError> {
    let io = |e: std::io::Error| QuantizeError::Io {
        path: path.to_path_buf(),
        reason: format!("cannot write: {e}"),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("onnx.partial");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
