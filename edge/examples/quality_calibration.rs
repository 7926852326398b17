//! Calibrates and checks the quality gate (`edge::quality`) on the real data, and times it.
//!
//! ```text
//! cargo run --release -p edge --example quality_calibration                 # rates + distributions
//! cargo run --release -p edge --example quality_calibration -- --bench      # time per assess
//! cargo run --release -p edge --example quality_calibration -- --config q.toml --csv figures.csv
//! ```
//!
//! For every picture of `all-taleqani/{Benign,Early,Pre,Pro}` (from `--data`, else
//! `$LEUKOSCOPE_DATA`, else `../shared/data`) it measures the gate's figures on the picture as it
//! is and on the same picture blurred with a Gaussian of σ = `--sigma` px (3 by default; with
//! `--reencode Q` the blurred picture is also JPEG-encoded at quality Q, as a camera's MJPEG would
//! be). It prints each figure's distribution on both sets and the rates of a configuration (the
//! defaults, or the `[quality]`-style TOML file `--config`): the share of the real pictures that
//! pass (goal ≥ 99 %) and of the blurred ones that are rejected (goal ≥ 95 %), with the reasons.
//! `--cnmc` also reports the C-NMC 2019 single-cell pictures, for information only.
//!
//! How the defaults were chosen from this output: the exposure limits sit well outside the range
//! the real pictures cover (they catch a lamp that is off, far too dim or blown out, not the
//! normal variation between smears); the stained fraction threshold sits below the lowest real
//! picture; the focus threshold sits between the sharp pictures' lowest values and the blurred
//! pictures' highest, with most of the margin on the sharp side (a retake costs a second, a
//! blurred frame classified costs trust).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use edge::quality::{QualityConfig, QualityFigures, QualityGate, RetakeReason, synthetic_smear};
use image::RgbImage;

