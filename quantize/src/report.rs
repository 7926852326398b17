//! The quantization report: printed, and written as JSON beside the int8 model.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::QuantizeError;
use crate::profile::OpTime;
use crate::rewrite::LayerKind;

/// The recipe stored in the int8 model's metadata under [`leukoscope_model::contract::metadata_keys::QUANTIZATION`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    /// Calibration method: `minmax`, `percentile` or `entropy`.
    pub method: String,
    /// The percentile, for `percentile`.
    pub percentile: Option<f64>,
    /// Calibration pictures used.
    pub samples: usize,
    /// SHA-256 over the calibration pictures' relative paths and contents.
    pub calibration_sha256: String,
    /// Activation type, `u8` or `i8`.
    pub activations: String,
    /// `per-channel` or `per-tensor` (weights, symmetric int8).
    pub weights: String,
    /// Depthwise convolutions: `float` (int8 weights, float compute) or `int8`.
    pub depthwise: String,
    /// Layers left in f32.
    pub keep_float: Vec<String>,
    /// The ONNX representation written.
    pub representation: String,
    /// The tool and its version.
    pub tool: String,
}

/// Accuracy and macro-F1 of one model on the labeled evaluation pictures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scores {
    /// Fraction of pictures classified correctly.
    pub accuracy: f64,
    /// Unweighted mean F1 over classes.
    pub macro_f1: f64,
}

/// How the two models compare on the evaluation pictures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvaluationSummary {
    /// The folder (and manifest split) used.
    pub source: String,
    /// Pictures evaluated.
    pub images: usize,
    /// Fraction of pictures where both models give the same top-1 class.
    pub top1_agreement: f64,
    /// f32 scores (labeled folders only).
    pub f32: Option<Scores>,
    /// int8 scores (labeled folders only).
    pub int8: Option<Scores>,
    /// int8 accuracy minus f32 accuracy, in percentage points (labeled folders only).
    pub accuracy_change_points: Option<f64>,
}

/// One layer's SQNR.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerSqnr {
    /// Node name in the f32 graph.
    pub node: String,
    /// `Conv` or `Gemm`.
    pub op: String,
    /// What it became.
    pub kind: LayerKind,
    /// SQNR in dB (`null` when exact).
    pub sqnr_db: Option<f64>,
}

/// Latency of one model (tract, `edge bench`'s harness, one thread).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    /// Median inference time.
    pub inference_ms_p50: f64,
    /// 95th percentile.
    pub inference_ms_p95: f64,
    /// Timed runs.
    pub runs: usize,
    /// Time per tract operator kind, most expensive first (from [`crate::profile`]).
    pub profile: Vec<OpTime>,
}

/// Everything the quantizer measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The f32 model.
    pub model_f32: PathBuf,
    /// The int8 model written.
    pub model_int8: PathBuf,
    /// File size of the f32 model.
    pub bytes_f32: u64,
    /// File size of the int8 model.
    pub bytes_int8: u64,
    /// `bytes_int8 / bytes_f32`.
    pub size_ratio: f64,
    /// The recipe (also in the model's metadata).
    pub recipe: Recipe,
    /// The comparison on the evaluation pictures.
    pub evaluation: EvaluationSummary,
    /// Per-layer SQNR, worst first.
    pub layers: Vec<LayerSqnr>,
    /// f32 latency in tract on this machine.
    pub latency_f32: Option<Latency>,
    /// int8 latency in tract on this machine.
    pub latency_int8: Option<Latency>,
    /// What `--auto` tried: one line per step.
    pub auto_steps: Vec<String>,
    /// The int8 model's own unfamiliarity threshold (`--validation`, a model with a score).
    #[serde(default)]
    pub unfamiliarity: Option<ThresholdRefit>,
}

/// The unfamiliarity threshold set again on the int8 model's own scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThresholdRefit {
    /// The pictures it was set on.
    pub source: String,
    /// How many.
    pub pictures: usize,
    /// The f32 model's threshold.
    pub f32_threshold: f32,
    /// Share of the pictures the int8 model rejects at the f32 threshold.
    pub int8_rejected_at_f32_threshold: f32,
    /// The threshold written into the int8 model.
    pub int8_threshold: f32,
    /// Share it rejects.
    pub int8_rejected: f32,
}

impl Report {
    /// Where the JSON report of `out` goes: `NAME.onnx` → `NAME.quantization.json`.
    pub fn path_for(out: &Path) -> PathBuf {
        out.with_extension("quantization.json")
    }

    /// Writes the JSON report.
    pub fn write_json(&self, path: &Path) -> Result<(), QuantizeError> {
        let text = serde_json::to_string_pretty(self).expect("report serializes");
        std::fs::write(path, text + "\n").map_err(|e| QuantizeError::Io {
            path: path.to_path_buf(),
            reason: format!("cannot write report: {e}"),
        })
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mb = |b: u64| b as f64 / 1e6;
        let _ = writeln!(
            s,
            "size      f32 {:.2} MB → int8 {:.2} MB ({:.1} %)",
            mb(self.bytes_f32),
            mb(self.bytes_int8),
            100.0 * self.size_ratio
        );
        let e = &self.evaluation;
        let _ = writeln!(
            s,
            "evaluate  {} pictures ({}): top-1 agreement int8 vs f32 {:.2} %",
            e.images,
            e.source,
            100.0 * e.top1_agreement
        );
        if let (Some(f), Some(q)) = (&e.f32, &e.int8) {
            let _ = writeln!(
                s,
                "          accuracy f32 {:.2} % → int8 {:.2} % ({:+.2} pt); macro-F1 {:.4} → {:.4}",
                100.0 * f.accuracy,
                100.0 * q.accuracy,
                100.0 * (q.accuracy - f.accuracy),
                f.macro_f1,
                q.macro_f1
            );
        }
        if let (Some(f), Some(q)) = (&self.latency_f32, &self.latency_int8) {
            let _ = writeln!(
                s,
                "latency   tract, 1 thread, p50: f32 {:.2} ms, int8 {:.2} ms ({:.2}× the f32 time)",
                f.inference_ms_p50,
                q.inference_ms_p50,
                q.inference_ms_p50 / f.inference_ms_p50
            );
            for (name, l) in [("f32", f), ("int8", q)] {
                let top: Vec<String> = l
                    .profile
                    .iter()
                    .take(6)
                    .map(|o| format!("{} ×{} {:.2} ms", o.op, o.nodes, o.ms))
                    .collect();
                let _ = writeln!(s, "          {name:<4} time by op: {}", top.join(", "));
            }
        }
        if let Some(u) = &self.unfamiliarity {
            let _ = writeln!(
                s,
                "unfamiliarity threshold f32 {:.3} (int8 rejects {:.2} % of {} pictures at it) → int8 {:.3} ({:.2} %), set on {}",
                u.f32_threshold,
                100.0 * u.int8_rejected_at_f32_threshold,
                u.pictures,
                u.int8_threshold,
                100.0 * u.int8_rejected,
                u.source
            );
        }
        for step in &self.auto_steps {
            let _ = writeln!(s, "auto      {step}");
        }
        let _ = writeln!(s, "per-layer SQNR (dB), worst first:");
        for l in &self.layers {
            let db = l.sqnr_db.map_or("exact".to_string(), |d| format!("{d:.1}"));
            let kind = match l.kind {
                LayerKind::Int8 => "int8",
                LayerKind::WeightsOnly => "int8 weights",
                LayerKind::Float => "f32",
            };
            let _ = writeln!(s, "  {:<24} {:<5} {:<13} {db:>7}", l.node, l.op, kind);
        }
        s
    }
}
