//! `quantize`: an exported f32 ONNX classifier → int8 ONNX, with a report of what it cost.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use quantize::calibrate::ImageSource;
use quantize::pipeline::{Options, Progress};
use quantize::ranges::{ActivationType, Method};
use quantize::report::Report;
use quantize::rewrite::Depthwise;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MethodArg {
    /// Smallest and largest value seen.
    Minmax,
    /// `--percentile` of the values at each end.
    Percentile,
    /// KL-divergence threshold (TensorRT / onnxruntime entropy calibration).
    Entropy,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Act {
    /// Unsigned 8-bit activations (onnxruntime's fast path on x86).
    U8,
    /// Signed 8-bit activations.
    I8,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DepthwiseArg {
    /// int8 weights, f32 compute: tract has no integer depthwise kernel (the fastest here).
    Float,
    /// QLinearConv like the other convolutions.
    Int8,
}

/// Post-training static quantization of a leukoscope ONNX model (from `trainer export`) to int8.
///
/// Convolutions become QLinearConv (weights symmetric int8 per output channel, activations u8 or
/// i8 per tensor with ranges from calibration); depthwise convolutions and dense layers keep f32
/// compute with int8 weights. The output is standard ONNX (opset 13) that tract and onnxruntime
/// run, keeps every metadata entry of the input and adds the recipe under
/// `leukoscope.quantization`. The same inputs always give the same bytes.
///
/// A report (size, top-1 agreement, accuracy and macro-F1 of both models, per-layer SQNR,
/// latency in tract) is printed and written beside the output as NAME.quantization.json.
#[derive(Parser, Debug)]
#[command(name = "quantize", version)]
struct Cli {
    /// The f32 ONNX model (with the leukoscope contract metadata).
    #[arg(long)]
    model: PathBuf,
    /// Calibration pictures: a labeled folder (one subfolder per label; sampling is stratified)
    /// or a folder of pictures. Prepared with the model's contract, as the device does.
    #[arg(long)]
    calibration: PathBuf,
    /// The int8 ONNX file to write.
    #[arg(long)]
    out: PathBuf,
    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value = "minmax")]
    method: MethodArg,
    /// The percentile kept inside the range by `--method percentile`.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Calibration pictures used at most.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// One weight scale per tensor instead of one per output channel.
    #[arg(long)]
    per_tensor: bool,
    /// Integer type of activations.
    #[arg(long, value_enum, default_value = "u8")]
    activations: Act,
    /// Depthwise convolutions.
    #[arg(long, value_enum, default_value = "float")]
    depthwise: DepthwiseArg,
    /// Leave these nodes (ONNX node names, e.g. Conv_4 Gemm_381) entirely in f32.
    #[arg(long, num_args = 1.., value_name = "NODE")]
    keep_float: Vec<String>,
    /// Keep the fewest layers float needed to stay within `--budget` accuracy points of the
    /// f32 model on the labeled `--validation` pictures (greedy: the layer adding the most
    /// quantization noise goes float first).
    #[arg(long, requires = "validation")]
    auto: bool,
    /// Validation pictures: `--auto` keeps layers float against them (labeled), and a model
    /// with an unfamiliarity score gets its int8 threshold set on them (the int8 features move
    /// the score; the f32 rule: at most 1 % of them above it). Without it the f32 threshold is
    /// kept.
    #[arg(long)]
    validation: Option<PathBuf>,
    /// Accuracy drop allowed by `--auto`, in percentage points.
    #[arg(long, default_value_t = 0.3)]
    budget: f64,
    /// Pictures for the report (default: the calibration pictures). Labeled folders give
    /// accuracy and macro-F1 too.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// A trainer manifest (file,sha256,class,split; paths relative to the folders above): the
    /// folders are then restricted to its splits.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Manifest split used for calibration.
    #[arg(long, default_value = "train", requires = "manifest")]
    calibration_split: String,
    /// Manifest split used for `--validation`.
    #[arg(long, default_value = "val", requires = "manifest")]
    validation_split: String,
    /// Manifest split used for `--eval`.
    #[arg(long, default_value = "test", requires = "manifest")]
    eval_split: String,
    /// Timed inference runs per model for the latency comparison (0 skips it).
    #[arg(long, default_value_t = 50)]
    bench_runs: usize,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn begin(&self, what: &str, len: u64) {
        self.0.set_message(what.to_string());
        self.0.set_length(len);
        self.0.set_position(0);
    }
    fn tick(&self) {
        self.0.inc(1);
    }
}

fn main() -> anyhow::Result<()> {
    leukoscope_model::logging::init();
    let cli = Cli::parse();
    if !(50.0..=100.0).contains(&cli.percentile) {
        bail!("--percentile {} must be between 50 and 100", cli.percentile);
    }
    if cli.budget < 0.0 {
        bail!("--budget must not be negative");
    }
    let source = |dir: &PathBuf, split: &str| ImageSource {
        dir: dir.clone(),
        manifest: cli.manifest.clone().map(|m| (m, split.to_string())),
    };
    let opts = Options {
        calibration: source(&cli.calibration, &cli.calibration_split),
        samples: cli.samples,
        method: match cli.method {
            MethodArg::Minmax => Method::MinMax,
            MethodArg::Percentile => Method::Percentile(cli.percentile),
            MethodArg::Entropy => Method::Entropy,
        },
        activations: match cli.activations {
            Act::U8 => ActivationType::U8,
            Act::I8 => ActivationType::I8,
        },
        per_tensor_weights: cli.per_tensor,
        depthwise: match cli.depthwise {
            DepthwiseArg::Float => Depthwise::Float,
            DepthwiseArg::Int8 => Depthwise::Int8,
        },
        keep_float: cli.keep_float.clone(),
        evaluation: cli.eval.as_ref().map(|d| source(d, &cli.eval_split)),
        auto: cli.auto.then(|| {
            (
                source(
                    cli.validation.as_ref().expect("clap requires it"),
                    &cli.validation_split,
                ),
                cli.budget,
            )
        }),
        bench_runs: cli.bench_runs,
        threshold_pictures: cli
            .validation
            .as_ref()
            .map(|d| source(d, &cli.validation_split)),
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:32} {bar:30} {pos}/{len} [{elapsed}]")
            .expect("valid template"),
    );
    let report = quantize::pipeline::run(&cli.model, &cli.out, &opts, &Bar(bar.clone()));
    bar.finish_and_clear();
    let report = report?;
    print!("{}", report.to_text());
    println!(
        "wrote {} and {}",
        cli.out.display(),
        Report::path_for(&cli.out).display()
    );
    Ok(())
}
