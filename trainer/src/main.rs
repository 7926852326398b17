//! `trainer`: train, evaluate and benchmark leukoscope models. See `trainer --help`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use trainer::backend::{BackendKind, set_threads};
use trainer::data::augment::AugmentConfig;
use trainer::data::balance::Sampling;
use trainer::data::split::SplitFractions;
use trainer::model::{EfficientNetVariant, ModelSpec};
use trainer::optim::{OptimizerKind, Schedule};
use trainer::run::{ColourMethod, RunConfig, RunDir};
use trainer::train::{FitRequest, fit};

/// Train, evaluate and benchmark leukoscope's blood-smear classifiers.
///
/// A dataset is a folder with one subfolder of images (JPEG or PNG) per class, e.g.
/// `all-taleqani/{Benign,Early,Pre,Pro}/*.jpg`. Each run writes a run folder (settings, split
/// manifest, checkpoints, best weights, evaluation report) that `evaluate` and, later, `export`
/// read. Runs checkpoint every epoch: `fit --resume` continues an interrupted run exactly.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// CPU threads for training and inference (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on a labeled folder, then evaluate it on the held-out test split.
    Fit(Box<FitArgs>),
    /// Evaluate a run's best model: its test split, or every image of another labeled folder.
    Evaluate(EvaluateArgs),
    /// Measure training throughput (images/s) on random data.
    Bench(BenchArgs),
    /// Write a run's best model as a standard ONNX file carrying its contract in its metadata.
    Export(ExportArgs),
    /// Make an exported f32 model say when it is unsure and when a picture is unlike its
    /// training pictures: fits temperature scaling (validation split) and the unfamiliarity
    /// score (Mahalanobis distance of the pooled features to the training classes; threshold
    /// rejecting at most 1 % of the validation split) and writes them into a new ONNX file
    /// (graph output `unfamiliarity`, metadata `leukoscope.temperature` and
    /// `leukoscope.unfamiliarity`), with `<out>.uncertainty.json`. Quantize the result.
    Uncertainty(UncertaintyArgs),
}

