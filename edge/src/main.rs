//! `edge`: the leukoscope device program. See `edge --help`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use edge::classify::{Format, classify_file, expand_paths, write_header, write_row};
use edge::model::{ContractOverrides, OnnxClassifier};
use edge::preprocess::Preprocessor;

/// leukoscope on the device: classify blood-smear images with a leukoscope ONNX model.
///
/// A screening aid, never a diagnosis: every result must be reviewed by a qualified person.
/// Models carry their contract (labels, input size, normalization) in their ONNX metadata.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify image files and folders (recursively): label, confidence and every class
    /// probability per image. Exit status 0 when every image was classified, 2 when some
    /// could not be (they are reported on stderr and in their output row).
    Classify(ClassifyArgs),
    /// Evaluate a model on a labeled folder (one subfolder per class, named by the model's
    /// labels): accuracy, per-class precision/recall/F1, kappa, MCC, ROC — the same report as
    /// `trainer evaluate`.
    Evaluate(EvaluateArgs),
    /// Measure decode, preprocess and inference latency (p50/p95) and frames/s.
    Bench(BenchArgs),
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Labeled folder.
    #[arg(long)]
    data: PathBuf,
    /// Report folder (default: `report-<data folder name>`).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A JPEG to time (default: a synthetic 640×480 smear-like JPEG).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Timed runs per stage.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Untimed warm-up runs per stage.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Threads for tract's matrix products (1 = single-threaded, tract's default).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    format: BenchFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchFormat {
    Table,
    Json,
}

#[derive(Args)]
struct ModelArgs {
    /// The ONNX model (default: the model shipped in `models/`, if there is one).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Override the labels, comma-separated in model output order (for foreign models).
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    /// Override the square input size in pixels.
    #[arg(long)]
    size: Option<u32>,
    /// Override the per-channel mean, `r,g,b` (applied to RGB scaled to 0..1).
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Override the per-channel standard deviation, `r,g,b`.
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
}

impl ModelArgs {
    fn load(&self) -> Result<OnnxClassifier> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => shipped_model()?,
        };
        let triple = |flag: &str, v: &Option<Vec<f32>>| -> Result<Option<[f32; 3]>> {
            match v.as_deref() {
                None => Ok(None),
                Some([r, g, b]) => Ok(Some([*r, *g, *b])),
                Some(other) => bail!("{flag} takes three values r,g,b, got {}", other.len()),
            }
        };
        let overrides = ContractOverrides {
            labels: self.labels.clone(),
            size: self.size,
            mean: triple("--mean", &self.mean)?,
            std: triple("--std", &self.std)?,
        };
        Ok(OnnxClassifier::load(&path, &overrides)?)
    }
}

/// The first `.onnx` file in `models/` (sorted by name).
fn shipped_model() -> Result<PathBuf> {
    let dir = PathBuf::from("models");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.into_iter().next() {
        Some(p) => Ok(p),
        None => bail!(
            "no --model given and no model shipped in {}/",
            dir.display()
        ),
    }
}

#[derive(Args)]
struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Image files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Classify(a) => classify(a),
        Command::Evaluate(a) => {
            let model = a.model.load()?;
            let out = a.out.unwrap_or_else(|| {
                let name = a
                    .data
                    .file_name()
                    .map_or("data".into(), |n| n.to_string_lossy().into_owned());
                PathBuf::from(format!("report-{name}"))
            });
            let e = edge::evaluate::evaluate_folder(&model, &a.data, &out)?;
            for (path, reason) in &e.skipped {
                eprintln!("skipped {}: {reason}", path.display());
            }
            let r = &e.report;
            println!(
                "{} images: accuracy {:.2} %, macro-F1 {:.4}, kappa {:.4}, MCC {:.4} — report in {}",
                r.samples,
                r.accuracy * 100.0,
                r.macro_avg.f1,
                r.cohen_kappa,
                r.mcc,
                out.display()
            );
            Ok(0)
        }
        Command::Bench(a) => {
            edge::bench::set_engine_threads(a.threads);
            let model = a.model.load()?;
            let jpeg = match &a.image {
                Some(p) => {
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
                }
                None => edge::bench::sample_jpeg(),
            };
            let r = edge::bench::run(&model, &jpeg, a.runs, a.warmup, a.threads)?;
            match a.format {
                BenchFormat::Json => println!("{}", serde_json::to_string(&r)?),
                BenchFormat::Table => {
                    println!(
                        "model {} (input {}), {} runs, {} thread(s)",
                        r.model, r.input_size, r.runs, r.threads
                    );
                    println!("decode      p50 {:8.2} ms", r.decode_ms_p50);
                    println!("preprocess  p50 {:8.2} ms", r.preprocess_ms_p50);
                    println!(
                        "inference   p50 {:8.2} ms   p95 {:8.2} ms",
                        r.inference_ms_p50, r.inference_ms_p95
                    );
                    println!("frames/s        {:8.1}", r.fps);
                }
            }
            Ok(0)
        }
    }
}

fn classify(a: ClassifyArgs) -> Result<i32> {
    let model = a.model.load()?;
    let labels = model.contract().labels.clone();
    let mut pre = Preprocessor::new(model.contract().clone());
    let mut input = vec![0.0; model.contract().input_len()];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_header(&mut out, a.format, &labels).context("cannot write output")?;
    let mut failed = 0;
    for path in expand_paths(&a.paths) {
        let row = classify_file(&model, &mut pre, &mut input, &path);
        if let Some(e) = &row.error {
            eprintln!("error: {e}");
            failed += 1;
        }
        write_row(&mut out, a.format, &labels, &row).context("cannot write output")?;
    }
    out.flush().ok();
    Ok(if failed > 0 { 2 } else { 0 })
}
