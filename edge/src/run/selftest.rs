//! Start-up self-tests that need more than opening something, and how every self-test result
//! is reported.

use std::path::Path;

use hardware::Event;
use tracing::{error, info};

use super::Outputs;
use crate::config::ModelConfig;
use leukoscope_model::bench::sample_jpeg;
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::preprocess::{decode_image, decode_image_bytes, image_to_input};

/// Logs a self-test's result and sends it as a `SELFTEST` event: `Ok` passed, `Err` failed,
/// each with its detail.
pub(super) fn report(outputs: &mut Outputs, check: &str, result: &Result<String, String>) {
    let (ok, detail) = match result {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    if ok {
        info!(check, "self-test passed: {detail}");
    } else {
        error!(check, "self-test failed: {detail}");
    }
    outputs.send(&Event::SelfTest {
        check: check.to_string(),
        ok,
        detail: detail.clone(),
    });
}

/// The model on a known input: probabilities are finite, within 0..1, sum to 1, and the same
/// twice; with `selftest_image` configured, that image must get `selftest_label`.
pub fn model_check(model: &OnnxClassifier, config: &ModelConfig) -> Result<String, String> {
    let contract = model.contract();
    let sample = decode_image_bytes(&sample_jpeg())?;
    let input = image_to_input(&sample, contract).map_err(|e| e.to_string())?;
    let first = model.probabilities(&input).map_err(|e| e.to_string())?;
    let second = model.probabilities(&input).map_err(|e| e.to_string())?;
    let sum: f32 = first.iter().sum();
    if first
        .iter()
        .any(|p| !p.is_finite() || !(0.0..=1.0).contains(p))
        || (sum - 1.0).abs() > 1e-3
    {
        return Err(format!(
            "{}: the known input gives invalid probabilities {first:?}",
            model.path().display()
        ));
    }
    if first != second {
        return Err(format!(
            "{}: the same input gave different outputs",
            model.path().display()
        ));
    }
    let mut detail = format!(
        "{} ({} classes, {}) answers a known input",
        model.path().display(),
        contract.num_classes(),
        contract.input_size_string()
    );
    if let (Some(image), Some(label)) = (&config.selftest_image, &config.selftest_label) {
        let img = decode_image(image).map_err(|e| e.to_string())?;
        let input = image_to_input(&img, contract).map_err(|e| e.to_string())?;
        let p = model.probabilities(&input).map_err(|e| e.to_string())?;
        let got = &contract.labels[leukoscope_model::metrics::argmax(&p)];
        if got != label {
            return Err(format!(
                "{}: self-test image {} is classified {got}, expected {label}",
                model.path().display(),
                image.display()
            ));
        }
        detail.push_str(&format!("; {} → {label}", image.display()));
    }
    Ok(detail)
}

/// Free space on the file system holding `db` is at least `min_free_mib`.
pub fn disk_check(db: &Path, min_free_mib: u64) -> Result<String, String> {
    let dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let free_mib = free >> 20;
    if free_mib < min_free_mib {
        Err(format!(
            "{}: {free_mib} MiB free, below the floor of {min_free_mib} MiB (disk full)",
            dir.display()
        ))
    } else {
        Ok(format!("{}: {free_mib} MiB free", dir.display()))
    }
}
