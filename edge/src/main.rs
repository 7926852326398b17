//! `edge`: the leukoscope device program. See `edge --help`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use edge::audit::ExportFormat;
use edge::classify::{
    ClassifyFormat, classify_file, classify_file_fields, write_header_with, write_row_with,
};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::images::expand_paths;
use leukoscope_model::onnx::ContractOverrides;
use leukoscope_model::preprocess::Preprocessor;

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
    /// `trainer evaluate` — with Wilson 95 % intervals, and at the device's operating point
    /// (`--config`, `--min-confidence`): blast-vs-normal sensitivity, specificity, abstention,
    /// calibration (reliability diagram, ECE) and simulated slides under the slide rule.
    Evaluate(EvaluateArgs),
    /// Measure decode, preprocess and inference latency (p50/p95) and frames/s.
    Bench(BenchArgs),
    /// Measure how the field tracker tells microscope fields apart on pictures (of your own
    /// microscope, ideally): the same field under noise, jitter and flicker, moved views and
    /// other fields, judged with the `[fields]` settings of `--config` (else the defaults).
    Fields(FieldsArgs),
    /// The device program: frames from a camera, an MJPEG stream on stdin, a watched folder or
    /// files → quality gate → model → per-frame and per-slide verdicts, each committed to the
    /// SQLite audit log before it is shown on the panel, sent on the serial line and printed
    /// on stdout (one event line per frame, the serial protocol's format). Settings come from
    /// `--config` (see `edge/leukoscope.example.toml`); flags override the file. SIGINT/SIGTERM
    /// close the session and exit 0; a fault that stopped classifying (disk full, database
    /// error) exits 1. A screening aid, never a diagnosis.
    Run(Box<RunArgs>),
    /// Check a deployment without opening a session: the config, the model files, their sha256
    /// pins and signatures, the model's self-test, the database (writable, schema current),
    /// free space, the flagged-pictures folder, the frame source (a camera delivers frames:
    /// format, resolution, measured frames/s, the controls it offers), the serial port, the
    /// LEDs, display and button. Prints a table; exit status 0 only when every check passed,
    /// 1 otherwise. The systemd unit runs it before `edge run` (ExecStartPre).
    Check(CheckArgs),
    /// Measure the camera's pixel size (µm per pixel) from the red blood cells of a few frames
    /// (picture files, or frames of the config's or --source's camera or stream), or from a
    /// stage-micrometer picture (--micrometer FILE --division-um D), and print the config lines
    /// that declare it (`[source]` / `um_per_px = …`). Exit status 1 when no estimate can be
    /// made (too few red cells, no micrometer lines), saying why.
    Calibrate(CalibrateArgs),
    /// List the slide sessions in the audit database.
    Sessions(DbArgs),
    /// Export one session's frames as CSV or JSON (stdout, or --out).
    Export(ExportArgs),
    /// Write a one-page summary of a session (Markdown and HTML, with thumbnails of the flagged
    /// frames that were kept).
    Report(ReportArgs),
    /// Fleet forwarding's other end: collect every kit's results from the MQTT broker into one
    /// database (`collect`), list the kits heard from (`status`), measure throughput and
    /// latency (`bench`).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// A kit's fleet forwarding: the outbox backlog (results not yet acknowledged by the
    /// broker) and whether the broker of `[fleet]` accepts the kit's connection now. Exit status
    /// 0 when connected (or forwarding is off), 1 otherwise.
    Sync(SyncArgs),
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Subscribe to the broker (persistent session, QoS 1) and write every kit's sessions and
    /// frames into one database (the kits' schema plus the device), dropping duplicates by
    /// message id and acknowledging a message only after it is committed. Runs until SIGINT or
    /// SIGTERM. `edge sessions`, `export` and `report` read that database.
    Collect(CollectArgs),
    /// The kits a collector's database has heard from: site, device, online/offline, the
    /// backlog each last reported, when it was last seen, its sessions and frames.
    Status(FleetStatusArgs),
    /// Measure, through a running broker: results/s the publisher and the collector sustain
    /// (a backlog sent at once) and the latency from a kit's commit to the collector's commit
    /// (p50, p99) at a steady rate. Scratch databases go to a temporary folder.
    Bench(FleetBenchArgs),
}

#[derive(Args)]
struct BrokerArgs {
    /// Broker URL, `mqtt://HOST:PORT` or `mqtts://HOST:PORT` (default: the config's
    /// `[fleet] broker`).
    #[arg(long)]
    broker: Option<String>,
    /// Device config to take `[fleet]` broker settings (TLS, credentials) from.
    #[arg(long)]
    config: Option<PathBuf>,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://`).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// User name for the broker.
    #[arg(long)]
    username: Option<String>,
    /// File holding the broker password (first line).
    #[arg(long)]
    password_file: Option<PathBuf>,
}

impl BrokerArgs {
    fn settings(&self) -> Result<edge::fleet::BrokerSettings> {
        let mut fleet = match &self.config {
            Some(c) => edge::config::RunConfig::load(c)?.fleet,
            None => edge::config::FleetConfig::default(),
        };
        if let Some(b) = &self.broker {
            fleet.broker = Some(b.clone());
        }
        if let Some(f) = &self.ca_file {
            fleet.ca_file = Some(f.clone());
        }
        if let Some(u) = &self.username {
            fleet.username = Some(u.clone());
        }
        if let Some(f) = &self.password_file {
            fleet.password = None;
            fleet.password_file = Some(f.clone());
        }
        fleet.check()?;
        edge::fleet::BrokerSettings::from_config(&fleet)?
            .context("no broker: give --broker URL (or a config with [fleet] broker)")
    }
}

