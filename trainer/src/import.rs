//! `trainer fit --init-from FILE.onnx`: start from the weights of a leukoscope ONNX file — the
//! shipped model, say — so it can be fine-tuned (on new augmentation, or on a clinic's own
//! pictures) without the training run that made it.
//!
//! Export folds every BatchNorm into its convolution, so the file only holds `w' = w·s` and
//! `b'`. Read back, each convolution gets `w'`, and its BatchNorm is set so that it changes
//! nothing: the running mean μ and variance σ² are the per-channel statistics of `conv(x; w')`
//! on training pictures (measured with tract on the file itself), γ = √(σ²+ε) and β = μ + b'.
//! In inference mode the network then computes exactly what the file computes; in training mode
//! (batch statistics ≈ μ, σ²) almost exactly, so fine-tuning starts where the file stands.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use leukoscope_model::contract::ModelContract;
use leukoscope_model::onnx::graph::f32_values;
use leukoscope_model::onnx::{ModelError, OnnxFile};
use tract_onnx::pb;

use crate::model::Classifier;

/// A weight and bias of one Conv or Gemm node, with the name of the node's output.
struct Layer {
    output: String,
    weight: (Vec<usize>, Vec<f32>),
    bias: Vec<f32>,
}

fn floats(t: &pb::TensorProto) -> Result<Vec<f32>> {
    f32_values(t).with_context(|| {
        format!(
            "initializer '{}' is not f32 (an int8 file? use the f32 one)",
            t.name
        )
    })
}

/// The Conv and Gemm layers of the graph, in node order.
fn layers(graph: &pb::GraphProto) -> Result<(Vec<Layer>, Vec<Layer>)> {
    let inits: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let (mut convs, mut gemms) = (Vec::new(), Vec::new());
    for node in &graph.node {
        let into = match node.op_type.as_str() {
            "Conv" => &mut convs,
            "Gemm" => &mut gemms,
            "QLinearConv" | "QuantizeLinear" => {
                bail!("it is quantized (int8): start from the f32 file")
            }
            _ => continue,
        };
        let init = |k: usize| -> Result<&pb::TensorProto> {
            node.input
                .get(k)
                .and_then(|n| inits.get(n.as_str()).copied())
                .with_context(|| {
                    format!("{} '{}' has no constant input {k}", node.op_type, node.name)
                })
        };
        let w = init(1)?;
        let weight: (Vec<usize>, Vec<f32>) =
            (w.dims.iter().map(|&d| d as usize).collect(), floats(w)?);
        let bias = match init(2) {
            Ok(b) => floats(b)?,
            Err(_) => vec![0.0; weight.0[if node.op_type == "Conv" { 0 } else { 1 }]],
        };
        into.push(Layer {
            output: node.output[0].clone(),
            weight,
            bias,
        });
    }
    Ok((convs, gemms))
}