#[derive(Args)]
struct UncertaintyArgs {
    /// The exported f32 ONNX file.
    #[arg(long)]
    model: PathBuf,
    /// The labeled folder the model was trained on.
    #[arg(long)]
    data: PathBuf,
    /// The run's split (its manifest.csv): the training split fits the score, the validation
    /// split the temperature and the threshold; the test split is not read.
    #[arg(long)]
    manifest: PathBuf,
    /// The ONNX file to write.
    #[arg(long)]
    out: PathBuf,
    /// Shrinkage of the shared covariance towards its mean variance (0..1).
    #[arg(long, default_value_t = leukoscope_model::familiarity::DEFAULT_SHRINKAGE)]
    shrinkage: f64,
    /// The features tensor (default: the output of the last Flatten, the pooled features).
    #[arg(long)]
    features: Option<String>,
    /// Also fit the score on N copies of each training picture as another lamp, white balance,
    /// stain batch or JPEG setting shows it (`trainer fit`'s colour, HED and JPEG augmentation;
    /// no geometry or scale), so acquisition colour the model handles counts as familiar. A
    /// trade: the wider fit also lets pictures at another magnification look familiar (README,
    /// "Knowing when it does not know"). The threshold still comes from the unchanged
    /// validation split.
    #[arg(long, default_value_t = 0, value_name = "N")]
    augmented_copies: usize,
    /// The temperature is fitted on the validation split, then kept at or above this. Below 1
    /// it sharpens the probabilities: the validation split may reward that, but pictures unlike
    /// it then get confident wrong answers (measured on a fine-tune of the shipped model: with
    /// its fitted 0.66, 6.6 % of 2×-magnified validation pictures were confidently wrong; at
    /// 1.0, 4.0 %). 0 keeps the fit as it is.
    #[arg(long, default_value_t = 1.0, value_name = "T")]
    min_temperature: f32,
    /// Seed of the augmented copies.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct ExportArgs {
    /// Run folder written by `trainer fit`.
    #[arg(long)]
    run: PathBuf,
    /// The ONNX file to write.
    #[arg(long)]
    out: PathBuf,
    /// The model input's pixel size in µm per pixel (`leukoscope.um_per_px`), e.g. from a stage
    /// micrometer. Default: measured from the red cells of the training split's pictures
    /// (`--scale-pictures`); when that is impossible the file is written without it.
    #[arg(long, value_name = "UM")]
    um_per_px: Option<f64>,
    /// Training pictures to measure the pixel size on (evenly spread over the split).
    #[arg(long, default_value_t = 200, value_name = "N")]
    scale_pictures: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Family {
    /// MobileNetV2 with a width multiplier and a dense head.
    Mobilenetv2,
    /// EfficientNet-B0 (torchvision's architecture; native input 224) with the same dense head.
    EfficientnetB0,
    /// EfficientNet-B3 (width 1.2, depth 1.4; native input 300) with the same dense head.
    EfficientnetB3,
    /// The seed paper's compact three-layer CNN.
    Cnn,
}

#[derive(Args)]
struct ModelArgs {
    /// Architecture (required, except with `fit --resume`).
    #[arg(long, value_enum)]
    model: Option<Family>,
    /// MobileNetV2 width multiplier (0.35–1.4).
    #[arg(long, default_value_t = 1.0)]
    width: f32,
    /// Units of the hidden dense layer in the head of MobileNetV2 and EfficientNet.
    #[arg(long, default_value_t = 128)]
    head_units: usize,
    /// Dropout before the output layer (default: 0.2 for MobileNetV2 and EfficientNet-B0, 0.3
    /// for EfficientNet-B3 as in torchvision, 0.5 for the CNN).
    #[arg(long)]
    dropout: Option<f64>,
    /// EfficientNet's stochastic depth: the last MBConv block skips its residual branch with
    /// this probability in training, block i of n with p·i/n (torchvision: 0.2).
    #[arg(long, default_value_t = 0.2, value_name = "P")]
    stochastic_depth: f64,
}

impl ModelArgs {
    fn spec(&self) -> Result<ModelSpec> {
        let Some(family) = self.model else {
            anyhow::bail!("--model mobilenetv2|efficientnet-b0|efficientnet-b3|cnn is required");
        };
        Ok(match family {
            Family::Mobilenetv2 => {
                if !(0.35..=1.4).contains(&self.width) {
                    anyhow::bail!("--width must be between 0.35 and 1.4, got {}", self.width);
                }
                ModelSpec::Mobilenetv2 {
                    width: self.width,
                    head_units: self.head_units,
                    dropout: self.dropout.unwrap_or(0.2),
                }
            }
            Family::EfficientnetB0 | Family::EfficientnetB3 => {
                let variant = if matches!(family, Family::EfficientnetB0) {
                    EfficientNetVariant::B0
                } else {
                    EfficientNetVariant::B3
                };
                if !(0.0..1.0).contains(&self.stochastic_depth) {
                    anyhow::bail!(
                        "--stochastic-depth must be in [0, 1), got {}",
                        self.stochastic_depth
                    );
                }
                let default_dropout = match variant {
                    EfficientNetVariant::B0 => 0.2,
                    EfficientNetVariant::B3 => 0.3,
                };
                ModelSpec::Efficientnet {
                    variant,
                    head_units: self.head_units,
                    dropout: self.dropout.unwrap_or(default_dropout),
                    stochastic_depth: self.stochastic_depth,
                }
            }
            Family::Cnn => ModelSpec::Cnn {
                dropout: self.dropout.unwrap_or(0.5),
            },
        })
    }
}

#[derive(Args)]
struct FitArgs {
    /// Dataset folder: one subfolder of images per class (required, except with --resume).
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Run folder to create (or to continue with --resume).
    #[arg(long)]
    out: PathBuf,
    /// Continue the interrupted run in --out from its last checkpoint. Its settings come from
    /// its run.json; only a larger --epochs is taken from the command line.
    #[arg(long)]
    resume: bool,
    /// Square input size in pixels (images are centre-cropped and resized to it). The CNN needs
    /// a multiple of 8.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Maximum number of epochs [default: 30].
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    optimizer: OptimizerKind,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = Schedule::Constant)]
    schedule: Schedule,
    /// Weight decay (0 = none; AdamW uses 0.01 when 0).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Early stopping: stop after this many epochs without a lower validation loss (0 = never).
    #[arg(long, default_value_t = 8)]
    patience: usize,
    /// Seed for the split, sampling, augmentation, initialisation and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of each class held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Fraction of each class held out for the test report.
    #[arg(long, default_value_t = 0.1)]
    test_fraction: f64,
    /// Hold out whole groups (patients, subjects) for the test split. REGEX's first capture on
    /// each file's path (relative to --data) is its group, e.g. 'UID_(H?\d+)_' for C-NMC
    /// subjects; validation stays per image within the other groups.
    #[arg(long, value_name = "REGEX", conflicts_with = "manifest")]
    test_group: Option<String>,
    /// Reuse the split of an earlier run's manifest.csv (reproduces it exactly, or refuses).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// How training images are drawn each epoch.
    #[arg(long, value_enum, default_value_t = Sampling::Uniform)]
    sampling: Sampling,
    /// Turn off the inverse-frequency class weights in the loss.
    #[arg(long)]
    no_class_weights: bool,
    #[command(flatten)]
    augment: AugmentArgs,
    /// Refuse unreadable files instead of skipping (and reporting) them.
    #[arg(long)]
    strict: bool,
    /// Start the backbone from torchvision weights (.pth/.safetensors): a `mobilenet_v2` state
    /// dict for --model mobilenetv2, `efficientnet_b0` / `efficientnet_b3` for EfficientNet.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Start from an earlier model (same architecture and classes; same size too, except that
    /// MobileNetV2 and EfficientNet may move to another --size) and fine-tune it, e.g. with new augmentation or a
    /// clinic's own pictures: a run folder (its best weights) or a leukoscope f32 ONNX file such
    /// as the shipped models/*-f32.onnx.
    #[arg(long, value_name = "RUN_DIR|FILE.onnx", conflicts_with = "pretrained")]
    init_from: Option<PathBuf>,
    /// Colour normalization the model is trained with and carries in its contract:
    /// `background-white` scales each picture's channels so its slide background becomes the
    /// training split's background colour (lamp colour, white balance and exposure removed, on
    /// the device as in training); `none` uses pictures as they are.
    #[arg(long, value_enum, default_value_t = ColourMethod::BackgroundWhite)]
    colour: ColourMethod,
    /// Stochastic weight averaging: from this epoch on (1-based), fold each epoch's final
    /// weights into a running mean; when training ends, re-measure BatchNorm statistics on the
    /// training pictures and make that mean the run's model (the best single epoch is kept as
    /// model-best-epoch.bpk). Pair it with a constant learning rate and --patience 0.
    #[arg(long, value_name = "EPOCH", value_parser = clap::value_parser!(u64).range(1..))]
    average_from: Option<u64>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
    /// Skip the test-split evaluation at the end.
    #[arg(long)]
    no_evaluate: bool,
    /// Stop after this many epochs in this invocation (the run stays resumable with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
}

