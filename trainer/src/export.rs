//! `trainer export`: a trained model as a standard ONNX file that carries its own contract.
//!
//! leukoscope writes the ONNX graph itself rather than tracing it with burn-onnx's experimental
//! exporter: both architectures are ours and small, and writing them directly gives what the
//! tracer lacks or leaves to a later pass — BatchNorm folded into the preceding convolution,
//! ReLU6 as one `Clip(0, 6)`, SiLU as `x · Sigmoid(x)` and squeeze-and-excitation as
//! `GlobalAveragePool → Conv → SiLU → Conv → Sigmoid → Mul` (opset 13 has no SiLU operator; tract
//! and onnxruntime both run these elementwise), a symbolic batch dimension, and our metadata.
//! The graph is plain opset-13 ONNX (Conv, Clip, Relu, Sigmoid, Mul, Add, MaxPool,
//! GlobalAveragePool, Flatten, Gemm, Softmax).
//!
//! Input `image`: `f32 [batch, 3, H, W]` preprocessed by `leukoscope_model::preprocess`. Outputs `logits`
//! and `probabilities` (softmax), both `[batch, classes]`.

use std::path::Path;

use anyhow::{Result, bail};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::Tensor;
use leukoscope_model::contract::ModelContract;
use prost::Message;
use tract_onnx::pb;

use crate::model::Classifier;
use crate::model::efficientnet::{ConvBnSilu, EfficientNet};
use crate::model::mobilenetv2::ConvBn;
use leukoscope_model::onnx::graph::{GraphBuilder, value_info};

use leukoscope_model::onnx::graph::OPSET;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 parameters")
}

/// Symmetric padding of a convolution (all our convolutions use it).
fn symmetric_pad(conv: &Conv2d) -> Result<usize> {
    match conv.padding {
        PaddingConfig2d::Valid => Ok(0),
        PaddingConfig2d::Explicit(a, b, c, d) if a == b && b == c && c == d => Ok(a),
        ref other => bail!("cannot export convolution padding {other:?}"),
    }
}

/// A convolution's weight and bias with a following BatchNorm folded in:
/// `w' = w · γ/√(σ²+ε)`, `b' = (b − μ) · γ/√(σ²+ε) + β`, per output channel.
fn fold_batch_norm(conv: &Conv2d, bn: Option<&BatchNorm>) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    let dims = conv.weight.val().dims().to_vec();
    let mut w = values(conv.weight.val());
    let out = dims[0];
    let mut b = conv
        .bias
        .as_ref()
        .map_or_else(|| vec![0.0; out], |b| values(b.val()));
    if let Some(bn) = bn {
        let (gamma, beta) = (values(bn.gamma.val()), values(bn.beta.val()));
        let (mean, var) = (
            values(bn.running_mean.value()),
            values(bn.running_var.value()),
        );
        let per_out = w.len() / out;
        for c in 0..out {
            let scale = gamma[c] / (var[c] + bn.epsilon as f32).sqrt();
            w[c * per_out..(c + 1) * per_out]
                .iter_mut()
                .for_each(|v| *v *= scale);
            b[c] = (b[c] - mean[c]) * scale + beta[c];
        }
    }
    (dims, w, b)
}

/// A convolution as a `Conv` node, with the BatchNorm that follows it (if any) folded in.
fn folded_conv(
    g: &mut GraphBuilder,
    x: &str,
    conv: &Conv2d,
    bn: Option<&BatchNorm>,
) -> Result<String> {
    let (dims, w, b) = fold_batch_norm(conv, bn);
    Ok(g.conv(
        x,
        (&dims, w),
        b,
        conv.stride[0],
        symmetric_pad(conv)?,
        conv.groups,
    ))
}

fn conv_bn(g: &mut GraphBuilder, x: &str, cb: &ConvBn, relu6: bool) -> Result<String> {
    let y = folded_conv(g, x, &cb.conv, Some(&cb.bn))?;
    Ok(if relu6 { g.clip(&y, 0.0, 6.0) } else { y })
}

