//! The graph rewrite: an f32 ONNX graph and activation ranges in, a standard int8 ONNX graph out.
//!
//! Representation (chosen by measuring tract 0.23.9, see the README's quantize section):
//! - A full or pointwise convolution becomes `QLinearConv` (int8 weights, symmetric, per output
//!   channel; int32 bias; u8 or i8 activations). A `Relu` or `Clip(0, ·)` that follows it alone
//!   is folded into the output range: saturation at the zero point is the ReLU.
//! - A depthwise convolution stays a float `Conv` fed by `DequantizeLinear` of int8 weights
//!   (weights-only), unless asked otherwise: tract has no integer depthwise kernel and lowers an
//!   int8 one to im2col + one matrix product per channel, slower than its f32 depthwise kernel.
//! - `Gemm` keeps f32 compute with int8 weights through `DequantizeLinear` (weights-only):
//!   `QGemm` is not standard ONNX.
//! - Everything else (residual `Add`, pooling, `Flatten`, `Softmax`) stays float;
//!   `QuantizeLinear` / `DequantizeLinear` are inserted where the int8 and float parts meet.
//!
//! Naming: a float tensor `t` of the f32 graph keeps its name in the int8 graph whenever it
//! exists as float; its quantized form is `t_quantized`. Graph inputs and outputs are unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use crate::QuantizeError;
use crate::ranges::{ActivationType, QParams, Range};
use leukoscope_model::onnx::OnnxFile;
use leukoscope_model::onnx::graph::{self, attr_int, f32_tensor, f32_values, node_proto};

/// How depthwise convolutions are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Depthwise {
    /// int8 weights, float compute (the fastest choice in tract).
    #[default]
    Float,
    /// `QLinearConv` like the other convolutions.
    Int8,
}

/// What the rewrite needs besides the graph.
#[derive(Clone, Debug)]
pub struct RewriteOptions {
    /// Activation integer type.
    pub activations: ActivationType,
    /// One weight scale per tensor instead of per output channel.
    pub per_tensor_weights: bool,
    /// Node names left entirely in f32 (weights too).
    pub keep_float: BTreeSet<String>,
    /// Depthwise convolutions.
    pub depthwise: Depthwise,
}

/// How one layer ended up in the int8 graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    /// Integer compute (`QLinearConv`).
    Int8,
    /// int8 weights, float compute.
    WeightsOnly,
    /// Left in f32 (`--keep-float`).
    Float,
}

/// One convolution or dense layer of the model and what became of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Layer {
    /// The node's name in the f32 graph.
    pub node: String,
    /// Its operator (`Conv`, `Gemm`).
    pub op: String,
    /// What it became.
    pub kind: LayerKind,
    /// The float tensor it produces in the f32 graph (after a folded activation).
    pub tensor: String,
    /// For int8 layers: the quantized tensor in the int8 graph and its parameters.
    pub quantized: Option<(String, QParams)>,
}

/// The int8 model and what was done to each layer.
pub struct Rewritten {
    /// The int8 model (metadata not yet extended with the recipe).
    pub proto: pb::ModelProto,
    /// Convolution and dense layers in graph order.
    pub layers: Vec<Layer>,
}

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn zero_point_init(name: &str, dims: &[i64], v: &[i32], ty: ActivationType) -> pb::TensorProto {
    match ty {
        ActivationType::U8 => graph::tensor(
            name,
            dims,
            pb::tensor_proto::DataType::Uint8,
            v.iter().map(|&z| z as u8).collect(),
        ),
        ActivationType::I8 => graph::tensor(
            name,
            dims,
            pb::tensor_proto::DataType::Int8,
            v.iter().map(|&z| z as i8 as u8).collect(),
        ),
    }
}

impl Layer {
    /// A layer left in float compute on dequantized int8 weights.
    fn weights_only(n: &pb::NodeProto) -> Self {
        Layer {
            node: n.name.clone(),
            op: n.op_type.clone(),
            kind: LayerKind::WeightsOnly,
            tensor: n.output[0].clone(),
            quantized: None,
        }
    }
}