#[derive(Args)]
struct CollectArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The collector's database (created if needed).
    #[arg(long)]
    db: PathBuf,
    /// Only this site's kits (default: every site).
    #[arg(long)]
    site: Option<String>,
    /// The client id the broker keeps this collector's session under (default:
    /// `leukoscope-collector-<site or all>`). Keep it fixed: messages published while the
    /// collector is down are delivered to it when it is back.
    #[arg(long)]
    client_id: Option<String>,
    /// Write the pictures kits send (`[fleet] send_pictures`) under this folder, one subfolder
    /// per device; `edge report --flagged-dir` shows them.
    #[arg(long)]
    pictures: Option<PathBuf>,
}

#[derive(Args)]
struct FleetStatusArgs {
    /// The collector's database.
    #[arg(long)]
    db: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    format: BenchFormat,
}

#[derive(Args)]
struct FleetBenchArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Results in the backlog of the throughput measurement.
    #[arg(long, default_value_t = 2000)]
    results: usize,
    /// Results of the latency measurement.
    #[arg(long, default_value_t = 300)]
    latency_results: usize,
    /// Commits per second during the latency measurement.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    format: BenchFormat,
}

#[derive(Args)]
struct SyncArgs {
    /// Device config file (TOML, as for `edge run`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Broker URL to check instead of the config's (as `edge run --fleet-broker`).
    #[arg(long)]
    fleet_broker: Option<String>,
    /// Seconds to wait for the broker's answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    format: BenchFormat,
}

#[derive(Args)]
struct DbArgs {
    /// The audit database (default: the config's, else `leukoscope.db`).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Device config file to take the database path from.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DbArgs {
    /// The store config: the config file's, with `--db` over it.
    fn store_config(&self) -> Result<edge::config::StoreConfig> {
        let mut store = match &self.config {
            Some(c) => edge::config::RunConfig::load(c)?.store,
            None => edge::config::StoreConfig::default(),
        };
        if let Some(db) = &self.db {
            store.db = db.clone();
        }
        Ok(store)
    }

    /// Opens the database read-only: a running device keeps writing to it meanwhile.
    fn open(&self) -> Result<edge::store::Store> {
        let path = self.store_config()?.db;
        if !path.exists() {
            bail!("{}: no such audit database", path.display());
        }
        Ok(edge::store::Store::open_read_only(&path)?)
    }
}

#[derive(Args)]
struct CheckArgs {
    /// Device config file (TOML, as for `edge run`). Without it, the defaults are checked.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Frame source to check instead of the config's (as `edge run --source`).
    #[arg(long)]
    source: Option<String>,
    /// Seconds to wait for the source's first frame.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    format: BenchFormat,
}

