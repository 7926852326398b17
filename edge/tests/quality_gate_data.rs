//! The quality gate's pass / reject rates on the real data (`all-taleqani` under
//! `$LEUKOSCOPE_DATA`, else `../shared/data` beside the workspace).
//!
//! The dataset is not in the repository. When it is absent the test is reported as ignored
//! (libtest-mimic harness), never silently passed.

use std::path::PathBuf;

use edge::quality::{QualityConfig, QualityGate};
use libtest_mimic::{Arguments, Failed, Trial};

fn data_dir() -> PathBuf {
    std::env::var_os("LEUKOSCOPE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")))
}

/// Every 8th picture of the dataset: ≥ 99 % pass, and ≥ 95 % of them blurred (σ = 3 px) are
/// rejected. The full measurement is `cargo run --release -p edge --example quality_calibration`.
fn real_data_rates_meet_the_goals(data: &std::path::Path) -> Result<(), Failed> {
    let mut files = Vec::new();
    for class in ["Benign", "Early", "Pre", "Pro"] {
        files.extend(leukoscope_model::images::expand_paths(&[data.join(class)]));
    }
    let mut gate = QualityGate::new(QualityConfig::default());
    let (mut n, mut pass, mut reject) = (0, 0, 0);
    for f in files.iter().step_by(8) {
        let img = leukoscope_model::preprocess::decode_image(f).map_err(|e| e.to_string())?;
        n += 1;
        pass += usize::from(gate.assess(&img).1.is_none());
        reject += usize::from(gate.assess(&image::imageops::blur(&img, 3.0)).1.is_some());
    }
    if n <= 100 {
        return Err(format!("only {n} pictures under {}", data.display()).into());
    }
    let (p, r) = (pass as f64 / n as f64, reject as f64 / n as f64);
    eprintln!(
        "{n} pictures: {:.2} % pass, {:.2} % of the blurred rejected",
        100.0 * p,
        100.0 * r
    );
    if p < 0.99 {
        return Err(format!("pass rate {p} < 0.99").into());
    }
    if r < 0.95 {
        return Err(format!("reject rate {r} < 0.95").into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let data = data_dir().join("all-taleqani");
    let present = data.is_dir();
    if !present {
        eprintln!(
            "{} not found (set LEUKOSCOPE_DATA): the real-data quality test is reported as ignored",
            data.display()
        );
    }
    let tests = vec![
        Trial::test("real_data_rates_meet_the_goals", move || {
            real_data_rates_meet_the_goals(&data)
        })
        .with_ignored_flag(!present),
    ];
    libtest_mimic::run(&args, tests).exit();
}