/// Largest weight magnitude: 7 bits (±63), not 8. onnxruntime's x86 u8×s8 kernels without VNNI
/// (AVX2, AVX-512F) add pairs of u8·s8 products in 16 bits (`vpmaddubsw`), which saturates when
/// 2·255·|w| > 32767; with |w| ≤ 63 it cannot. With full-range weights the shipped model's int8
/// file agreed with tract on only 87.6 % of its test pictures on an AVX2 machine (99.6 % on
/// AVX-512 VNNI). This is onnxruntime's own `reduce_range` remedy.
pub const WEIGHT_MAX: f32 = 63.0;

/// Symmetric int8 quantization of a weight tensor along `axis` (`None`: one scale for all),
/// in ±[`WEIGHT_MAX`]. Returns the int8 values and the scales.
pub fn quantize_weights(w: &[f32], dims: &[i64], axis: Option<usize>) -> (Vec<i8>, Vec<f32>) {
    let channels = axis.map_or(1, |a| dims[a] as usize);
    // Index of the channel of flat element i.
    let inner: usize = axis.map_or(1, |a| dims[a + 1..].iter().product::<i64>() as usize);
    let chan = |i: usize| {
        if channels == 1 {
            0
        } else {
            (i / inner) % channels
        }
    };
    let mut absmax = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        let c = chan(i);
        absmax[c] = absmax[c].max(v.abs());
    }
    let scales: Vec<f32> = absmax
        .iter()
        .map(|&a| if a > 0.0 { a / WEIGHT_MAX } else { 1.0 })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (v / scales[chan(i)])
                .round_ties_even()
                .clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8
        })
        .collect();
    (q, scales)
}

struct Builder<'a> {
    file: &'a OnnxFile,
    ranges: &'a HashMap<String, Range>,
    opts: &'a RewriteOptions,
    inits: HashMap<String, &'a pb::TensorProto>,
    nodes: Vec<pb::NodeProto>,
    new_inits: BTreeMap<String, pb::TensorProto>,
    /// Tensors available as float in the new graph.
    float: BTreeSet<String>,
    /// Tensors available quantized: name → (quantized name, params).
    quant: BTreeMap<String, (String, QParams)>,
}

impl<'a> Builder<'a> {
    fn unsupported(&self, reason: String) -> QuantizeError {
        QuantizeError::Unsupported {
            path: self.file.path().to_path_buf(),
            reason,
        }
    }

    fn range(&self, t: &str) -> Result<Range, QuantizeError> {
        self.ranges
            .get(t)
            .copied()
            .ok_or_else(|| self.unsupported(format!("no calibration range for tensor '{t}'")))
    }

    /// Adds scale and zero point initializers for tensor `t`, returns their names.
    fn qparam_inits(&mut self, t: &str, q: QParams) -> (String, String) {
        let (s, z) = (format!("{t}_scale"), format!("{t}_zero_point"));
        self.new_inits
            .insert(s.clone(), f32_tensor(&s, &[], &[q.scale]));
        self.new_inits.insert(
            z.clone(),
            zero_point_init(&z, &[], &[q.zero_point], self.opts.activations),
        );
        (s, z)
    }

    /// The float form of `t`, dequantizing it if it only exists quantized.
    fn float_of(&mut self, t: &str) -> String {
        if t.is_empty() || self.float.contains(t) || self.inits.contains_key(t) {
            return t.to_string();
        }
        if let Some((qname, q)) = self.quant.get(t).cloned() {
            let (s, z) = self.qparam_inits(t, q);
            self.nodes.push(node_proto(
                "DequantizeLinear",
                format!("{t}_DequantizeLinear"),
                vec![qname, s, z],
                vec![t.to_string()],
                vec![],
            ));
        }
        self.float.insert(t.to_string());
        t.to_string()
    }

    /// The quantized form of `t`, quantizing its float form with its calibrated range if needed.
    fn quant_of(&mut self, t: &str) -> Result<(String, QParams), QuantizeError> {
        if let Some(q) = self.quant.get(t) {
            return Ok(q.clone());
        }
        let q = QParams::for_range(self.range(t)?, self.opts.activations);
        let (s, z) = self.qparam_inits(t, q);
        let qname = format!("{t}_quantized");
        self.nodes.push(node_proto(
            "QuantizeLinear",
            format!("{t}_QuantizeLinear"),
            vec![t.to_string(), s, z],
            vec![qname.clone()],
            vec![],
        ));
        self.quant.insert(t.to_string(), (qname.clone(), q));
        Ok((qname, q))
    }