/// `x · Sigmoid(x)`.
fn silu(g: &mut GraphBuilder, x: &str) -> String {
    let s = g.node("Sigmoid", &[x], vec![], None);
    g.node("Mul", &[x, &s], vec![], None)
}

fn conv_bn_silu(g: &mut GraphBuilder, x: &str, cb: &ConvBnSilu) -> Result<String> {
    let y = folded_conv(g, x, &cb.conv, Some(&cb.bn))?;
    Ok(if cb.silu { silu(g, &y) } else { y })
}

/// The EfficientNet backbone up to and including its global average pool.
fn efficientnet_features(g: &mut GraphBuilder, net: &EfficientNet) -> Result<String> {
    let mut x = conv_bn_silu(g, "image", &net.stem)?;
    for block in &net.blocks {
        let input = x.clone();
        let mut y = match &block.expand {
            Some(expand) => conv_bn_silu(g, &x, expand)?,
            None => x.clone(),
        };
        y = conv_bn_silu(g, &y, &block.depthwise)?;
        let squeezed = g.node("GlobalAveragePool", &[&y], vec![], None);
        let s = folded_conv(g, &squeezed, &block.se.fc1, None)?;
        let s = silu(g, &s);
        let s = folded_conv(g, &s, &block.se.fc2, None)?;
        let s = g.node("Sigmoid", &[&s], vec![], None);
        y = g.node("Mul", &[&y, &s], vec![], None);
        y = conv_bn_silu(g, &y, &block.project)?;
        x = if block.residual {
            g.node("Add", &[&y, &input], vec![], None)
        } else {
            y
        };
    }
    let x = conv_bn_silu(g, &x, &net.last)?;
    Ok(g.node("GlobalAveragePool", &[&x], vec![], None))
}

fn linear(g: &mut GraphBuilder, x: &str, l: &Linear, output: Option<&str>) -> String {
    let [d_in, d_out] = l.weight.val().dims();
    let bias = l
        .bias
        .as_ref()
        .map_or_else(|| vec![0.0; d_out], |b| values(b.val()));
    g.linear(x, (d_in, d_out, values(l.weight.val())), bias, output)
}

/// The model (in inference mode: BatchNorm running statistics, no dropout) as an ONNX model
/// with the contract and `metadata` in its `metadata_props`.
pub fn to_onnx(
    model: &Classifier,
    contract: &ModelContract,
    metadata: Vec<(String, String)>,
) -> Result<pb::ModelProto> {
    contract.validate()?;
    let mut g = GraphBuilder::new();
    let head_input = match model {
        Classifier::MobileNetV2(net) => {
            let mut x = conv_bn(&mut g, "image", &net.stem, true)?;
            for block in &net.blocks {
                let input = x.clone();
                let mut y = match &block.expand {
                    Some(expand) => conv_bn(&mut g, &x, expand, true)?,
                    None => x.clone(),
                };
                y = conv_bn(&mut g, &y, &block.depthwise, true)?;
                y = conv_bn(&mut g, &y, &block.project, false)?;
                x = if block.residual {
                    g.node("Add", &[&y, &input], vec![], None)
                } else {
                    y
                };
            }
            let x = conv_bn(&mut g, &x, &net.last, true)?;
            let x = g.node("GlobalAveragePool", &[&x], vec![], None);
            let x = g.flatten(&x);
            let x = linear(&mut g, &x, &net.hidden, None);
            let x = g.node("Relu", &[&x], vec![], None);
            (x, &net.output)
        }
        Classifier::EfficientNet(net) => {
            let x = efficientnet_features(&mut g, net)?;
            let x = g.flatten(&x);
            let x = linear(&mut g, &x, &net.hidden, None);
            let x = g.node("Relu", &[&x], vec![], None);
            (x, &net.output)
        }
        Classifier::Cnn(net) => {
            let mut x = "image".to_string();
            for conv in &net.convs {
                x = folded_conv(&mut g, &x, conv, None)?;
                x = g.node("Relu", &[&x], vec![], None);
                x = g.max_pool(&x, 2);
            }
            let x = g.flatten(&x);
            let x = linear(&mut g, &x, &net.hidden, None);
            let x = g.node("Relu", &[&x], vec![], None);
            (x, &net.output)
        }
    };
    let (x, output_layer) = head_input;
    let logits = linear(&mut g, &x, output_layer, Some("logits"));
    g.softmax(&logits, "probabilities");
    let classes = Some(contract.num_classes() as i64);
    let input = value_info(
        "image",
        &[
            None,
            Some(3),
            Some(contract.input_height as i64),
            Some(contract.input_width as i64),
        ],
    );
    let outputs = vec![
        value_info("probabilities", &[None, classes]),
        value_info("logits", &[None, classes]),
    ];
    let mut entries = contract.to_metadata();
    entries.extend(metadata);
    Ok(g.finish(input, outputs, entries, env!("CARGO_PKG_VERSION")))
}