/// Training augmentation (defaults follow the seed paper, plus stain jitter).
#[derive(Args)]
struct AugmentArgs {
    /// Turn every augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// No horizontal flips.
    #[arg(long)]
    no_hflip: bool,
    /// No vertical flips.
    #[arg(long)]
    no_vflip: bool,
    /// Rotation range in degrees (±).
    #[arg(long, default_value_t = 30.0)]
    rotation: f32,
    /// Width/height shift as a fraction of the side (±).
    #[arg(long, default_value_t = 0.25)]
    shift: f32,
    /// Zoom range (each axis in [1−z, 1+z]).
    #[arg(long, default_value_t = 0.3)]
    zoom: f32,
    /// Shear intensity (±).
    #[arg(long, default_value_t = 0.2)]
    shear: f32,
    /// Channel shift in 0..255 units (±).
    #[arg(long, default_value_t = 10.0)]
    channel_shift: f32,
    /// Brightness, contrast and saturation jitter (± fraction).
    #[arg(long, default_value_t = 0.15)]
    color_jitter: f32,
    /// Hue jitter in degrees (±).
    #[arg(long, default_value_t = 8.0)]
    hue: f32,
    /// Colour-cast jitter: each channel scaled by its own factor in [1−g, 1+g].
    #[arg(long, default_value_t = 0.15)]
    channel_gain: f32,
    /// Probability of blanking the bottom-right scale-bar label area.
    #[arg(long, default_value_t = 0.5)]
    corner_erase: f32,
    /// Stain-space (HED) jitter: each stain density scaled by [1−h, 1+h] and shifted by ±h.
    #[arg(long, default_value_t = 0.05)]
    hed: f32,
    /// Probability of re-encoding a picture as JPEG (quality 25–95).
    #[arg(long, default_value_t = 0.25)]
    jpeg: f32,
    /// A quarter of the pictures shrunk by up to this factor and enlarged back (fewer camera
    /// pixels per cell); 1 turns it off.
    #[arg(long, default_value_t = 2.5)]
    low_resolution: f32,
    /// A fifth of the pictures enlarged by up to this factor (another magnification); 1 turns
    /// it off.
    #[arg(long, default_value_t = 2.0)]
    magnify: f32,
}