    fn weight(
        &self,
        n: &pb::NodeProto,
        i: usize,
    ) -> Result<(&'a pb::TensorProto, Vec<f32>), QuantizeError> {
        let name = n.input.get(i).map(String::as_str).unwrap_or("");
        let t = *self.inits.get(name).ok_or_else(|| {
            self.unsupported(format!(
                "{} '{}': input {i} ('{name}') is not a constant; only constant weights can be quantized",
                n.op_type, n.name
            ))
        })?;
        let v = f32_values(t).ok_or_else(|| {
            self.unsupported(format!(
                "{} '{}': weight '{name}' is not f32",
                n.op_type, n.name
            ))
        })?;
        Ok((t, v))
    }

    /// int8 weights (per channel along `axis`, or per tensor) as initializers; returns
    /// (quantized name, scale name, zero point name, scales).
    fn weight_inits(
        &mut self,
        t: &pb::TensorProto,
        w: &[f32],
        axis: usize,
    ) -> (String, String, String, Vec<f32>) {
        let per_channel = !self.opts.per_tensor_weights;
        let (q, scales) = quantize_weights(w, &t.dims, per_channel.then_some(axis));
        let qn = format!("{}_quantized", t.name);
        let sn = format!("{}_scale", t.name);
        let zn = format!("{}_zero_point", t.name);
        self.new_inits.insert(
            qn.clone(),
            graph::tensor(
                &qn,
                &t.dims,
                pb::tensor_proto::DataType::Int8,
                q.iter().map(|&x| x as u8).collect(),
            ),
        );
        let dims: Vec<i64> = if per_channel {
            vec![scales.len() as i64]
        } else {
            vec![]
        };
        self.new_inits
            .insert(sn.clone(), f32_tensor(&sn, &dims, &scales));
        self.new_inits.insert(
            zn.clone(),
            graph::tensor(
                &zn,
                &dims,
                pb::tensor_proto::DataType::Int8,
                vec![0; scales.len()],
            ),
        );
        (qn, sn, zn, scales)
    }

    /// Weights-only: the layer's weight input replaced by `DequantizeLinear` of int8 weights.
    fn weights_only(
        &mut self,
        n: &pb::NodeProto,
        axis: usize,
    ) -> Result<pb::NodeProto, QuantizeError> {
        let (t, w) = self.weight(n, 1)?;
        let (qn, sn, zn, _) = self.weight_inits(t, &w, axis);
        let deq = format!("{}_dequantized", t.name);
        let attrs = if self.opts.per_tensor_weights {
            vec![]
        } else {
            vec![attr_int("axis", axis as i64)]
        };
        self.nodes.push(node_proto(
            "DequantizeLinear",
            format!("{}_DequantizeLinear", t.name),
            vec![qn, sn, zn],
            vec![deq.clone()],
            attrs,
        ));
        let mut out = n.clone();
        out.input[0] = self.float_of(&n.input[0]);
        out.input[1] = deq;
        Ok(out)
    }
}

/// The activation that follows `conv_out` alone and can be folded into the output range:
/// `Relu`, or `Clip` with a constant lower bound of 0. Returns (node index, upper bound).
fn foldable_activation(
    nodes: &[pb::NodeProto],
    consumers: &HashMap<&str, Vec<usize>>,
    inits: &HashMap<String, &pb::TensorProto>,
    graph_outputs: &[&str],
    conv_out: &str,
) -> Option<(usize, f32)> {
    if graph_outputs.contains(&conv_out) {
        return None;
    }
    let users = consumers.get(conv_out)?;
    let [i] = users.as_slice() else { return None };
    let n = &nodes[*i];
    let scalar = |name: Option<&String>| -> Option<f32> {
        let t = inits.get(name?.as_str())?;
        f32_values(t).filter(|v| v.len() == 1).map(|v| v[0])
    };
    match n.op_type.as_str() {
        "Relu" => Some((*i, f32::INFINITY)),
        "Clip" => {
            let lo = scalar(n.input.get(1)).or_else(|| attr(n, "min").map(|a| a.f))?;
            let hi = scalar(n.input.get(2))
                .or_else(|| attr(n, "max").map(|a| a.f))
                .unwrap_or(f32::INFINITY);
            (lo == 0.0 && hi > 0.0).then_some((*i, hi))
        }
        _ => None,
    }
}