/// Writes an ONNX model to `path`, whole or not at all even across a power cut (creating its
/// folder if needed).
pub fn save(model: &pb::ModelProto, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        leukoscope_model::durable::create_dir_all(dir)?;
    }
    leukoscope_model::durable::write_atomic(path, &model.encode_to_vec())?;
    Ok(())
}

/// Where the exported model's pixel size (`leukoscope.um_per_px`) comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportScale {
    /// Measured from the red cells of up to this many training-split pictures (evenly spread
    /// over the split), at the model input's pixels (`leukoscope_model::scale::dataset`).
    Measure {
        /// Pictures to measure at most.
        pictures: usize,
    },
    /// Stated by the user (`--um-per-px X`), e.g. from a stage micrometer.
    Stated(f64),
}

/// The model input's pixel size and pixel aspect ratio (`None`: square) for a run: stated
/// (square pixels), or measured on its training split. A
/// measurement that cannot be made (the dataset folder is gone, too few red cells: pictures
/// that are not smear fields) is `Ok((None, None))` with the reason printed: the model is exported
/// without the key and devices frame its input as before.
pub fn run_scale(
    run: &crate::run::RunDir,
    data: &Path,
    contract: &ModelContract,
    scale: &ExportScale,
) -> Result<(Option<f64>, Option<f64>)> {
    use leukoscope_model::scale;
    match *scale {
        ExportScale::Stated(u) => {
            scale::check_um_per_px("--um-per-px", u)?;
            println!("pixel size: {u} µm/px, square pixels (stated with --um-per-px)");
            Ok((Some(u), None))
        }
        ExportScale::Measure { pictures } => {
            let files = match scale::dataset::manifest_files(
                &run.manifest(),
                data,
                leukoscope_model::manifest::Split::Train,
            ) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!(
                        "warning: pixel size not recorded (leukoscope.um_per_px): cannot list the \
                         training split: {e}; state it with --um-per-px X"
                    );
                    return Ok((None, None));
                }
            };
            let chosen = scale::dataset::spread(&files, pictures);
            match scale::dataset::measure_files_at_input(
                &chosen,
                &scale::cells::CellSettings::default(),
                contract.input_width,
                contract.input_height,
            ) {
                Ok(m) => {
                    for (f, why) in &m.skipped {
                        eprintln!("pixel size: skipped {}: {why}", f.display());
                    }
                    println!(
                        "pixel size of the model input, measured on {} training pictures: {m}",
                        chosen.len()
                    );
                    let aspect = m.estimate.pixel_aspect;
                    let rounded = |v: f64, digits: i32| {
                        let f = 10f64.powi(digits);
                        (v * f).round() / f
                    };
                    Ok((
                        Some(rounded(m.estimate.um_per_px, 4)),
                        (aspect != 1.0).then(|| rounded(aspect, 3)),
                    ))
                }
                Err(e) => {
                    eprintln!(
                        "warning: pixel size not recorded (leukoscope.um_per_px): {e}; state it \
                         with --um-per-px X (a stage micrometer: `edge calibrate --micrometer`)"
                    );
                    Ok((None, None))
                }
            }
        }
    }
}