#[derive(Parser)]
#[command(about = "Measures the quality gate's figures and rates on the real data, or times it")]
struct Args {
    /// Data folder holding `all-taleqani/` (default: $LEUKOSCOPE_DATA, else ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Gaussian blur σ in pixels for the "blurred" set.
    #[arg(long, default_value_t = 3.0)]
    sigma: f32,
    /// Also JPEG-encode the blurred pictures at this quality (1–100) before measuring.
    #[arg(long)]
    reencode: Option<u8>,
    /// Thresholds to check (a TOML file with the `[quality]` table's fields at top level).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write every picture's figures (sharp and blurred) to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also report the C-NMC 2019 pictures (information only: not camera frames).
    #[arg(long)]
    cnmc: bool,
    /// Time `assess` on synthetic 640×480 and 1280×720 frames instead.
    #[arg(long)]
    bench: bool,
    /// Write a PNG of the pictures closest to the thresholds (fewest stained pixels, lowest focus,
    /// most clipped), each beside its stain mask (stained pixels green).
    #[arg(long)]
    montage: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg: QualityConfig = match &args.config {
        Some(p) => toml::from_str(&std::fs::read_to_string(p)?)?,
        None => QualityConfig::default(),
    };
    if args.bench {
        bench(&cfg);
        return Ok(());
    }
    let data = args.data.clone().unwrap_or_else(|| {
        std::env::var_os("LEUKOSCOPE_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
    });
    let root = data.join("all-taleqani");
    let mut files = Vec::new();
    for class in ["Benign", "Early", "Pre", "Pro"] {
        files.extend(leukoscope_model::images::expand_paths(&[root.join(class)]));
    }
    anyhow::ensure!(!files.is_empty(), "no pictures under {}", root.display());
    println!("config: {cfg:?}");
    println!(
        "{} pictures under {}; blur σ = {} px{}",
        files.len(),
        root.display(),
        args.sigma,
        args.reencode
            .map(|q| format!(", re-encoded as JPEG q{q}"))
            .unwrap_or_default()
    );

    let mut gate = QualityGate::new(cfg.clone());
    let mut sharp = Vec::new();
    let mut decoded: Vec<PathBuf> = Vec::new();
    let mut blurred = Vec::new();
    let mut csv =
        String::from("file,set,focus,mean,p999,clipped_fraction,stained_fraction,retake\n");
    let started = Instant::now();
    for (i, f) in files.iter().enumerate() {
        let img = match leukoscope_model::preprocess::decode_image(f) {
            Ok(img) => img,
            Err(e) => {
                eprintln!("skipped: {e}");
                continue;
            }
        };
        let mut blur = image::imageops::blur(&img, args.sigma);
        decoded.push(f.clone());
        if let Some(q) = args.reencode {
            blur = reencode(&blur, q)?;
        }
        for (set, picture, out) in [
            ("sharp", &img, &mut sharp),
            ("blurred", &blur, &mut blurred),
        ] {
            let (fig, reason) = gate.assess(picture);
            csv.push_str(&format!(
                "{},{set},{},{},{},{},{},{}\n",
                f.display(),
                fig.focus,
                fig.mean,
                fig.p999,
                fig.clipped_fraction,
                fig.stained_fraction,
                reason.map(|r| r.as_str()).unwrap_or("")
            ));
            out.push((fig, reason));
        }
        if (i + 1) % 500 == 0 {
            eprintln!("{} / {} pictures", i + 1, files.len());
        }
    }
    eprintln!("measured in {:.1} s", started.elapsed().as_secs_f64());

    print_distributions("sharp (as in the dataset)", &sharp);
    print_distributions(&format!("blurred (σ = {})", args.sigma), &blurred);
    let pass = rate(&sharp, |r| r.is_none());
    let reject = rate(&blurred, |r| r.is_some());
    let reject_focus = rate(&blurred, |r| r == Some(RetakeReason::Focus));
    println!();
    println!(
        "sharp pictures passing:    {:.2} % ({} of {})   goal >= 99 %   {}",
        100.0 * pass,
        count(&sharp, |r| r.is_none()),
        sharp.len(),
        reasons(&sharp)
    );
    println!(
        "blurred pictures rejected: {:.2} % ({} of {}; for focus: {:.2} %)   goal >= 95 %   {}",
        100.0 * reject,
        count(&blurred, |r| r.is_some()),
        blurred.len(),
        100.0 * reject_focus,
        reasons(&blurred)
    );

    if args.cnmc {
        let root = data.join("cnmc-2019");
        let files = leukoscope_model::images::expand_paths(&[root.join("all"), root.join("hem")]);
        let mut figs = Vec::new();
        for f in files.iter().step_by(10) {
            if let Ok(img) = leukoscope_model::preprocess::decode_image(f) {
                figs.push(gate.assess(&img));
            }
        }
        print_distributions("C-NMC 2019 (every 10th picture; not camera frames)", &figs);
        println!(
            "C-NMC passing: {:.2} %   {}",
            100.0 * rate(&figs, |r| r.is_none()),
            reasons(&figs)
        );
    }
    if let Some(out) = &args.montage {
        let mut order: Vec<usize> = (0..sharp.len()).collect();
        let mut picks: Vec<usize> = Vec::new();
        order.sort_by(|&a, &b| {
            sharp[a]
                .0
                .stained_fraction
                .total_cmp(&sharp[b].0.stained_fraction)
        });
        picks.extend(&order[..4]);
        order.sort_by(|&a, &b| sharp[a].0.focus.total_cmp(&sharp[b].0.focus));
        picks.extend(&order[..2]);
        order.sort_by(|&a, &b| {
            sharp[b]
                .0
                .clipped_fraction
                .total_cmp(&sharp[a].0.clipped_fraction)
        });
        picks.extend(&order[..2]);
        montage(
            &picks
                .iter()
                .map(|&i| decoded[i].clone())
                .collect::<Vec<_>>(),
            &cfg,
            out,
        )?;
        println!("montage written to {}", out.display());
    }
    if let Some(p) = &args.csv {
        std::fs::write(p, csv)?;
        println!("figures written to {}", p.display());
    }
    Ok(())
}

type Assessed = (QualityFigures, Option<RetakeReason>);
type Getter = fn(&QualityFigures) -> f32;

fn count(v: &[Assessed], f: impl Fn(Option<RetakeReason>) -> bool) -> usize {
    v.iter().filter(|(_, r)| f(*r)).count()
}

fn rate(v: &[Assessed], f: impl Fn(Option<RetakeReason>) -> bool) -> f64 {
    count(v, f) as f64 / v.len().max(1) as f64
}

fn reasons(v: &[Assessed]) -> String {
    let n = |r| count(v, |x| x == Some(r));
    format!(
        "(retake: focus {}, exposure {}, empty {})",
        n(RetakeReason::Focus),
        n(RetakeReason::Exposure),
        n(RetakeReason::Empty)
    )
}

fn print_distributions(title: &str, v: &[Assessed]) {
    println!();
    println!("{title}: {} pictures", v.len());
    println!(
        "{:>18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "figure", "min", "p0.5", "p1", "p5", "p50", "p95", "p99", "max"
    );
    let figures: [(&str, Getter); 5] = [
        ("focus", |f| f.focus),
        ("mean", |f| f.mean),
        ("p999", |f| f.p999),
        ("clipped_fraction", |f| f.clipped_fraction),
        ("stained_fraction", |f| f.stained_fraction),
    ];
    for (name, get) in figures {
        let mut x: Vec<f32> = v.iter().map(|(f, _)| get(f)).collect();
        x.sort_by(f32::total_cmp);
        let q = |p: f64| x[((x.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name:>18} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            q(0.0),
            q(0.005),
            q(0.01),
            q(0.05),
            q(0.5),
            q(0.95),
            q(0.99),
            q(1.0)
        );
    }
}

fn reencode(img: &RgbImage, quality: u8) -> anyhow::Result<RgbImage> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).encode_image(img)?;
    Ok(image::load_from_memory(&bytes)?.into_rgb8())
}

fn bench(cfg: &QualityConfig) {
    for (w, h) in [(640, 480), (1280, 720), (1920, 1080)] {
        let frame = synthetic_smear(w, h, 7);
        let mut gate = QualityGate::new(cfg.clone());
        let runs = 300;
        for _ in 0..20 {
            std::hint::black_box(gate.assess(&frame));
        }
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(gate.assess(&frame));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "assess {w}x{h}: median {:.3} ms, p95 {:.3} ms ({runs} runs, 1 thread)",
            times[runs / 2],
            times[runs * 95 / 100]
        );
    }
}

/// Each picture (resized to 224×224) beside its stain mask, two pairs per row.
fn montage(files: &[PathBuf], cfg: &QualityConfig, out: &Path) -> anyhow::Result<()> {
    let s = 224;
    let rows = files.len().div_ceil(2) as u32;
    let mut m = RgbImage::new(4 * s, rows * s);
    for (i, f) in files.iter().enumerate() {
        let img = leukoscope_model::preprocess::decode_image(f)?;
        let img = image::imageops::resize(&img, s, s, image::imageops::FilterType::Triangle);
        let mut mask = img.clone();
        for p in mask.pixels_mut() {
            if cfg.is_stained(p[0], p[1], p[2]) {
                *p = image::Rgb([0, 200, 0]);
            }
        }
        let (x, y) = ((i as u32 % 2) * 2 * s, (i as u32 / 2) * s);
        image::imageops::replace(&mut m, &img, x as i64, y as i64);
        image::imageops::replace(&mut m, &mask, (x + s) as i64, y as i64);
    }
    m.save(out)?;
    Ok(())
}
