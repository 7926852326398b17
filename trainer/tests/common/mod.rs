//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Runs the trainer binary with `args`.
pub fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("trainer binary runs")
}

/// stderr and stdout of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A seeded synthetic smear-like dataset: per class, `n` noisy pictures of `size` pixels on a
/// pale background with one "cell" whose colour and shape differ by class (class 0: large
/// round purple nucleus, class 1: small dark blue nucleus, class 2: two-lobed magenta nucleus).
pub fn synthetic_dataset(root: &Path, classes: usize, n: usize, size: u32, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for class in 0..classes {
        let dir = root.join(format!("class{class}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let cx = size as f32 * rng.random_range(0.35..0.65);
            let cy = size as f32 * rng.random_range(0.35..0.65);
            let (radius, colour): (f32, [f32; 3]) = match class % 3 {
                0 => (0.30, [120.0, 60.0, 160.0]),
                1 => (0.16, [40.0, 40.0, 140.0]),
                _ => (0.22, [190.0, 50.0, 150.0]),
            };
            let r = radius * size as f32 * rng.random_range(0.85..1.15);
            let img = RgbImage::from_fn(size, size, |x, y| {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let inside = if class % 3 == 2 {
                    ((dx - r * 0.5).powi(2) + dy * dy).sqrt() < r * 0.7
                        || ((dx + r * 0.5).powi(2) + dy * dy).sqrt() < r * 0.7
                } else {
                    (dx * dx + dy * dy).sqrt() < r
                };
                let base = if inside {
                    colour
                } else {
                    [235.0, 215.0, 215.0]
                };
                let noise: f32 = rng.random_range(-18.0..18.0);
                Rgb(base.map(|c| (c + noise).clamp(0.0, 255.0) as u8))
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

/// The shared data folder: `LEUKOSCOPE_DATA`, else `../shared/data` beside the workspace.
pub fn shared_data() -> PathBuf {
    std::env::var_os("LEUKOSCOPE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// Reads a run's report.json.
pub fn report(run: &Path, folder: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join(folder).join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}