/// Rewrites `file` into int8 with the activation `ranges` (by f32 tensor name).
pub fn rewrite(
    file: &OnnxFile,
    ranges: &HashMap<String, Range>,
    opts: &RewriteOptions,
) -> Result<Rewritten, QuantizeError> {
    let g = file.graph();
    let known: BTreeSet<&str> = g.node.iter().map(|n| n.name.as_str()).collect();
    if let Some(bad) = opts.keep_float.iter().find(|k| !known.contains(k.as_str())) {
        let layers: Vec<&str> = g
            .node
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
            .map(|n| n.name.as_str())
            .collect();
        return Err(QuantizeError::Option(format!(
            "--keep-float {bad}: no node of that name in {}; its conv and dense layers are {layers:?}",
            file.path().display()
        )));
    }
    let inits: HashMap<String, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name.clone(), t)).collect();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for inp in &n.input {
            consumers.entry(inp.as_str()).or_default().push(i);
        }
    }
    let graph_outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut b = Builder {
        file,
        ranges,
        opts,
        inits: inits.clone(),
        nodes: Vec::new(),
        new_inits: BTreeMap::new(),
        float: g.input.iter().map(|i| i.name.clone()).collect(),
        quant: BTreeMap::new(),
    };
    let mut layers = Vec::new();
    let mut folded: BTreeSet<usize> = BTreeSet::new();
    for (i, n) in g.node.iter().enumerate() {
        if folded.contains(&i) {
            continue;
        }
        let keep = opts.keep_float.contains(&n.name)
            || leukoscope_model::familiarity::is_uncertainty_node(&n.name);
        match n.op_type.as_str() {
            "Conv" if !keep => {
                let group = attr(n, "group").map_or(1, |a| a.i);
                let (wt, w) = b.weight(n, 1)?;
                let out_channels = wt.dims[0];
                let depthwise = group > 1 && group == out_channels;
                if depthwise && opts.depthwise == Depthwise::Float {
                    let new = b.weights_only(n, 0)?;
                    b.nodes.push(new);
                    b.float.insert(n.output[0].clone());
                    layers.push(Layer::weights_only(n));
                    continue;
                }
                let (xq, xp) = b.quant_of(&n.input[0])?;
                let (xs, xz) = b.qparam_inits(&n.input[0], xp);
                let (wq, ws, wz, scales) = b.weight_inits(wt, &w, 0);
                let (mut out, mut range) = (n.output[0].clone(), b.range(&n.output[0])?);
                if let Some((j, hi)) =
                    foldable_activation(&g.node, &consumers, &inits, &graph_outputs, &n.output[0])
                {
                    folded.insert(j);
                    out = g.node[j].output[0].clone();
                    let r = b.range(&out)?;
                    range = Range {
                        min: 0.0,
                        max: r.max.min(hi),
                    };
                }
                let yp = QParams::for_range(range, opts.activations);
                let (ys, yz) = b.qparam_inits(&out, yp);
                let mut inputs = vec![xq, xs, xz, wq, ws, wz, ys, yz];
                if let Some(bias_name) = n.input.get(2).filter(|s| !s.is_empty()) {
                    let (bt, bias) = b.weight(n, 2)?;
                    let q: Vec<i32> = bias
                        .iter()
                        .enumerate()
                        .map(|(c, v)| {
                            let s = xp.scale as f64
                                * scales[if scales.len() == 1 { 0 } else { c }] as f64;
                            (*v as f64 / s)
                                .round()
                                .clamp(i32::MIN as f64, i32::MAX as f64)
                                as i32
                        })
                        .collect();
                    let bn = format!("{bias_name}_quantized");
                    b.new_inits.insert(
                        bn.clone(),
                        graph::tensor(
                            &bn,
                            &bt.dims,
                            pb::tensor_proto::DataType::Int32,
                            q.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        ),
                    );
                    inputs.push(bn);
                }
                let qout = format!("{out}_quantized");
                let mut attrs = n.attribute.clone();
                attrs.sort_by(|a, c| a.name.cmp(&c.name));
                b.nodes.push(node_proto(
                    "QLinearConv",
                    n.name.clone(),
                    inputs,
                    vec![qout.clone()],
                    attrs,
                ));
                b.quant.insert(out.clone(), (qout.clone(), yp));
                layers.push(Layer {
                    node: n.name.clone(),
                    op: n.op_type.clone(),
                    kind: LayerKind::Int8,
                    tensor: out,
                    quantized: Some((qout, yp)),
                });
            }
            "Gemm" if !keep => {
                let trans_b = attr(n, "transB").is_some_and(|a| a.i != 0);
                // Per output unit: axis 0 of a [N, K] weight (transB), axis 1 of [K, N].
                let new = b.weights_only(n, if trans_b { 0 } else { 1 })?;
                let mut new = new;
                for k in 2..new.input.len() {
                    new.input[k] = b.float_of(&n.input[k]);
                }
                b.nodes.push(new);
                b.float.insert(n.output[0].clone());
                layers.push(Layer::weights_only(n));
            }
            _ => {
                let mut new = n.clone();
                for k in 0..new.input.len() {
                    new.input[k] = b.float_of(&n.input[k]);
                }
                b.nodes.push(new);
                for o in &n.output {
                    b.float.insert(o.clone());
                }
                if matches!(n.op_type.as_str(), "Conv" | "Gemm") {
                    layers.push(Layer {
                        node: n.name.clone(),
                        op: n.op_type.clone(),
                        kind: LayerKind::Float,
                        tensor: n.output[0].clone(),
                        quantized: None,
                    });
                }
            }
        }
    }
    for o in &graph_outputs {
        if !b.float.contains(*o) {
            b.float_of(o);
        }
    }
    // Keep the initializers still referenced, original ones first in their original order.
    let used: BTreeSet<&str> = b
        .nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut initializer: Vec<pb::TensorProto> = g
        .initializer
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    initializer.extend(
        b.new_inits
            .into_values()
            .filter(|t| used.contains(t.name.as_str())),
    );
    let mut proto = file.proto().clone();
    let graph = proto.graph.as_mut().expect("checked when read");
    graph.node = b.nodes;
    graph.initializer = initializer;
    graph.value_info.clear();
    Ok(Rewritten { proto, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_symmetric_per_channel() {
        // Two output channels of 3 values: [1, -2, 0.5] and [0.1, 0.2, -0.05].
        let w = [1.0, -2.0, 0.5, 0.1, 0.2, -0.05];
        let (q, s) = quantize_weights(&w, &[2, 3], Some(0));
        assert_eq!(s.len(), 2);
        assert!((s[0] - 2.0 / WEIGHT_MAX).abs() < 1e-7);
        assert!((s[1] - 0.2 / WEIGHT_MAX).abs() < 1e-7);
        assert_eq!(q[1], -63);
        assert_eq!(q[4], 63);
        for (i, (&qi, &wi)) in q.iter().zip(&w).enumerate() {
            let back = qi as f32 * s[i / 3];
            assert!((back - wi).abs() <= s[i / 3] / 2.0 + 1e-7);
        }
        // Axis 1 of a [K, N] matrix: the channel is the column.
        let (_, s) = quantize_weights(&[1.0, 4.0, -3.0, 0.5], &[2, 2], Some(1));
        assert!((s[0] - 3.0 / WEIGHT_MAX).abs() < 1e-7 && (s[1] - 4.0 / WEIGHT_MAX).abs() < 1e-7);
        // Per tensor.
        let (_, s) = quantize_weights(&w, &[2, 3], None);
        assert_eq!(s, vec![2.0 / WEIGHT_MAX]);
        // An all-zero channel gets scale 1 and zeros.
        let (q, s) = quantize_weights(&[0.0, 0.0], &[1, 2], Some(0));
        assert_eq!((q, s), (vec![0, 0], vec![1.0]));
    }
}
