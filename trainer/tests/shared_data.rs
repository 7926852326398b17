//! Short training runs on the real datasets in `../shared/data` (or `LEUKOSCOPE_DATA`): without
//! augmentation the model must at least fit its training images (the training loss falls).
//!
//! The datasets are not in the repository. When they are absent these tests are reported as
//! ignored (libtest-mimic harness), never silently passed.

mod common;

use std::path::{Path, PathBuf};

use common::{report, shared_data, text, trainer};
use libtest_mimic::{Arguments, Failed, Trial};

/// A folder of symlinks to the first `per_class` images of each class of `source`.
fn subset(source: &Path, per_class: usize, into: &Path) -> PathBuf {
    for class in std::fs::read_dir(source).unwrap().flatten() {
        if !class.path().is_dir() {
            continue;
        }
        let dest = into.join(class.file_name());
        std::fs::create_dir_all(&dest).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(class.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files.into_iter().take(per_class) {
            std::os::unix::fs::symlink(&f, dest.join(f.file_name().unwrap())).unwrap();
        }
    }
    into.to_path_buf()
}

fn short_run(
    dataset: &str,
    per_class: usize,
    classes: usize,
    model: &[&str],
) -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let data = subset(
        &shared_data().join(dataset),
        per_class,
        &dir.path().join("data"),
    );
    let run = dir.path().join("run");
    let mut args = vec![
        "fit",
        "--data",
        data.to_str().unwrap(),
        "--size",
        "64",
        "--epochs",
        "4",
        "--lr",
        "1e-3",
        "--no-augment",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(model);
    let out = trainer(&args);
    if !out.status.success() {
        return Err(text(&out).into());
    }
    let r = report(&run, "report");
    let m = &r["metrics"];
    if m["labels"].as_array().map(Vec::len) != Some(classes) {
        return Err(format!("expected {classes} labels: {m}").into());
    }
    let history = r["history"].as_array().ok_or("no history")?;
    let first = history[0]["train_loss"].as_f64().unwrap();
    let last = history[history.len() - 1]["train_loss"].as_f64().unwrap();
    if last.partial_cmp(&first) != Some(std::cmp::Ordering::Less) {
        return Err(format!("training loss did not fall: {first} -> {last}").into());
    }
    eprintln!(
        "{dataset}: {} test images, accuracy {:.3}, loss {first:.3} -> {last:.3}",
        m["samples"], m["accuracy"]
    );
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let taleqani = shared_data().join("all-taleqani");
    let cnmc = shared_data().join("cnmc-2019");
    let tests = vec![
        Trial::test("all_taleqani_cnn_subset", || {
            short_run("all-taleqani", 30, 4, &["--model", "cnn"])
        })
        .with_ignored_flag(!taleqani.is_dir()),
        Trial::test("cnmc_2019_mobilenetv2_subset", || {
            short_run(
                "cnmc-2019",
                30,
                2,
                // Segmented cells on black: no slide background to take as the white point.
                &[
                    "--model",
                    "mobilenetv2",
                    "--width",
                    "0.35",
                    "--colour",
                    "none",
                ],
            )
        })
        .with_ignored_flag(!cnmc.is_dir()),
    ];
    if !taleqani.is_dir() || !cnmc.is_dir() {
        eprintln!(
            "shared datasets not found under {} (set LEUKOSCOPE_DATA): their tests are reported as ignored",
            shared_data().display()
        );
    }
    libtest_mimic::run(&args, tests).exit();
}
