//! Starting MobileNetV2 from torchvision weights the user supplies (`.pth` or `.safetensors`
//! with torchvision's `mobilenet_v2` key layout). Nothing is downloaded.
//!
//! torchvision names the backbone `features.N…`; leukoscope's MobileNetV2 names it `stem`,
//! `blocks.K.{expand,depthwise,project}` and `last`. The mapping below renames one into the
//! other; burn-store's PyTorch adapter handles BatchNorm's `weight`/`bias` → `gamma`/`beta`.
//! Tensors whose shapes match are loaded; the rest (the classifier, or everything of a
//! different width multiplier) is reported, not silently dropped.

use std::path::Path;

use anyhow::{Result, bail};
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use crate::model::Classifier;
use crate::model::mobilenetv2::BLOCK_SETTINGS;

/// (torchvision prefix, leukoscope prefix) pairs for the whole backbone.
pub fn torchvision_key_map() -> Vec<(String, String)> {
    let mut map = vec![
        ("features.0.0.".to_string(), "stem.conv.".to_string()),
        ("features.0.1.".to_string(), "stem.bn.".to_string()),
    ];
    let blocks: usize = BLOCK_SETTINGS.iter().map(|s| s.2).sum();
    for k in 0..blocks {
        let f = k + 1;
        let parts: &[(&str, &str)] = if k == 0 {
            // The first block has no expansion layer.
            &[
                ("conv.0.0.", "depthwise.conv."),
                ("conv.0.1.", "depthwise.bn."),
                ("conv.1.", "project.conv."),
                ("conv.2.", "project.bn."),
            ]
        } else {
            &[
                ("conv.0.0.", "expand.conv."),
                ("conv.0.1.", "expand.bn."),
                ("conv.1.0.", "depthwise.conv."),
                ("conv.1.1.", "depthwise.bn."),
                ("conv.2.", "project.conv."),
                ("conv.3.", "project.bn."),
            ]
        };
        for (tv, ours) in parts {
            map.push((format!("features.{f}.{tv}"), format!("blocks.{k}.{ours}")));
        }
    }
    let last = blocks + 1;
    map.push((format!("features.{last}.0."), "last.conv.".to_string()));
    map.push((format!("features.{last}.1."), "last.bn.".to_string()));
    map
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}

/// Loads what matches of a torchvision `mobilenet_v2` checkpoint into the model's backbone.
///
/// Returns the model and a one-line summary: tensors loaded, and what was skipped or missing.
/// Fails if the file cannot be read or nothing at all matched.
pub fn load_torchvision_backbone(model: Classifier, path: &Path) -> Result<(Classifier, String)> {
    let Classifier::MobileNetV2(mut net) = model else {
        bail!("--pretrained only applies to --model mobilenetv2 (torchvision MobileNetV2 weights)");
    };
    if !path.is_file() {
        bail!("{}: pretrained weights file not found", path.display());
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let map = torchvision_key_map();
    let result = match ext.as_str() {
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .allow_partial(true)
                .validate(false)
                .map_indices_contiguous(false);
            for (from, to) in &map {
                store = store.with_key_remapping(format!("^{}", regex_escape(from)), to.clone());
            }
            net.load_from(&mut store)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        "pth" | "pt" | "bin" => {
            let mut store = PytorchStore::from_file(path)
                .allow_partial(true)
                .validate(false)
                .map_indices_contiguous(false);
            for (from, to) in &map {
                store = store.with_key_remapping(format!("^{}", regex_escape(from)), to.clone());
            }
            net.load_from(&mut store)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        _ => bail!(
            "{}: pretrained weights must be .pth, .pt or .safetensors",
            path.display()
        ),
    };
    if result.applied.is_empty() {
        bail!(
            "{}: no tensor matched the MobileNetV2 backbone (is it a torchvision mobilenet_v2 state dict?)",
            path.display()
        );
    }
    let mut summary = format!(
        "{} tensors loaded from {}",
        result.applied.len(),
        path.display()
    );
    if !result.errors.is_empty() {
        summary.push_str(&format!(
            "; {} not loaded (shape mismatch, e.g. another width multiplier): {}",
            result.errors.len(),
            result
                .errors
                .iter()
                .take(3)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let missing: Vec<&str> = result
        .missing
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| !p.starts_with("hidden.") && !p.starts_with("output."))
        .collect();
    if !missing.is_empty() {
        summary.push_str(&format!(
            "; {} backbone tensors kept their fresh initialisation (e.g. {})",
            missing.len(),
            missing[0]
        ));
    }
    let unused = result
        .unused
        .iter()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .count();
    if unused > 0 {
        summary.push_str(&format!("; {unused} file tensors unused (e.g. the classifier)"));
    }
    Ok((Classifier::MobileNetV2(net), summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_covers_every_torchvision_feature_layer() {
        let map = torchvision_key_map();
        // stem (2) + first block (4) + 16 blocks × 6 + last (2)
        assert_eq!(map.len(), 2 + 4 + 16 * 6 + 2);
        assert!(map.contains(&("features.18.1.".into(), "last.bn.".into())));
        assert!(map.contains(&("features.17.conv.3.".into(), "blocks.16.project.bn.".into())));
    }
}