#[derive(Args)]
struct CalibrateArgs {
    /// Device config file (TOML, as for `edge run`): its source, and its `um_per_px` to compare.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Frame source instead of the config's (as `edge run --source`), when no files are given.
    #[arg(long)]
    source: Option<String>,
    /// Frames (or pictures, evenly spread over those given) to measure.
    #[arg(long, default_value_t = 5, value_name = "N")]
    frames: usize,
    /// Seconds to wait for the frames of a source.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// A stage-micrometer picture taken through the same objective and camera.
    #[arg(long, value_name = "FILE")]
    micrometer: Option<PathBuf>,
    /// The micrometer's division in µm.
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "D",
        requires = "micrometer"
    )]
    division_um: f64,
    /// Picture files or folders (frames of the camera to calibrate).
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Session id (see `edge sessions`).
    #[arg(long)]
    session: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    format: ExportFormat,
    /// Output file (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Session id (see `edge sessions`).
    #[arg(long)]
    session: i64,
    /// Folder to write `report.md`, `report.html` and `counts.png` into (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// The flagged-images folder the kept pictures are in (default: the config's).
    #[arg(long)]
    flagged_dir: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// Device config file (TOML). Without it, the defaults below and in the example file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Frame source: `v4l2:/dev/videoN`, `stdin` or `-` (a concatenated MJPEG stream, e.g.
    /// from `rpicam-vid --codec mjpeg -o -`), `watch:DIR` (new image files), or image files
    /// and folders.
    #[arg(long)]
    source: Option<String>,
    /// Model file or folder; repeat for the f32 and int8 variants of one model (default: the
    /// config's `[model] paths`, else `$LEUKOSCOPE_MODELS`, `/usr/share/leukoscope/models` or
    /// `./models`, the first that holds a model).
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Which variant to run: the fastest measured at start-up, or a fixed one.
    #[arg(long, value_parser = ["auto", "f32", "int8"])]
    variant: Option<String>,
    /// Threads for tract's matrix products.
    #[arg(long)]
    threads: Option<usize>,
    /// The SQLite audit database.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Keep the JPEGs of flagged frames (blast, uncertain) in this folder.
    #[arg(long)]
    flagged_dir: Option<PathBuf>,
    /// Technician's serial line, e.g. /dev/ttyUSB0: replaces the path of the config's [serial]
    /// (its baud rate, timeout and format are kept), or uses the defaults when there is none.
    #[arg(long)]
    serial: Option<String>,
    /// Serial baud rate (default: the config's, else 115200); needs a serial port (`--serial`
    /// or the config's [serial]).
    #[arg(long)]
    baud: Option<u32>,
    /// Format of the serial line and the stdout event lines.
    #[arg(long, value_parser = ["text", "json"])]
    serial_format: Option<String>,
    /// Status panel: real LEDs and display (`linux`, needs the `linux` build and the
    /// config's [panel] pins), drawn in the terminal on stderr (`console`), or none.
    #[arg(long, value_parser = ["linux", "hardware", "console", "none"])]
    panel: Option<String>,
    /// Below this top-class probability a frame is `uncertain`.
    #[arg(long)]
    min_confidence: Option<f32>,
    /// Close a session after this many seconds without a frame (0 = never).
    #[arg(long)]
    idle_gap: Option<u64>,
    /// Do not open a session on the first frame: wait for START or the button.
    #[arg(long)]
    no_auto_start: bool,
    /// Camera resolution, `WIDTHxHEIGHT` (v4l2).
    #[arg(long)]
    resolution: Option<String>,
    /// Camera frame rate (v4l2).
    #[arg(long)]
    fps: Option<u32>,
    /// Keep running when a finite source (stdin, files) ends: the session closes, and the
    /// program stays up (serial line, button, panel) until SIGTERM or SIGINT.
    #[arg(long)]
    keep_running: bool,
    /// Frames the classifier has not taken yet when a newer one arrives: `latest` drops them
    /// (results never trail a live camera by more than one frame; for `--source -` from
    /// rpicam-vid or GStreamer), `all` classifies every one (default for stdin, files and
    /// folders; a camera is always `latest`).
    #[arg(long, value_parser = ["latest", "all"])]
    policy: Option<String>,
    /// The camera's pixel size in µm per pixel (`[source] um_per_px`; measure it with `edge
    /// calibrate`): each frame is resampled to the model's pixel size (its
    /// `leukoscope.um_per_px`) and cut into model-input fields that cover it, each gated,
    /// classified, recorded and counted on its own. Without it: the centre square of each frame.
    #[arg(long, value_name = "UM")]
    um_per_px: Option<f64>,
    /// Deprecated (use --um-per-px): cut each frame into a centred grid of tiles N pixels a side
    /// at full resolution and classify each on its own (0: the centre square of the frame).
    #[arg(long, value_name = "N")]
    tile: Option<u32>,
    /// Print no event lines on stdout.
    #[arg(long)]
    quiet: bool,
    /// Forward every result to this MQTT broker (`mqtt://HOST:PORT`, `mqtts://HOST:PORT`):
    /// turns fleet forwarding on, over the config's `[fleet] broker`.
    #[arg(long, value_name = "URL")]
    fleet_broker: Option<String>,
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
    /// Evaluate only the files a trainer run's `manifest.csv` puts in `--split` (paths
    /// relative to --data), e.g. the held-out test split of the run that made the model.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The manifest split to evaluate.
    #[arg(long, default_value = "test", requires = "manifest")]
    split: String,
    /// Also evaluate with the bottom-right 60×30 px (the scale-bar label) blanked and with a
    /// ±10 % colour jitter, and print the three accuracies side by side: a model that
    /// collapses there learned artefacts, not cells.
    #[arg(long)]
    shortcut_check: bool,
    /// Evaluate under what another microscope does (extends --shortcut-check): 2× and 0.5×
    /// magnification, a warmer lamp, JPEG quality 30, a blur just inside the focus gate, each
    /// class's mean colour cast given to the other classes' pictures, and 2× / 0.5× with the
    /// scale declared. Per condition: right, abstained (uncertain or unfamiliar) and
    /// confidently wrong, with Wilson 95 % intervals; written to `shift.md` and `shift.json`
    /// in the report folder. Class colours are measured on the manifest's training split (else
    /// on the evaluated pictures).
    #[arg(long)]
    shift_check: bool,
    /// Site acceptance: judge a clinic's own labeled pictures (subfolders `blast` and
    /// `normal`, or named by the model's labels; 50–100 fields) as this device would — the
    /// camera's pixel size (`--um-per-px` or the config's `[source] um_per_px`), the quality
    /// gate, the unfamiliarity score, the frame rule of `--config` — against the model card's
    /// criteria, and say ACCEPTED or NOT ACCEPTED (exit status 1), with `acceptance.md` and
    /// `acceptance.json` in the report folder.
    #[arg(long, conflicts_with_all = ["manifest", "shortcut_check", "shift_check"])]
    acceptance: bool,
    /// With --shift-check: also another acquisition, a folder with one subfolder per group
    /// named in --foreign-groups (e.g. the C-NMC pictures: `all`, `hem`), judged only as
    /// blast or normal.
    #[arg(long, value_name = "DIR", requires = "shift_check")]
    foreign: Option<PathBuf>,
    /// The subfolders of --foreign and what they are: `name=blast` or `name=normal`,
    /// comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "all=blast,hem=normal",
        value_name = "NAME=GROUP"
    )]
    foreign_groups: Vec<String>,
    /// The pictures' pixel size in µm per pixel: each is resampled to the model's
    /// (`leukoscope.um_per_px`) and cut into model-input fields; a picture's probabilities are
    /// the mean of its fields'. Default: the config's `[source] um_per_px`, else the centre of
    /// each picture.
    #[arg(long, value_name = "UM")]
    um_per_px: Option<f64>,
    #[command(flatten)]
    decision: DecisionArgs,
    /// Slide simulation: fields (pictures) per simulated slide [default: 30].
    #[arg(long, value_name = "K")]
    slide_fields: Option<u32>,
    /// Slide simulation: slides per condition [default: 1000].
    #[arg(long, value_name = "N")]
    slides: Option<u32>,
    /// Slide simulation: shares of blast fields of the blast slides, comma-separated
    /// [default: 0.1,0.3,1.0].
    #[arg(long, value_delimiter = ',', value_name = "B")]
    blast_shares: Option<Vec<f64>>,
    /// Slide simulation: seed of the draws [default: 17].
    #[arg(long)]
    slide_seed: Option<u64>,
}

impl EvaluateArgs {
    /// The decision, slide rule and simulation to evaluate at, and where they came from.
    fn screening_settings(&self) -> Result<leukoscope_model::operating_point::ScreeningSettings> {
        let c = self.decision.run_config()?;
        let mut settings = leukoscope_model::operating_point::ScreeningSettings {
            decision: c.decision,
            rule: c.slide.rule,
            ..Default::default()
        };
        if let Some(path) = &self.decision.config {
            settings.settings_from = format!(
                "[decision] and [slide.rule] of {} (defaults for keys it does not set)",
                path.display()
            );
        }
        if let Some(m) = self.decision.min_confidence {
            settings
                .settings_from
                .push_str(&format!("; --min-confidence {m}"));
        }
        let sim = &mut settings.simulation;
        if let Some(k) = self.slide_fields {
            sim.fields_per_slide = k;
        }
        if let Some(n) = self.slides {
            if n == 0 {
                bail!("--slides must be at least 1");
            }
            sim.slides_per_condition = n;
        }
        if let Some(b) = &self.blast_shares {
            if let Some(bad) = b.iter().find(|b| !(**b > 0.0 && **b <= 1.0)) {
                bail!("--blast-shares: {bad} is not within 0 (excluded) and 1");
            }
            sim.blast_shares = b.clone();
        }
        if let Some(seed) = self.slide_seed {
            sim.seed = seed;
        }
        Ok(settings)
    }
}

