//! Starting MobileNetV2 or EfficientNet from torchvision weights the user supplies (`.pth` or
//! `.safetensors` with torchvision's `mobilenet_v2` / `efficientnet_b0` / `efficientnet_b3` key
//! layout). Nothing is downloaded.
//!
//! torchvision names the backbone `features.N…`; leukoscope names it `stem`, `blocks.K.…` and
//! `last`. The mappings below rename one into the other; burn-store's PyTorch adapter handles
//! BatchNorm's `weight`/`bias` → `gamma`/`beta`. Tensors whose shapes match are loaded; the rest
//! (the classifier, or everything of another width or variant) is reported, not silently dropped.

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::store::{
    ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

use crate::model::Classifier;
use crate::model::efficientnet::{EfficientNetVariant, STAGES};
use crate::model::mobilenetv2::BLOCK_SETTINGS;

/// (torchvision prefix, leukoscope prefix) pairs for the whole MobileNetV2 backbone.
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

/// (torchvision prefix, leukoscope prefix) pairs for the whole EfficientNet backbone:
/// `features.S.J.block.L.` (stage S, block J of the stage, layer L of the block) →
/// `blocks.K.{expand,depthwise,se,project}.`.
pub fn efficientnet_key_map(variant: EfficientNetVariant) -> Vec<(String, String)> {
    let mut map = vec![
        ("features.0.0.".to_string(), "stem.conv.".to_string()),
        ("features.0.1.".to_string(), "stem.bn.".to_string()),
    ];
    let mut k = 0;
    for (stage, ((expansion, ..), repeats)) in
        STAGES.iter().zip(variant.stage_repeats()).enumerate()
    {
        let parts: &[(&str, &str)] = if *expansion == 1 {
            &[
                ("block.0.0.", "depthwise.conv."),
                ("block.0.1.", "depthwise.bn."),
                ("block.1.fc1.", "se.fc1."),
                ("block.1.fc2.", "se.fc2."),
                ("block.2.0.", "project.conv."),
                ("block.2.1.", "project.bn."),
            ]
        } else {
            &[
                ("block.0.0.", "expand.conv."),
                ("block.0.1.", "expand.bn."),
                ("block.1.0.", "depthwise.conv."),
                ("block.1.1.", "depthwise.bn."),
                ("block.2.fc1.", "se.fc1."),
                ("block.2.fc2.", "se.fc2."),
                ("block.3.0.", "project.conv."),
                ("block.3.1.", "project.bn."),
            ]
        };
        for j in 0..repeats {
            for (tv, ours) in parts {
                map.push((
                    format!("features.{}.{j}.{tv}", stage + 1),
                    format!("blocks.{k}.{ours}"),
                ));
            }
            k += 1;
        }
    }
    let last = STAGES.len() + 1;
    map.push((format!("features.{last}.0."), "last.conv.".to_string()));
    map.push((format!("features.{last}.1."), "last.bn.".to_string()));
    map
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}

/// Loads `path` into `net` through the key map.
fn load_into<M: Module>(
    net: &mut M,
    path: &Path,
    key_map: Vec<(String, String)>,
) -> Result<ApplyResult> {
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
            for (from, to) in key_map {
                store = store.with_key_remapping(format!("^{}", regex_escape(&from)), to);
            }
            net.load_from(&mut store)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }};
    }
    Ok(match ext.as_str() {
        "safetensors" => {
            load_with!(SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter))
        }
        "pth" | "pt" | "bin" => load_with!(PytorchStore::from_file(path)),
        _ => bail!(
            "{}: pretrained weights must be .pth, .pt or .safetensors",
            path.display()
        ),
    })
}

