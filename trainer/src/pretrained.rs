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
    // Both stores have the same builder methods, but no common trait for them.
    macro_rules! load_with {
        ($store:expr) => {{
            let mut store = $store
                .allow_partial(true)
                .validate(false)
                .map_indices_contiguous(false);
            for (from, to) in torchvision_key_map() {
                store = store.with_key_remapping(format!("^{}", regex_escape(&from)), to);
            }
            net.load_from(&mut store)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }};
    }
    let result = match ext.as_str() {
        "safetensors" => {
            load_with!(SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter))
        }
        "pth" | "pt" | "bin" => load_with!(PytorchStore::from_file(path)),
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
        summary.push_str(&format!(
            "; {unused} file tensors unused (e.g. the classifier)"
        ));
    }
    Ok((Classifier::MobileNetV2(net), summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::model::mobilenetv2::{ConvBn, MobileNetV2};
    use burn::tensor::{Device, Tensor};

    fn spec(width: f32) -> ModelSpec {
        ModelSpec::Mobilenetv2 {
            width,
            head_units: 16,
            dropout: 0.0,
        }
    }

    fn net(model: Classifier) -> MobileNetV2 {
        match model {
            Classifier::MobileNetV2(n) => n,
            Classifier::Cnn(_) => unreachable!(),
        }
    }

    /// The ConvBn of ours that a key-map target prefix (e.g. `blocks.3.expand.conv.`) names.
    fn part<'a>(n: &'a MobileNetV2, prefix: &str) -> &'a ConvBn {
        let p: Vec<&str> = prefix.trim_end_matches('.').split('.').collect();
        match p[0] {
            "stem" => &n.stem,
            "last" => &n.last,
            _ => {
                let b = &n.blocks[p[1].parse::<usize>().unwrap()];
                match p[2] {
                    "expand" => b.expand.as_ref().unwrap(),
                    "depthwise" => &b.depthwise,
                    _ => &b.project,
                }
            }
        }
    }

    fn values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
        let shape = t.dims().to_vec();
        (shape, t.into_data().try_to_vec::<f32>().unwrap())
    }

    /// Every backbone tensor of `n` under its torchvision name (BatchNorm as weight/bias/running_*),
    /// plus a torchvision-style classifier that must be reported unused.
    fn torchvision_tensors(n: &MobileNetV2) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (tv, ours) in torchvision_key_map() {
            let cb = part(n, &ours);
            if ours.ends_with("conv.") {
                let (s, v) = values(cb.conv.weight.val());
                out.push((format!("{tv}weight"), s, v));
            } else {
                for (name, t) in [
                    ("weight", cb.bn.gamma.val()),
                    ("bias", cb.bn.beta.val()),
                    ("running_mean", cb.bn.running_mean.value()),
                    ("running_var", cb.bn.running_var.value()),
                ] {
                    let (s, v) = values(t);
                    out.push((format!("{tv}{name}"), s, v));
                }
            }
        }
        out.push(("classifier.1.weight".into(), vec![1000, 8], vec![0.5; 8000]));
        out
    }

    fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(k, s, v)| {
                (
                    k.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    s.clone(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(k, b, s)| {
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap();
                (k.clone(), view)
            })
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    #[test]
    fn a_torchvision_layout_checkpoint_fills_the_whole_backbone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mobilenet_v2.safetensors");
        let device = Device::flex();
        device.seed(1);
        let source = net(spec(0.35).init(3, 32, &device));
        let tensors = torchvision_tensors(&source);
        write_safetensors(&file, &tensors);

        device.seed(2);
        let target = spec(0.35).init(3, 32, &device);
        let (loaded, summary) = load_torchvision_backbone(target, &file).unwrap();
        let loaded = net(loaded);
        assert!(
            summary.contains(&format!("{} tensors loaded", tensors.len() - 1)),
            "{summary}"
        );
        assert!(summary.contains("1 file tensors unused"), "{summary}");
        for (tv, ours) in torchvision_key_map() {
            let (a, b) = (part(&source, &ours), part(&loaded, &ours));
            if ours.ends_with("conv.") {
                assert_eq!(
                    values(a.conv.weight.val()),
                    values(b.conv.weight.val()),
                    "{tv}"
                );
            } else {
                assert_eq!(values(a.bn.gamma.val()), values(b.bn.gamma.val()), "{tv}");
                assert_eq!(
                    values(a.bn.running_var.value()),
                    values(b.bn.running_var.value()),
                    "{tv}"
                );
            }
        }
    }

    #[test]
    fn another_width_is_reported_not_loaded_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wide.safetensors");
        let device = Device::flex();
        let wide = net(spec(0.5).init(3, 32, &device));
        write_safetensors(&file, &torchvision_tensors(&wide));
        let (_, summary) =
            load_torchvision_backbone(spec(0.35).init(3, 32, &device), &file).unwrap();
        assert!(summary.contains("not loaded (shape mismatch"), "{summary}");

        let junk = dir.path().join("junk.pth");
        std::fs::write(&junk, b"not a checkpoint").unwrap();
        let err = load_torchvision_backbone(spec(0.35).init(3, 32, &device), &junk).unwrap_err();
        assert!(err.to_string().contains("junk.pth"), "{err}");
        let cnn = ModelSpec::Cnn { dropout: 0.5 }.init(3, 32, &device);
        assert!(load_torchvision_backbone(cnn, &file).is_err());
    }

    #[test]
    fn key_map_covers_every_torchvision_feature_layer() {
        let map = torchvision_key_map();
        // stem (2) + first block (4) + 16 blocks × 6 + last (2)
        assert_eq!(map.len(), 2 + 4 + 16 * 6 + 2);
        assert!(map.contains(&("features.18.1.".into(), "last.bn.".into())));
        assert!(map.contains(&("features.17.conv.3.".into(), "blocks.16.project.bn.".into())));
    }
}