/// The device's frame decision: `[decision]` of a device config, a threshold over it.
#[derive(Args)]
struct DecisionArgs {
    /// Device config file (TOML, as for `edge run`) to take the decision settings from
    /// (`[decision]`: `min_confidence`, `normal_labels`; `edge evaluate` also takes the slide
    /// rule, `[slide.rule]`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Below this top-class probability a picture is `uncertain` (default: the config's, else
    /// the device's default 0.8).
    #[arg(long)]
    min_confidence: Option<f32>,
}

impl DecisionArgs {
    /// The device config (or its defaults) with `--min-confidence` over it, checked.
    fn run_config(&self) -> Result<edge::config::RunConfig> {
        let mut c = match &self.config {
            Some(path) => edge::config::RunConfig::load(path)?,
            None => edge::config::RunConfig::default(),
        };
        if let Some(m) = self.min_confidence {
            c.decision.min_confidence = m;
        }
        c.check()?;
        Ok(c)
    }
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
    /// Further models to time in the same run, beside --model (repeatable): all are timed in
    /// interleaved rounds so that machine noise hits them alike, and the table has a row per
    /// model with its inference time relative to the first.
    #[arg(long, value_name = "FILE.onnx", conflicts_with = "pipeline")]
    compare: Vec<PathBuf>,
    /// Also measure the whole device path, as `edge run --source -` runs it: an MJPEG stream of
    /// synthetic smear frames → split, decode, quality gate, model, decision, SQLite commit (in a
    /// scratch database), in committed frames per second, beside the inference-only figure.
    #[arg(long)]
    pipeline: bool,
    /// `--pipeline`: frames per stream.
    #[arg(long, default_value_t = 200)]
    frames: usize,
    /// `--pipeline`: stream resolutions, `WxH` comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "640x480,1280x720")]
    resolutions: Vec<String>,
}

#[derive(Args)]
struct FieldsArgs {
    /// Pictures (JPEG, PNG) and folders of them (walked recursively).
    #[arg(required = true)]
    pictures: Vec<PathBuf>,
    /// Device config whose `[fields]` settings to judge.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Pictures to use at most (evenly spread over those found).
    #[arg(long, default_value_t = 300)]
    limit: usize,
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
    /// The ONNX model (default: the first `.onnx` file of the config's `[model] paths`, else of
    /// `$LEUKOSCOPE_MODELS`, `/usr/share/leukoscope/models` or `./models`, the first that has
    /// one; the file used is printed on stderr).
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
    /// The model of `--model`, else the first `.onnx` file of the config's `[model] paths`
    /// (`config`: a device config file), else of the default places
    /// ([`edge::model_search`]); the file used is said on stderr when not given.
    fn load(&self, config: Option<&std::path::Path>) -> Result<OnnxClassifier> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => {
                let configured = match config {
                    Some(c) => edge::config::RunConfig::load(c)?.model.paths,
                    None => Vec::new(),
                };
                let paths = edge::model_search::model_paths(&configured)?;
                let path = edge::run::model_files(&paths)?
                    .into_iter()
                    .next()
                    .context("no model file")?;
                eprintln!("model: {} (no --model given)", path.display());
                path
            }
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

#[derive(Args)]
struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ClassifyFormat::Table)]
    format: ClassifyFormat,
    #[command(flatten)]
    decision: DecisionArgs,
    /// The pictures' pixel size in µm per pixel: each is resampled to the model's
    /// (`leukoscope.um_per_px`) and cut into model-input fields, one row per field (`tile`).
    /// Default: the config's `[source] um_per_px`, else the centre of each picture.
    #[arg(long, value_name = "UM")]
    um_per_px: Option<f64>,
    /// Image files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// The pictures of `dir`'s group subfolders (`name=blast|normal`), with their group.
fn foreign_files(
    dir: &std::path::Path,
    groups: &[String],
) -> Result<Vec<(PathBuf, leukoscope_model::shift::Truth)>> {
    use leukoscope_screening::Decision;
    let mut files = Vec::new();
    for g in groups {
        let (name, group) = g
            .split_once('=')
            .with_context(|| format!("--foreign-groups: '{g}' is not NAME=blast|normal"))?;
        let group = match group.trim() {
            "blast" => Decision::Blast,
            "normal" => Decision::Normal,
            other => bail!("--foreign-groups: '{other}' is neither blast nor normal"),
        };
        let sub = dir.join(name.trim());
        if !sub.is_dir() {
            bail!(
                "--foreign {}: no subfolder '{}'",
                dir.display(),
                name.trim()
            );
        }
        files.extend(
            expand_paths(&[sub])
                .into_iter()
                .map(|p| (p, leukoscope_model::shift::Truth::Group(group))),
        );
    }
    if files.is_empty() {
        bail!("--foreign {}: no pictures", dir.display());
    }
    Ok(files)
}