impl AugmentArgs {
    fn config(&self) -> AugmentConfig {
        if self.no_augment {
            return AugmentConfig::none();
        }
        AugmentConfig {
            hflip: !self.no_hflip,
            vflip: !self.no_vflip,
            rotation: self.rotation,
            shift: self.shift,
            zoom: self.zoom,
            shear: self.shear,
            channel_shift: self.channel_shift,
            brightness: self.color_jitter,
            contrast: self.color_jitter,
            saturation: self.color_jitter,
            hue: self.hue,
            channel_gain: self.channel_gain,
            corner_erase: self.corner_erase,
            hed: self.hed,
            jpeg: self.jpeg,
            low_resolution: self.low_resolution,
            magnify: self.magnify,
        }
    }
}

#[derive(Args)]
struct EvaluateArgs {
    /// Run folder written by `trainer fit`.
    #[arg(long)]
    run: PathBuf,
    /// A labeled folder to evaluate on instead of the run's test split (class folders must be
    /// labels of the model).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchFormat {
    Table,
    Json,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Square input size.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Output classes.
    #[arg(long, default_value_t = 4)]
    classes: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
    /// Further architectures to time in the same run, as FAMILY or mobilenetv2:WIDTH (e.g.
    /// `--compare mobilenetv2:0.75`; repeatable): one training step of each in turn, so machine
    /// noise hits them alike. Same size, batch, head and backend as --model.
    #[arg(long, value_name = "FAMILY[:WIDTH]")]
    compare: Vec<String>,
    /// Output format (JSON: one object, or an array with --compare).
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    format: BenchFormat,
}

/// A `--compare` entry (`efficientnet-b0`, `mobilenetv2:0.75`) with the other settings of `base`.
fn compared_spec(entry: &str, base: &ModelArgs) -> Result<ModelSpec> {
    let (family, width) = match entry.split_once(':') {
        Some((f, w)) => (
            f,
            Some(w.parse::<f32>().map_err(|_| {
                anyhow::anyhow!("--compare {entry}: '{w}' is not a width multiplier")
            })?),
        ),
        None => (entry, None),
    };
    let family = Family::from_str(family, true).map_err(|_| {
        anyhow::anyhow!("--compare {entry}: unknown family '{family}' (mobilenetv2, efficientnet-b0, efficientnet-b3, cnn)")
    })?;
    ModelArgs {
        model: Some(family),
        width: width.unwrap_or(base.width),
        head_units: base.head_units,
        dropout: None,
        stochastic_depth: base.stochastic_depth,
    }
    .spec()
}