fn tensor<const D: usize>(shape: &[usize], values: Vec<f32>, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

fn set_conv(conv: &mut Conv2d, layer: &Layer, with_bias: bool, device: &Device) -> Result<()> {
    let dims = conv.weight.val().dims().to_vec();
    if dims != layer.weight.0 {
        bail!(
            "layer {}: weight shape {:?} in the file, {:?} in this model (another architecture or width?)",
            layer.output,
            layer.weight.0,
            dims
        );
    }
    conv.weight = Param::from_tensor(tensor(&dims, layer.weight.1.clone(), device));
    if with_bias {
        conv.bias = Some(Param::from_tensor(tensor(
            &[layer.bias.len()],
            layer.bias.clone(),
            device,
        )));
    }
    Ok(())
}

/// Per-channel (mean, variance) of `conv(x; w')` (the output without the folded bias).
type ChannelStats = (Vec<f32>, Vec<f32>);

fn set_batch_norm(bn: &mut BatchNorm, bias: &[f32], (mean, var): &ChannelStats, device: &Device) {
    let eps = bn.epsilon as f32;
    let n = bias.len();
    let gamma: Vec<f32> = var.iter().map(|v| (v + eps).sqrt()).collect();
    let beta: Vec<f32> = mean.iter().zip(bias).map(|(m, b)| m + b).collect();
    bn.gamma = Param::from_tensor(tensor(&[n], gamma, device));
    bn.beta = Param::from_tensor(tensor(&[n], beta, device));
    bn.running_mean = RunningState::new(tensor(&[n], mean.clone(), device));
    bn.running_var = RunningState::new(tensor(&[n], var.clone(), device));
}

fn set_linear(linear: &mut Linear, layer: &Layer, device: &Device) -> Result<()> {
    let dims = linear.weight.val().dims().to_vec();
    if dims != layer.weight.0 {
        bail!(
            "dense layer {}: weight shape {:?} in the file, {:?} in this model",
            layer.output,
            layer.weight.0,
            dims
        );
    }
    linear.weight = Param::from_tensor(tensor(&dims, layer.weight.1.clone(), device));
    linear.bias = Some(Param::from_tensor(tensor(
        &[layer.bias.len()],
        layer.bias.clone(),
        device,
    )));
    Ok(())
}

/// Runs the file with tract on `inputs` and returns, per Conv layer, the per-channel mean and
/// variance of its output minus its bias.
fn conv_statistics(
    file: &OnnxFile,
    convs: &[&Layer],
    contract: &ModelContract,
    inputs: &[Vec<f32>],
) -> Result<Vec<ChannelStats>> {
    // Local: tract's prelude has its own `Tensor`.
    use tract_onnx::prelude::*;
    let (h, w) = (
        contract.input_height as usize,
        contract.input_width as usize,
    );
    let outputs: Vec<&str> = convs.iter().map(|c| c.output.as_str()).collect();
    let plan = file
        .plan_at(&outputs, (h, w))
        .map_err(|e| anyhow::anyhow!("tract cannot run it: {e:#}"))?;
    let mut sums: Vec<(Vec<f64>, Vec<f64>, f64)> = convs
        .iter()
        .map(|c| (vec![0.0; c.bias.len()], vec![0.0; c.bias.len()], 0.0))
        .collect();
    for x in inputs {
        let input = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), x.clone())?;
        let outputs = plan
            .run(tvec!(Tensor::from(input).into()))
            .map_err(|e| anyhow::anyhow!("tract: {e:#}"))?;
        for ((out, layer), (sum, sq, count)) in outputs.iter().zip(convs).zip(&mut sums) {
            let view = out.to_plain_array_view::<f32>()?;
            let shape = view.shape().to_vec();
            let (c, per) = (shape[1], shape[2] * shape[3]);
            let data = view.as_slice().context("contiguous output")?;
            for ch in 0..c {
                for &v in &data[ch * per..(ch + 1) * per] {
                    let v = f64::from(v - layer.bias[ch]);
                    sum[ch] += v;
                    sq[ch] += v * v;
                }
            }
            *count += per as f64;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(sum, sq, n)| {
            let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
            let var = sq
                .iter()
                .zip(&mean)
                .map(|(q, m)| (q / n - m * m).max(0.0) as f32)
                .collect();
            (mean.into_iter().map(|m| m as f32).collect(), var)
        })
        .collect())
}