/// `trainer export`: the run's best model, with its contract (and the input's pixel size,
/// `scale`) and the run's facts in the metadata (`leukoscope.model_family`, `.width`,
/// `.run_id`, `.manifest_sha256`, `.test_accuracy`, `.test_macro_f1`, `.created`,
/// `.version`).
pub fn export_run(run: &crate::run::RunDir, out: &Path, scale: &ExportScale) -> Result<()> {
    use leukoscope_model::contract::metadata_keys as keys;
    let device = burn::tensor::Device::flex();
    let (model, mut contract) = crate::evaluate::load_best_model(run, &device)?;
    let file = run.load_run()?;
    (contract.um_per_px, contract.pixel_aspect) =
        run_scale(run, &file.config.data, &contract, scale)?;
    let mut metadata = vec![
        (keys::RUN_ID.to_string(), file.info.id.clone()),
        (
            keys::MANIFEST_SHA256.to_string(),
            file.info.manifest_sha256.clone(),
        ),
        (keys::CREATED.to_string(), chrono::Utc::now().to_rfc3339()),
        (
            keys::VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ];
    match &file.config.model {
        crate::model::ModelSpec::Mobilenetv2 { width, .. } => {
            metadata.push((keys::MODEL_FAMILY.into(), "mobilenetv2".into()));
            metadata.push((keys::WIDTH.into(), width.to_string()));
        }
        crate::model::ModelSpec::Efficientnet { variant, .. } => {
            metadata.push((
                keys::MODEL_FAMILY.into(),
                format!("efficientnet-{}", variant.name()),
            ));
        }
        crate::model::ModelSpec::Cnn { .. } => {
            metadata.push((keys::MODEL_FAMILY.into(), "cnn".into()));
        }
    }
    let report = run.report().join("report.json");
    if report.exists() {
        let doc = leukoscope_model::evaluation_report::read_report(&report)?;
        metadata.push((
            keys::TEST_ACCURACY.into(),
            format!("{:.6}", doc.metrics.accuracy),
        ));
        metadata.push((
            keys::TEST_MACRO_F1.into(),
            format!("{:.6}", doc.metrics.macro_avg.f1),
        ));
    }
    let onnx = to_onnx(&model, &contract, metadata)?;
    save(&onnx, out)?;
    println!(
        "wrote {} ({} bytes, opset {OPSET}, labels {:?}, input {})",
        out.display(),
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        contract.labels,
        contract.input_size_string()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunDir;

    fn contract() -> ModelContract {
        ModelContract::new(vec!["a".into(), "b".into()], 64)
    }

    #[test]
    fn a_stated_pixel_size_is_checked_and_taken_as_square() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir(dir.path().to_path_buf());
        let scale = run_scale(&run, dir.path(), &contract(), &ExportScale::Stated(0.37));
        assert_eq!(scale.unwrap(), (Some(0.37), None));
        let err = run_scale(&run, dir.path(), &contract(), &ExportScale::Stated(-1.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--um-per-px"), "{err}");
    }

    #[test]
    fn a_pixel_size_that_cannot_be_measured_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir(dir.path().to_path_buf());
        // No manifest: nothing to measure, the file is written without the key.
        let scale = run_scale(
            &run,
            dir.path(),
            &contract(),
            &ExportScale::Measure { pictures: 10 },
        );
        assert_eq!(scale.unwrap(), (None, None));
        // Pictures without red cells: the same.
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("a")).unwrap();
        image::RgbImage::from_pixel(64, 64, image::Rgb([30, 30, 30]))
            .save(data.join("a/x.png"))
            .unwrap();
        let digest =
            leukoscope_model::manifest::sha256_hex(&std::fs::read(data.join("a/x.png")).unwrap());
        std::fs::write(
            run.manifest(),
            format!("file,sha256,class,split\na/x.png,{digest},a,train\n"),
        )
        .unwrap();
        let scale = run_scale(
            &run,
            &data,
            &contract(),
            &ExportScale::Measure { pictures: 10 },
        );
        assert_eq!(scale.unwrap(), (None, None));
    }
}