fn main() {
    leukoscope_model::logging::init();
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
            let settings = a.screening_settings()?;
            let model = a.model.load(a.decision.config.as_deref())?;
            let out = a.out.unwrap_or_else(|| {
                let name = a
                    .data
                    .file_name()
                    .map_or("data".into(), |n| n.to_string_lossy().into_owned());
                PathBuf::from(format!("report-{name}"))
            });
            let selection = leukoscope_model::evaluate::Selection {
                manifest: a.manifest.clone().map(|m| (m, a.split.clone())),
            };
            let framing = match a.um_per_px.or(a.decision.run_config()?.source.um_per_px) {
                Some(u) => {
                    leukoscope_model::scale::check_um_per_px("--um-per-px", u)?;
                    Some(edge::run::scale_framing(u, &model).map_err(anyhow::Error::msg)?)
                }
                None => None,
            };
            if a.acceptance {
                let config = a.decision.run_config()?;
                let verdict = edge::acceptance::judge(
                    &model,
                    &config,
                    &a.data,
                    framing,
                    &edge::acceptance::Criteria::default(),
                )?;
                verdict.write(&out)?;
                print!("{}", verdict.report());
                println!("\nreport in {}", out.display());
                return Ok(if verdict.accepted { 0 } else { 1 });
            }
            let e = leukoscope_model::evaluate::evaluate_selection_at(
                &model, &a.data, &selection, &settings, &out, framing,
            )?;
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
            if let Some(f) = &e.screening {
                print_screening(f);
            }
            if a.shortcut_check {
                let files = leukoscope_model::evaluate::labeled_files(
                    &a.data,
                    &model.contract().labels,
                    &selection,
                )?;
                println!(
                    "{:<36} {:>9} {:>9}",
                    "shortcut check", "accuracy", "macro-F1"
                );
                println!(
                    "{:<36} {:>8.2}% {:>9.4}",
                    "as is",
                    r.accuracy * 100.0,
                    r.macro_avg.f1
                );
                for p in leukoscope_model::evaluate::Perturbation::SHORTCUT_CHECKS {
                    let e =
                        leukoscope_model::evaluate::evaluate_files_at(&model, &files, p, framing)?;
                    println!(
                        "{:<36} {:>8.2}% {:>9.4}",
                        p.name(),
                        e.report.accuracy * 100.0,
                        e.report.macro_avg.f1
                    );
                }
            }
            if a.shift_check {
                let config = a.decision.run_config()?;
                let files = leukoscope_model::evaluate::labeled_files(
                    &a.data,
                    &model.contract().labels,
                    &selection,
                )?;
                let train = match &a.manifest {
                    Some(m) => leukoscope_model::evaluate::labeled_files(
                        &a.data,
                        &model.contract().labels,
                        &leukoscope_model::evaluate::Selection {
                            manifest: Some((m.clone(), "train".into())),
                        },
                    )?,
                    None => files.clone(),
                };
                let foreign = match &a.foreign {
                    Some(dir) => Some((dir.clone(), foreign_files(dir, &a.foreign_groups)?)),
                    None => None,
                };
                let rows = edge::shift_check::run(
                    &model,
                    &config,
                    &files,
                    &train,
                    foreign.as_ref().map(|(d, f)| (d.as_path(), f.as_slice())),
                )?;
                edge::shift_check::write(&rows, model.contract(), &out)?;
                print!("{}", edge::shift_check::table(&rows));
            }
            Ok(0)
        }
        Command::Run(a) => run_device(*a),
        Command::Check(a) => {
            let options = edge::check::CheckOptions {
                first_frame_timeout: std::time::Duration::from_secs(a.timeout),
                ..Default::default()
            };
            let report =
                edge::check::check_deployment(a.config.as_deref(), a.source.as_deref(), &options);
            let mut out = std::io::stdout().lock();
            match a.format {
                BenchFormat::Table => report.write_table(&mut out),
                BenchFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?),
            }
            .context("cannot write output")?;
            Ok(if report.passed { 0 } else { 1 })
        }
        Command::Calibrate(a) => {
            let config = match &a.config {
                Some(path) => edge::config::RunConfig::load(path)?,
                None => edge::config::RunConfig::default(),
            };
            if a.micrometer.is_some() {
                edge::calibrate::check_division(a.division_um).map_err(anyhow::Error::msg)?;
            }
            let request = edge::calibrate::CalibrateRequest {
                files: a.files.clone(),
                source: a.source.clone(),
                frames: a.frames,
                timeout: std::time::Duration::from_secs(a.timeout),
                micrometer: a.micrometer.clone().map(|m| (m, a.division_um)),
            };
            let result = edge::calibrate::calibrate(&config, &request)?;
            print!("{}", result.report());
            Ok(0)
        }
        Command::Sessions(a) => {
            let store = a.open()?;
            let rows = edge::audit::list_sessions(&store)?;
            let mut out = std::io::stdout().lock();
            edge::audit::write_sessions_table(&rows, &mut out).context("cannot write output")?;
            Ok(0)
        }
        Command::Export(a) => {
            let store = a.db.open()?;
            match &a.out {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(file);
                    edge::audit::export_session(&store, a.session, a.format, &mut w)?;
                    w.flush()
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    edge::audit::export_session(&store, a.session, a.format, &mut out)?;
                }
            }
            Ok(0)
        }
        Command::Report(a) => {
            let store = a.db.open()?;
            let flagged = match &a.flagged_dir {
                Some(dir) => Some(dir.clone()),
                None => a.db.store_config()?.flagged_dir,
            };
            let written =
                edge::audit::write_session_report(&store, a.session, &a.out, flagged.as_deref())?;
            println!(
                "report written: {} and {}",
                written.markdown.display(),
                written.html.display()
            );
            Ok(0)
        }
        Command::Fields(a) => measure_fields(a),
        Command::Fleet(c) => fleet(c),
        Command::Sync(a) => {
            let mut config = match &a.config {
                Some(path) => edge::config::RunConfig::load(path)?,
                None => edge::config::RunConfig::default(),
            };
            if let Some(b) = &a.fleet_broker {
                config.fleet.broker = Some(b.clone());
                config.check()?;
            }
            let report =
                edge::fleet::SyncReport::gather(&config, std::time::Duration::from_secs(a.timeout));
            let mut out = std::io::stdout().lock();
            match a.format {
                BenchFormat::Table => report.write_text(&mut out),
                BenchFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?),
            }
            .context("cannot write output")?;
            Ok(match &report.connection {
                Some(Err(_)) => 1,
                _ => 0,
            })
        }
        Command::Bench(a) => {
            leukoscope_model::bench::set_engine_threads(a.threads);
            let model = a.model.load(None)?;
            let jpeg = match &a.image {
                Some(p) => {
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
                }
                None => leukoscope_model::bench::sample_jpeg(),
            };
            if !a.compare.is_empty() {
                let mut others = Vec::new();
                for path in &a.compare {
                    others.push(OnnxClassifier::load(path, &Default::default())?);
                }
                let mut all = vec![&model];
                all.extend(others.iter());
                let reports = leukoscope_model::bench::run_interleaved(
                    &all, &jpeg, a.runs, a.warmup, a.threads,
                )?;
                match a.format {
                    BenchFormat::Json => println!("{}", serde_json::to_string(&reports)?),
                    BenchFormat::Table => print_bench_comparison(&reports),
                }
                return Ok(0);
            }
            let r = leukoscope_model::bench::run(&model, &jpeg, a.runs, a.warmup, a.threads)?;
            let streams = if a.pipeline {
                bench_pipeline(&a, model.path())?
            } else {
                Vec::new()
            };
            match a.format {
                BenchFormat::Json if a.pipeline => println!(
                    "{}",
                    serde_json::json!({ "stages": r, "pipeline": streams })
                ),
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
                    if a.pipeline {
                        println!();
                        println!(
                            "end to end (MJPEG on stdin → committed rows), {} frames per stream:",
                            a.frames
                        );
                        println!(
                            "{:<11} {:>9} {:>9} {:>10} {:>9} {:>17}",
                            "stream",
                            "JPEG KiB",
                            "rows",
                            "frames/s",
                            "ms/frame",
                            "inference-only/s"
                        );
                        for s in &streams {
                            println!(
                                "{:<11} {:>9.1} {:>9} {:>10.1} {:>9.2} {:>17.1}",
                                format!("{}x{}", s.width, s.height),
                                s.jpeg_kib,
                                s.recorded,
                                s.fps,
                                1e3 / s.fps,
                                1e3 / r.inference_ms_p50
                            );
                        }
                    }
                }
            }
            Ok(0)
        }
    }
}

