//! The red-cell pixel-size estimate on the real training pictures (`all-taleqani` under
//! `$LEUKOSCOPE_DATA`, else `../shared/data` beside the workspace).
//!
//! The dataset is not in the repository. When it is absent the test is reported as ignored
//! (libtest-mimic harness), never silently passed. The full measurement (200 training-split
//! pictures, per class) is `cargo run -p leukoscope-model --example scale_dataset`.

use std::path::{Path, PathBuf};

use leukoscope_model::scale::cells::CellSettings;
use leukoscope_model::scale::dataset::{measure_files, spread};
use libtest_mimic::{Arguments, Failed, Trial};

fn data_dir() -> PathBuf {
    std::env::var_os("LEUKOSCOPE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")))
}

/// 120 pictures spread over the four classes: hundreds of red cells, a pixel size within the
/// range the 200-picture measurement gave (0.47 µm/px, per class 0.41–0.50), and the 4:3 → 1:1
/// squeeze of the pictures recognised (pixels ≈ 1.3 times wider than high).
fn taleqani_scale_is_measured(data: &Path) -> Result<(), Failed> {
    let mut files = Vec::new();
    for class in ["Benign", "Early", "Pre", "Pro"] {
        files.extend(leukoscope_model::images::expand_paths(&[data.join(class)]));
    }
    let chosen = spread(&files, 120);
    if chosen.len() < 100 {
        return Err(format!("only {} pictures under {}", chosen.len(), data.display()).into());
    }
    let m = measure_files(&chosen, &CellSettings::default()).map_err(|e| e.to_string())?;
    eprintln!("{} pictures: {m}", chosen.len());
    let e = &m.estimate;
    if e.count < 300 {
        return Err(format!("only {} red cells: {m}", e.count).into());
    }
    if !(0.40..=0.55).contains(&e.um_per_px) {
        return Err(format!("{} µm/px outside 0.40..0.55: {m}", e.um_per_px).into());
    }
    if !(1.2..=1.4).contains(&e.pixel_aspect) {
        return Err(format!("pixel aspect {} outside 1.2..1.4: {m}", e.pixel_aspect).into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let data = data_dir().join("all-taleqani");
    let present = data.is_dir();
    if !present {
        eprintln!(
            "{} not found (set LEUKOSCOPE_DATA): the real-data scale test is reported as ignored",
            data.display()
        );
    }
    let trial = Trial::test("taleqani_scale_is_measured", move || {
        taleqani_scale_is_measured(&data)
    })
    .with_ignored_flag(!present);
    libtest_mimic::run(&args, vec![trial]).exit();
}