fn main() {
    leukoscope_model::logging::init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    set_threads(cli.threads);
    match cli.command {
        Command::Fit(a) => {
            if let Some(pattern) = &a.test_group {
                regex::Regex::new(pattern)
                    .map_err(|e| anyhow::anyhow!("--test-group '{pattern}' is not a regex: {e}"))?;
            }
            let config = if a.resume {
                let run = RunDir(a.out.clone());
                if !run.run_file().exists() {
                    anyhow::bail!(
                        "--resume: {} holds no run (no run.json); start one without --resume",
                        a.out.display()
                    );
                }
                let mut stored = run.load_run()?.config;
                stored.epochs = stored.epochs.max(a.epochs.unwrap_or(0));
                stored
            } else {
                RunConfig {
                    data: a.data.expect("clap requires --data without --resume"),
                    model: a.model.spec()?,
                    size: a.size,
                    epochs: a.epochs.unwrap_or(30),
                    batch: a.batch.max(1),
                    lr: a.lr,
                    optimizer: a.optimizer,
                    schedule: a.schedule,
                    weight_decay: a.weight_decay,
                    patience: a.patience,
                    seed: a.seed,
                    fractions: SplitFractions {
                        val: a.val_fraction,
                        test: a.test_fraction,
                    },
                    test_group: a.test_group,
                    sampling: a.sampling,
                    class_weights: !a.no_class_weights,
                    augment: a.augment.config(),
                    strict: a.strict,
                    pretrained: a.pretrained,
                    init_from: a.init_from,
                    average_from: a.average_from.map(|e| e as usize),
                    backend: a.backend,
                    colour: a.colour,
                }
            };
            if matches!(config.model, ModelSpec::Cnn { .. }) && !config.size.is_multiple_of(8) {
                anyhow::bail!(
                    "--size must be a multiple of 8 for the CNN, got {}",
                    config.size
                );
            }
            fit(
                config,
                FitRequest {
                    out: &a.out,
                    resume: a.resume,
                    manifest: a.manifest.as_deref(),
                    evaluate: !a.no_evaluate,
                    stop_after: a.stop_after,
                },
            )
        }
        Command::Export(a) => {
            let scale = match a.um_per_px {
                Some(u) => trainer::export::ExportScale::Stated(u),
                None => trainer::export::ExportScale::Measure {
                    pictures: a.scale_pictures.max(1),
                },
            };
            trainer::export::export_run(&RunDir(a.run), &a.out, &scale)
        }
        Command::Uncertainty(a) => {
            let r = trainer::uncertainty::run(&trainer::uncertainty::UncertaintyRequest {
                model: &a.model,
                data: &a.data,
                manifest: &a.manifest,
                out: &a.out,
                shrinkage: a.shrinkage,
                features: a.features,
                augmented_copies: a.augmented_copies,
                seed: a.seed,
                min_temperature: a.min_temperature,
            })?;
            println!(
                "features {} ({} dims), {} training and {} validation pictures",
                r.features, r.dims, r.train_pictures, r.validation_pictures
            );
            println!(
                "temperature {:.3} (fitted {:.3}): validation NLL {:.4} -> {:.4}, ECE {:.4} -> {:.4}",
                r.temperature,
                r.fitted_temperature,
                r.validation_nll[0],
                r.validation_nll[1],
                r.validation_ece[0],
                r.validation_ece[1]
            );
            println!(
                "unfamiliarity threshold {:.2} ({:.2} % of validation above); score p50/p90/p99/max \
                 train {:?}, validation {:?}",
                r.threshold,
                100.0 * r.validation_rejected,
                r.train_score_percentiles,
                r.validation_score_percentiles
            );
            println!("wrote {}", a.out.display());
            Ok(())
        }
        Command::Evaluate(a) => {
            trainer::evaluate::evaluate_run(&RunDir(a.run), a.data.as_deref(), a.backend)?;
            Ok(())
        }
        Command::Bench(a) => {
            let others = a
                .compare
                .iter()
                .map(|c| compared_spec(c, &a.model))
                .collect::<Result<Vec<_>>>()?;
            let request = trainer::bench::BenchRequest {
                model: a.model.spec()?,
                size: a.size,
                batch: a.batch.max(1),
                classes: a.classes.max(2),
                warmup: a.warmup,
                steps: a.steps.max(1),
                backend: a.backend,
            };
            let results = trainer::bench::run_interleaved(&request, &others)?;
            match a.format {
                BenchFormat::Json if others.is_empty() => {
                    println!("{}", serde_json::to_string(&results[0])?)
                }
                BenchFormat::Json => println!("{}", serde_json::to_string(&results)?),
                BenchFormat::Table => {
                    println!(
                        "model                 size batch threads  step p50 ms  images/s  × first     params"
                    );
                    for r in &results {
                        println!(
                            "{:<21} {:>4} {:>5} {:>7} {:>11.1} {:>9.1} {:>8.2} {:>10}",
                            r.model,
                            r.size,
                            r.batch,
                            r.threads,
                            r.step_ms_p50,
                            r.images_per_s,
                            r.images_per_s / results[0].images_per_s,
                            r.parameters
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