/// Loads what matches of a torchvision checkpoint (`mobilenet_v2` for MobileNetV2,
/// `efficientnet_b0` / `efficientnet_b3` for EfficientNet) into the model's backbone.
///
/// Returns the model and a one-line summary: tensors loaded, and what was skipped or missing.
/// Fails if the file cannot be read or nothing at all matched.
pub fn load_torchvision_backbone(model: Classifier, path: &Path) -> Result<(Classifier, String)> {
    if matches!(model, Classifier::Cnn(_)) {
        bail!(
            "--pretrained only applies to --model mobilenetv2 and efficientnet-b0|b3 \
             (torchvision weights); the compact CNN has none"
        );
    }
    if !path.is_file() {
        bail!("{}: pretrained weights file not found", path.display());
    }
    let (model, result, expected) = match model {
        Classifier::MobileNetV2(mut net) => {
            let r = load_into(&mut net, path, torchvision_key_map())?;
            (Classifier::MobileNetV2(net), r, "mobilenet_v2".to_string())
        }
        Classifier::EfficientNet(mut net) => {
            let variant = net.variant();
            let r = load_into(&mut net, path, efficientnet_key_map(variant))?;
            (
                Classifier::EfficientNet(net),
                r,
                format!("efficientnet_{}", variant.name()),
            )
        }
        Classifier::Cnn(_) => unreachable!("refused above"),
    };
    if result.applied.is_empty() {
        bail!(
            "{}: no tensor matched the backbone (is it a torchvision {expected} state dict?)",
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
            "; {} not loaded (shape mismatch: another width or variant than {expected}?): {}",
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
    Ok((model, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EfficientNetVariant;
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
            _ => unreachable!(),
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

    /// torchvision's `efficientnet_b0` / `_b3` state dict, names and shapes written out from
    /// torchvision's own construction (`EfficientNet.__init__`, `MBConv`, `SqueezeExcitation`),
    /// independently of the key map under test; values distinct per tensor (`seed`).
    fn torchvision_efficientnet(
        width: f32,
        depth: f32,
        seed: f32,
    ) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        use crate::model::mobilenetv2::make_divisible;
        let adjust = |c: usize| make_divisible(c as f32 * width, 8);
        let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        let mut push = |name: String, shape: Vec<usize>| {
            let n: usize = shape.iter().product();
            let k = out.len() as f32;
            let values = (0..n).map(|i| seed + k + (i % 97) as f32 * 1e-3).collect();
            out.push((name, shape, values));
        };
        // torchvision's Conv2dNormActivation: `.0` the convolution, `.1` the BatchNorm.
        fn conv_bn(
            push: &mut dyn FnMut(String, Vec<usize>),
            p: &str,
            cin: usize,
            cout: usize,
            k: usize,
            groups: usize,
        ) {
            push(format!("{p}.0.weight"), vec![cout, cin / groups, k, k]);
            for b in ["weight", "bias", "running_mean", "running_var"] {
                push(format!("{p}.1.{b}"), vec![cout]);
            }
        }
        // (expand_ratio, kernel, stride, input_channels, out_channels, num_layers)
        let setting = [
            (1, 3, 1, 32, 16, 1),
            (6, 3, 2, 16, 24, 2),
            (6, 5, 2, 24, 40, 2),
            (6, 3, 2, 40, 80, 3),
            (6, 5, 1, 80, 112, 3),
            (6, 5, 2, 112, 192, 4),
            (6, 3, 1, 192, 320, 1),
        ];
        conv_bn(&mut push, "features.0", 3, adjust(32), 3, 1);
        for (s, &(e, k, _, i, o, n)) in setting.iter().enumerate() {
            let layers = (n as f32 * depth).ceil() as usize;
            for j in 0..layers {
                let input = if j == 0 { adjust(i) } else { adjust(o) };
                let expanded = make_divisible((input * e) as f32, 8);
                let p = format!("features.{}.{j}.block", s + 1);
                let mut l = 0;
                if expanded != input {
                    conv_bn(&mut push, &format!("{p}.0"), input, expanded, 1, 1);
                    l = 1;
                }
                conv_bn(
                    &mut push,
                    &format!("{p}.{l}"),
                    expanded,
                    expanded,
                    k,
                    expanded,
                );
                let squeeze = (input / 4).max(1);
                push(
                    format!("{p}.{}.fc1.weight", l + 1),
                    vec![squeeze, expanded, 1, 1],
                );
                push(format!("{p}.{}.fc1.bias", l + 1), vec![squeeze]);
                push(
                    format!("{p}.{}.fc2.weight", l + 1),
                    vec![expanded, squeeze, 1, 1],
                );
                push(format!("{p}.{}.fc2.bias", l + 1), vec![expanded]);
                conv_bn(
                    &mut push,
                    &format!("{p}.{}", l + 2),
                    expanded,
                    adjust(o),
                    1,
                    1,
                );
            }
        }
        let last_in = adjust(320);
        conv_bn(&mut push, "features.8", last_in, 4 * last_in, 1, 1);
        push("classifier.1.weight".into(), vec![1000, 4 * last_in]);
        push("classifier.1.bias".into(), vec![1000]);
        out
    }

    fn efficientnet(variant: EfficientNetVariant) -> ModelSpec {
        ModelSpec::Efficientnet {
            variant,
            head_units: 16,
            dropout: 0.0,
            stochastic_depth: 0.2,
        }
    }

    fn first(t: Tensor<1>) -> f32 {
        t.into_data().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn a_torchvision_efficientnet_b0_checkpoint_fills_the_whole_backbone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("efficientnet_b0.safetensors");
        let tensors = torchvision_efficientnet(1.0, 1.0, 0.0);
        // torchvision's efficientnet_b0 has 5,288,548 parameters (the file also holds BatchNorm's
        // running statistics, which torchvision keeps as buffers).
        let params: usize = tensors
            .iter()
            .filter(|(k, ..)| !k.contains("running_"))
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum();
        assert_eq!(params, 5_288_548);
        write_safetensors(&file, &tensors);
        let device = Device::flex();
        let model = efficientnet(EfficientNetVariant::B0).init(4, 32, &device);
        let (loaded, summary) = load_torchvision_backbone(model, &file).unwrap();
        assert!(
            summary.contains(&format!("{} tensors loaded", tensors.len() - 2)),
            "{summary}"
        );
        assert!(summary.contains("2 file tensors unused"), "{summary}");
        assert!(!summary.contains("fresh initialisation"), "{summary}");
        let Classifier::EfficientNet(net) = loaded else {
            unreachable!()
        };
        let value = |name: &str| {
            let k = tensors.iter().position(|(n, ..)| n == name).unwrap();
            tensors[k].2[0]
        };
        // Spot checks, mapped by hand: stage 1 (no expansion) is block 0; stage 6 starts at
        // block 1 + 2 + 2 + 3 + 3 = 11.
        assert_eq!(
            first(net.blocks[0].se.fc1.bias.as_ref().unwrap().val()),
            value("features.1.0.block.1.fc1.bias")
        );
        assert_eq!(
            first(net.blocks[14].project.bn.running_var.value()),
            value("features.6.3.block.3.1.running_var")
        );
        assert_eq!(
            first(net.blocks[14].expand.as_ref().unwrap().bn.gamma.val()),
            value("features.6.3.block.0.1.weight")
        );
        assert_eq!(first(net.last.bn.beta.val()), value("features.8.1.bias"));
        // Stage 3 (kernel 5) is blocks 3 and 4.
        let weight = net.blocks[4].depthwise.conv.weight.val();
        assert_eq!(weight.dims(), [240, 1, 5, 5]);
        assert_eq!(
            weight.into_data().try_to_vec::<f32>().unwrap()[0],
            value("features.3.1.block.1.0.weight")
        );
    }

    #[test]
    fn b3_weights_load_into_b3_and_are_refused_by_b0() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("efficientnet_b3.safetensors");
        let tensors = torchvision_efficientnet(1.2, 1.4, 0.5);
        let params: usize = tensors
            .iter()
            .filter(|(k, ..)| !k.contains("running_"))
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum();
        assert_eq!(params, 12_233_232);
        write_safetensors(&file, &tensors);
        let device = Device::flex();
        let (_, summary) = load_torchvision_backbone(
            efficientnet(EfficientNetVariant::B3).init(4, 32, &device),
            &file,
        )
        .unwrap();
        assert!(
            summary.contains(&format!("{} tensors loaded", tensors.len() - 2)),
            "{summary}"
        );
        // Every B3 tensor has another shape than B0's: nothing loads, which is an error.
        let err = load_torchvision_backbone(
            efficientnet(EfficientNetVariant::B0).init(4, 32, &device),
            &file,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("efficientnet_b3.safetensors") && err.contains("efficientnet_b0"),
            "{err}"
        );
        // MobileNetV2 weights are not EfficientNet weights.
        let mobilenet = dir.path().join("mobilenet_v2.safetensors");
        write_safetensors(
            &mobilenet,
            &torchvision_tensors(&net(spec(0.35).init(3, 32, &device))),
        );
        let err = load_torchvision_backbone(
            efficientnet(EfficientNetVariant::B0).init(4, 32, &device),
            &mobilenet,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("torchvision efficientnet_b0"), "{err}");
    }
}