/// The operating-point figures of `edge evaluate`, in a few lines (the report has them all).
fn fleet(c: FleetCommand) -> Result<i32> {
    match c {
        FleetCommand::Collect(a) => {
            let broker = a.broker.settings()?;
            if let Some(site) = &a.site {
                edge::fleet::check_topic_level(site).map_err(|e| anyhow::anyhow!("--site: {e}"))?;
            }
            let mut options = edge::fleet::CollectOptions::new(broker, a.db.clone(), a.site);
            if let Some(id) = a.client_id {
                options.client_id = id;
            }
            options.pictures = a.pictures;
            let shutdown = edge::run::shutdown_flag().context("cannot install signal handlers")?;
            let summary = edge::fleet::collect(&options, &shutdown)?;
            eprintln!(
                "{} message(s) received, {} applied, {} duplicate(s) dropped, {} rejected",
                summary.messages, summary.applied, summary.duplicates, summary.rejected
            );
            Ok(0)
        }
        FleetCommand::Status(a) => {
            if !a.db.exists() {
                bail!("{}: no such collector database", a.db.display());
            }
            let store = edge::store::Store::open_read_only(&a.db)?;
            let devices = store.fleet_devices()?;
            let mut out = std::io::stdout().lock();
            match a.format {
                BenchFormat::Table => edge::fleet::write_devices_table(&devices, &mut out),
                BenchFormat::Json => {
                    writeln!(out, "{}", serde_json::to_string_pretty(&devices)?)
                }
            }
            .context("cannot write output")?;
            Ok(0)
        }
        FleetCommand::Bench(a) => {
            let broker = a.broker.settings()?;
            let scratch =
                std::env::temp_dir().join(format!("leukoscope-fleet-bench-{}", std::process::id()));
            let options = edge::fleet::bench::BenchOptions {
                results: a.results,
                latency_results: a.latency_results,
                rate: a.rate,
            };
            let r = edge::fleet::bench::run(&broker, &scratch, &options);
            let _ = std::fs::remove_dir_all(&scratch);
            let r = r?;
            match a.format {
                BenchFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                BenchFormat::Table => {
                    println!("broker {}", broker.url);
                    println!(
                        "throughput, a backlog of {} results sent at once:",
                        r.results
                    );
                    println!(
                        "  publisher (acknowledged by the broker) {:>9.1} results/s",
                        r.publisher_per_s
                    );
                    println!(
                        "  collector (committed)                  {:>9.1} results/s",
                        r.collector_per_s
                    );
                    println!(
                        "latency, kit commit → collector commit, {} results at {:.0}/s:",
                        r.latency_results, r.rate
                    );
                    println!(
                        "  p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
                        r.latency_ms_p50, r.latency_ms_p99, r.latency_ms_max
                    );
                }
            }
            Ok(0)
        }
    }
}

fn print_screening(f: &leukoscope_model::operating_point::ScreeningFigures) {
    use leukoscope_model::metrics::Proportion;
    let show = |p: &Proportion| match p.value {
        Some(v) => format!(
            "{:.2} % [{:.2}–{:.2}] ({}/{})",
            v * 100.0,
            p.low * 100.0,
            p.high * 100.0,
            p.successes,
            p.n
        ),
        None => "n/a (0 pictures)".into(),
    };
    let op = &f.operating_point;
    println!(
        "operating point (min_confidence {:.2}, normal labels {}): sensitivity {}, specificity {}, \
         abstention {}, ECE {:.4} (95 % Wilson intervals)",
        op.decision.min_confidence,
        op.decision.normal_labels.join(","),
        show(&op.sensitivity),
        show(&op.specificity),
        show(&op.abstention),
        f.calibration.ece
    );
    if let Some(rejected) = &op.unfamiliar {
        let per_class: Vec<String> = op
            .per_class
            .iter()
            .map(|c| format!("{} {}/{}", c.label, c.rejected_unfamiliar, c.pictures))
            .collect();
        println!(
            "rejected as unfamiliar (abstentions): {} — per class: {}",
            show(rejected),
            per_class.join(", ")
        );
    }
    let sim = &f.slide_simulation;
    let mut line = format!(
        "slide simulation ({} fields, {} slides per condition, seed {}):",
        sim.config.fields_per_slide, sim.config.slides_per_condition, sim.config.seed
    );
    if let Some(spec) = sim.specificity() {
        line.push_str(&format!(" specificity {}", show(spec)));
    }
    for (b, sens) in sim.sensitivity() {
        line.push_str(&format!(
            "; sensitivity at blast share {b:.2} {}",
            show(sens)
        ));
    }
    println!("{line}");
}

