//! The pixel size of a picture folder (or a training split) from its red cells: the
//! measurement behind `leukoscope.um_per_px` (`leukoscope_model::scale`).
//!
//! ```sh
//! cargo run --release -p leukoscope-model --example scale_dataset -- \
//!     ../shared/data/all-taleqani --manifest models/all-mnv2x075-224.manifest.csv \
//!     --split train --limit 200 [--annotate DIR]
//! ```
//!
//! Prints the estimate over all cells, the per-picture spread and, per class folder, the
//! per-class estimate; `--annotate DIR` writes each measured picture with its kept red cells
//! tinted green and the components left out tinted red.

use std::path::PathBuf;

use leukoscope_model::manifest::Split;
use leukoscope_model::scale::cells::{CellSettings, annotate};
use leukoscope_model::scale::dataset::{manifest_files, measure_files, spread};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut data: Option<PathBuf> = None;
    let (mut manifest, mut split, mut limit, mut out) = (None, Split::Train, 200usize, None);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--manifest" => manifest = Some(PathBuf::from(value()?)),
            "--split" => split = value()?.parse()?,
            "--limit" => limit = value()?.parse().map_err(|e| format!("--limit: {e}"))?,
            "--annotate" => out = Some(PathBuf::from(value()?)),
            _ if !a.starts_with("--") => data = Some(PathBuf::from(a)),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let data = data.ok_or(
        "usage: scale_dataset DIR [--manifest CSV --split train] [--limit N] [--annotate DIR]",
    )?;
    let files = match &manifest {
        Some(m) => manifest_files(m, &data, split).map_err(|e| e.to_string())?,
        None => leukoscope_model::images::expand_paths(std::slice::from_ref(&data)),
    };
    let chosen = spread(&files, limit);
    let settings = CellSettings::default();
    let all = measure_files(&chosen, &settings).map_err(|e| e.to_string())?;
    println!(
        "{} pictures of {} ({} listed): {all}",
        chosen.len(),
        data.display(),
        files.len()
    );
    println!("components left out: {:?}", all.rejected);
    for (f, why) in &all.skipped {
        println!("skipped {}: {why}", f.display());
    }
    let mut classes: Vec<String> = chosen
        .iter()
        .filter_map(|f| {
            f.parent()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .collect();
    classes.sort();
    classes.dedup();
    for class in classes {
        let of: Vec<PathBuf> = chosen
            .iter()
            .filter(|f| {
                f.parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n.to_string_lossy() == class)
            })
            .cloned()
            .collect();
        match measure_files(&of, &settings) {
            Ok(s) => println!("  {class} ({} pictures): {}", of.len(), s.estimate),
            Err(e) => println!("  {class} ({} pictures): {e}", of.len()),
        }
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for f in &chosen {
            let img = leukoscope_model::preprocess::decode_image(f).map_err(|e| e.to_string())?;
            let name = f
                .file_stem()
                .map_or("picture".into(), |n| n.to_string_lossy().into_owned());
            let path = dir.join(format!("{name}.png"));
            annotate(&img, &settings)
                .save(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}