/// Loads the weights of the leukoscope ONNX file at `path` into `model` (same architecture),
/// after checking the file's contract equals `contract` (MobileNetV2 and EfficientNet may differ
/// in input size: their BatchNorm statistics are then measured at this run's size). `calibration`
/// are preprocessed training pictures for the BatchNorm statistics (not needed by the compact CNN;
/// a few dozen are enough).
pub fn load_onnx_weights(
    mut model: Classifier,
    path: &Path,
    contract: &ModelContract,
    calibration: &[Vec<f32>],
    device: &Device,
) -> Result<Classifier> {
    let named = |e: anyhow::Error| anyhow::anyhow!("--init-from {}: {e:#}", path.display());
    let file = OnnxFile::read(path).map_err(|e| match e {
        ModelError::Contract { reason, .. } => anyhow::anyhow!(
            "--init-from {}: not a leukoscope model: {reason}",
            path.display()
        ),
        ModelError::NotOnnx { reason, .. } => {
            anyhow::anyhow!(
                "--init-from {}: not an ONNX file ({reason})",
                path.display()
            )
        }
        other => anyhow::anyhow!("--init-from {other}"),
    })?;
    let theirs = file.contract().clone();
    // MobileNetV2 and EfficientNet end in a global average pool, so their weights fit any input size: a model can
    // be fine-tuned at a higher resolution than the file's. The compact CNN's dense layer cannot.
    // The colour normalization may change too: fine-tuning is how a model learns a new one.
    let same_size = ModelContract {
        input_height: contract.input_height,
        input_width: contract.input_width,
        colour: contract.colour,
        unfamiliarity: contract.unfamiliarity.clone(),
        temperature: contract.temperature,
        // The pixel size is measured at export, not part of a run's contract.
        um_per_px: contract.um_per_px,
        pixel_aspect: contract.pixel_aspect,
        ..theirs.clone()
    };
    if same_size != *contract {
        bail!(
            "--init-from {}: its contract (labels {:?}, input {}) differs from this run's \
             (labels {:?}, input {}) in labels or normalization",
            path.display(),
            theirs.labels,
            theirs.input_size_string(),
            contract.labels,
            contract.input_size_string()
        );
    }
    if theirs != *contract && matches!(model, Classifier::Cnn(_)) {
        bail!(
            "--init-from {}: its contract's input is {}, this run's {}; only MobileNetV2 and \
             EfficientNet can change their input size (the compact CNN's dense layer depends on it)",
            path.display(),
            theirs.input_size_string(),
            contract.input_size_string()
        );
    }
    let (convs, gemms) = layers(file.graph()).map_err(named)?;
    let count_mismatch = |what: &str, file: usize, ours: usize| {
        anyhow::anyhow!(
            "--init-from {}: {file} {what} layers in the file, {ours} in this model (another architecture?)",
            path.display()
        )
    };
    // Every family ends in the same two dense layers.
    if gemms.len() != 2 {
        return Err(count_mismatch("dense", gemms.len(), 2));
    }
    if calibration.is_empty() && !matches!(model, Classifier::Cnn(_)) {
        bail!(
            "--init-from {}: no pictures to measure BatchNorm statistics on",
            path.display()
        );
    }
    match &mut model {
        Classifier::MobileNetV2(net) => {
            let n = net.conv_bns_mut().len();
            if convs.len() != n {
                return Err(count_mismatch("convolution", convs.len(), n));
            }
            let all: Vec<&Layer> = convs.iter().collect();
            let stats = conv_statistics(&file, &all, contract, calibration).map_err(named)?;
            for ((cb, layer), s) in net.conv_bns_mut().into_iter().zip(&convs).zip(&stats) {
                set_conv(&mut cb.conv, layer, false, device).map_err(named)?;
                set_batch_norm(&mut cb.bn, &layer.bias, s, device);
            }
            set_linear(&mut net.hidden, &gemms[0], device).map_err(named)?;
            set_linear(&mut net.output, &gemms[1], device).map_err(named)?;
        }
        Classifier::EfficientNet(net) => {
            // Export order: stem; per block [expand], depthwise, SE fc1, SE fc2, project; last.
            let (mut with_bn, mut se) = (vec![0], Vec::new());
            let mut next = 1;
            for block in &net.blocks {
                if block.expand.is_some() {
                    with_bn.push(next);
                    next += 1;
                }
                with_bn.extend([next, next + 3]);
                se.push((next + 1, next + 2));
                next += 4;
            }
            with_bn.push(next);
            if convs.len() != next + 1 {
                return Err(count_mismatch("convolution", convs.len(), next + 1));
            }
            let bn_convs: Vec<&Layer> = with_bn.iter().map(|&k| &convs[k]).collect();
            let stats = conv_statistics(&file, &bn_convs, contract, calibration).map_err(named)?;
            for ((cb, layer), s) in net.conv_bns_mut().into_iter().zip(bn_convs).zip(&stats) {
                set_conv(&mut cb.conv, layer, false, device).map_err(named)?;
                set_batch_norm(&mut cb.bn, &layer.bias, s, device);
            }
            for (block, (fc1, fc2)) in net.blocks.iter_mut().zip(se) {
                set_conv(&mut block.se.fc1, &convs[fc1], true, device).map_err(named)?;
                set_conv(&mut block.se.fc2, &convs[fc2], true, device).map_err(named)?;
            }
            set_linear(&mut net.hidden, &gemms[0], device).map_err(named)?;
            set_linear(&mut net.output, &gemms[1], device).map_err(named)?;
        }
        Classifier::Cnn(net) => {
            if convs.len() != net.convs.len() {
                return Err(count_mismatch("convolution", convs.len(), net.convs.len()));
            }
            for (conv, layer) in net.convs.iter_mut().zip(&convs) {
                set_conv(conv, layer, true, device).map_err(named)?;
            }
            set_linear(&mut net.hidden, &gemms[0], device).map_err(named)?;
            set_linear(&mut net.output, &gemms[1], device).map_err(named)?;
        }
    }
    Ok(model)
}