/// `edge bench --pipeline`: each resolution through a scratch device (own database, no outputs).
/// `edge bench --compare`: one row per model, inference relative to the first.
fn print_bench_comparison(reports: &[leukoscope_model::bench::BenchReport]) {
    let Some(first) = reports.first() else { return };
    println!(
        "{} runs per model in 5 interleaved rounds, {} thread(s)",
        first.runs, first.threads
    );
    println!(
        "{:<44} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8} {:>9}",
        "model", "input", "decode ms", "prep ms", "infer p50", "infer p95", "× first", "frames/s"
    );
    for r in reports {
        let name = if r.model.chars().count() > 44 {
            let tail: String = r.model.chars().rev().take(43).collect();
            format!("…{}", tail.chars().rev().collect::<String>())
        } else {
            r.model.clone()
        };
        println!(
            "{:<44} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.2} {:>9.1}",
            name,
            r.input_size,
            r.decode_ms_p50,
            r.preprocess_ms_p50,
            r.inference_ms_p50,
            r.inference_ms_p95,
            r.inference_ms_p50 / first.inference_ms_p50,
            r.fps
        );
    }
}

fn bench_pipeline(
    a: &BenchArgs,
    model: &std::path::Path,
) -> Result<Vec<edge::run::bench::PipelineBench>> {
    let scratch = std::env::temp_dir().join(format!("leukoscope-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let mut results = Vec::new();
    for (i, r) in a.resolutions.iter().enumerate() {
        let (w, h) = parse_resolution(r)?;
        let mut config = edge::config::RunConfig::default();
        config.model.paths = vec![model.to_path_buf()];
        config.model.threads = a.threads;
        config.store.db = scratch.join(format!("bench-{i}.db"));
        let result = edge::run::bench::pipeline(&config, w, h, a.frames);
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", config.store.db.display()));
        }
        results.push(result?);
    }
    let _ = std::fs::remove_dir(&scratch);
    Ok(results)
}

fn parse_resolution(r: &str) -> Result<(u32, u32)> {
    r.split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .filter(|&(w, h): &(u32, u32)| w > 0 && h > 0)
        .with_context(|| format!("resolution {r:?}: expected WIDTHxHEIGHT, e.g. 1280x720"))
}

fn measure_fields(a: FieldsArgs) -> Result<i32> {
    let config = match &a.config {
        Some(path) => edge::config::RunConfig::load(path)?.fields,
        None => edge::fields::FieldConfig::default(),
    };
    let files = leukoscope_model::images::expand_paths(&a.pictures);
    if files.is_empty() {
        anyhow::bail!("no JPEG or PNG pictures in {:?}", a.pictures);
    }
    let step = files.len().div_ceil(a.limit.max(1));
    let mut pictures = Vec::new();
    for path in files.iter().step_by(step.max(1)) {
        match leukoscope_model::preprocess::decode_image(path) {
            Ok(p) => pictures.push(p),
            Err(e) => eprintln!("skipped: {e}"),
        }
    }
    let m = edge::fields::measure_pictures(&pictures, &config, 17);
    match a.format {
        BenchFormat::Table => print!("{m}"),
        BenchFormat::Json => println!("{}", serde_json::to_string_pretty(&m)?),
    }
    Ok(0)
}

fn classify(a: ClassifyArgs) -> Result<i32> {
    let config = a.decision.run_config()?;
    let decision = config.decision;
    let model = a.model.load(a.decision.config.as_deref())?;
    let mut cutter = match a.um_per_px.or(config.source.um_per_px) {
        Some(u) => {
            leukoscope_model::scale::check_um_per_px("--um-per-px", u)?;
            let framing = edge::run::scale_framing(u, &model).map_err(anyhow::Error::msg)?;
            Some(leukoscope_model::scale::fields::FieldCutter::new(framing))
        }
        None => None,
    };
    let fields = cutter.is_some();
    let labels = model.contract().labels.clone();
    let mut pre = Preprocessor::new(model.contract().clone());
    let mut input = vec![0.0; model.contract().input_len()];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_header_with(&mut out, a.format, &labels, fields).context("cannot write output")?;
    let mut failed = 0;
    for path in expand_paths(&a.paths) {
        let rows = match &mut cutter {
            Some(c) => classify_file_fields(&model, c, &mut pre, &mut input, &path, &decision),
            None => vec![classify_file(
                &model, &mut pre, &mut input, &path, &decision,
            )],
        };
        if let Some(e) = rows.iter().find_map(|r| r.error.as_ref()) {
            eprintln!("error: {e}");
            failed += 1;
        }
        for row in &rows {
            write_row_with(&mut out, a.format, &labels, row, fields)
                .context("cannot write output")?;
        }
    }
    out.flush().ok();
    Ok(if failed > 0 { 2 } else { 0 })
}

/// `--serial PATH` and `--baud N` over the config's `[serial]`: the path replaces only the
/// path (baud rate, timeout, format and backoff stay as configured); the baud rate overrides
/// only when given, and needs a port.
fn apply_serial_args(
    serial: &mut Option<hardware::SerialConfig>,
    path: Option<&str>,
    baud: Option<u32>,
) -> Result<()> {
    if let Some(path) = path {
        match serial {
            Some(s) => s.path = path.to_string(),
            None => *serial = Some(hardware::SerialConfig::new(path)),
        }
    }
    if let Some(baud) = baud {
        match serial {
            Some(s) => s.baud = baud,
            None => bail!(
                "--baud {baud} needs a serial port: give --serial PATH or a [serial] section in the config"
            ),
        }
    }
    Ok(())
}

/// The config file (or defaults) with the command line's overrides applied.
fn run_config(a: &RunArgs) -> Result<edge::config::RunConfig> {
    let mut c = match &a.config {
        Some(path) => edge::config::RunConfig::load(path)?,
        None => edge::config::RunConfig::default(),
    };
    if let Some(s) = &a.source {
        c.source.spec = s.clone();
    }
    if !a.model.is_empty() {
        c.model.paths = a.model.clone();
    }
    if let Some(v) = &a.variant {
        c.model.variant = v.clone();
    }
    if let Some(t) = a.threads {
        c.model.threads = t;
    }
    if let Some(db) = &a.db {
        c.store.db = db.clone();
    }
    if let Some(dir) = &a.flagged_dir {
        c.store.flagged_dir = Some(dir.clone());
    }
    apply_serial_args(&mut c.serial, a.serial.as_deref(), a.baud)?;
    if let Some(f) = &a.serial_format {
        let format = if f == "json" {
            hardware::LineFormat::Json
        } else {
            hardware::LineFormat::Text
        };
        match &mut c.serial {
            Some(s) => s.format = format,
            None => c.events_format = Some(format),
        }
    }
    if let Some(p) = &a.panel {
        c.panel.kind = match p.as_str() {
            "linux" | "hardware" => hardware::PanelKind::Hardware,
            "console" => hardware::PanelKind::Console,
            _ => hardware::PanelKind::None,
        };
    }
    if let Some(m) = a.min_confidence {
        c.decision.min_confidence = m;
    }
    if let Some(g) = a.idle_gap {
        c.slide.idle_gap_s = g;
    }
    if a.no_auto_start {
        c.slide.auto_start = false;
    }
    if let Some(r) = &a.resolution {
        let (w, h) = parse_resolution(r)?;
        c.source.options.width = w;
        c.source.options.height = h;
    }
    if let Some(f) = a.fps {
        c.source.options.fps = f;
    }
    if a.keep_running {
        c.source.exit_on_end = false;
    }
    if let Some(p) = &a.policy {
        c.source.policy = Some(p.parse().map_err(anyhow::Error::msg)?);
    }
    if let Some(t) = a.tile {
        c.source.tile = t;
    }
    if let Some(b) = &a.fleet_broker {
        c.fleet.broker = Some(b.clone());
    }
    if let Some(u) = a.um_per_px {
        c.source.um_per_px = Some(u);
        // The flag replaces a configured (deprecated) tile setting.
        if a.tile.is_none() {
            c.source.tile = 0;
        }
    }
    c.check()?;
    Ok(c)
}

fn run_device(a: RunArgs) -> Result<i32> {
    let config = run_config(&a)?;
    leukoscope_model::bench::set_engine_threads(config.model.threads);
    let shutdown = edge::run::shutdown_flag().context("cannot install signal handlers")?;
    let events: Option<Box<dyn Write>> = if a.quiet {
        None
    } else {
        Some(Box::new(std::io::stdout()))
    };
    let outputs = edge::run::open_outputs(&config, events)?;
    let device = edge::run::Device::start(config, outputs)?;
    let summary = device.run(&shutdown)?;
    eprintln!(
        "{} frames received, {} recorded, {} undecodable, {} session(s) closed, {} dropped, {} already recorded",
        summary.frames,
        summary.recorded,
        summary.undecodable,
        summary.sessions,
        summary.dropped,
        summary.already_recorded
    );
    match summary.fault {
        Some(fault) => {
            eprintln!("error: {fault}");
            Ok(1)
        }
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_flags_keep_the_configured_port_settings() {
        let configured = hardware::SerialConfig {
            path: "/dev/ttyGS0".into(),
            baud: 9_600,
            format: hardware::LineFormat::Json,
            timeout_ms: 75,
            retry_max_ms: 5_000,
        };
        // --serial only replaces the path.
        let mut serial = Some(configured.clone());
        apply_serial_args(&mut serial, Some("/dev/ttyUSB1"), None).unwrap();
        assert_eq!(
            serial,
            Some(hardware::SerialConfig {
                path: "/dev/ttyUSB1".into(),
                ..configured.clone()
            })
        );
        // --baud only replaces the baud rate.
        let mut serial = Some(configured.clone());
        apply_serial_args(&mut serial, None, Some(57_600)).unwrap();
        assert_eq!(
            serial,
            Some(hardware::SerialConfig {
                baud: 57_600,
                ..configured.clone()
            })
        );
        // Neither: the config as it is.
        let mut serial = Some(configured.clone());
        apply_serial_args(&mut serial, None, None).unwrap();
        assert_eq!(serial, Some(configured));
        // No [serial]: --serial alone gets the defaults, with --baud that baud rate.
        let mut serial = None;
        apply_serial_args(&mut serial, Some("/dev/ttyUSB0"), Some(38_400)).unwrap();
        let serial = serial.unwrap();
        assert_eq!(
            (serial.path.as_str(), serial.baud),
            ("/dev/ttyUSB0", 38_400)
        );
        assert_eq!(serial.timeout_ms, 20);
        let mut none = None;
        apply_serial_args(&mut none, None, None).unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn baud_without_a_serial_port_is_an_error() {
        let mut serial = None;
        let err = apply_serial_args(&mut serial, None, Some(9_600)).unwrap_err();
        assert!(
            err.to_string().contains("--baud 9600 needs a serial port"),
            "{err}"
        );
        assert_eq!(serial, None);
    }
}
