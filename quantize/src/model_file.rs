//! What the quantizer asks of a model file beyond what leukoscope-model's one loader
//! ([`OnnxFile`]) gives: whether it is already quantized, and tract plans that expose
//! intermediate tensors as outputs (for calibration and the per-layer error).

use std::collections::HashMap;
use std::sync::Arc;

use leukoscope_model::contract::metadata_keys;
use leukoscope_model::onnx::OnnxFile;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::QuantizeError;

/// ONNX operators that only appear in quantized graphs.
pub const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QGemm",
];

/// Why `file` looks already quantized, if it does: a quantized operator, an integer initializer
/// feeding a convolution or matrix product, or a quantization recipe in its metadata.
pub fn quantized_evidence(file: &OnnxFile) -> Option<String> {
    let g = file.graph();
    if let Some(n) = g
        .node
        .iter()
        .find(|n| QUANTIZED_OPS.contains(&n.op_type.as_str()))
    {
        return Some(format!("it holds a {} node ('{}')", n.op_type, n.name));
    }
    let inits: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for n in &g.node {
        if matches!(n.op_type.as_str(), "Conv" | "Gemm" | "MatMul")
            && let Some(w) = n.input.get(1).and_then(|i| inits.get(i.as_str()))
            && w.data_type != pb::tensor_proto::DataType::Float as i32
        {
            return Some(format!(
                "the weight of {} '{}' is not f32",
                n.op_type, n.name
            ));
        }
    }
    let recipe = metadata_keys::QUANTIZATION;
    if file.proto().metadata_props.iter().any(|e| e.key == recipe) {
        return Some(format!("its metadata has {recipe}"));
    }
    None
}

/// An optimized tract plan for batch 1 whose outputs are the model's first output followed by
/// the tensors named in `extra` (in that order).
pub fn plan_exposing(
    file: &OnnxFile,
    extra: &[String],
) -> Result<Arc<TypedRunnableModel>, QuantizeError> {
    let first = file.graph().output[0].name.as_str();
    let outputs: Vec<&str> = std::iter::once(first)
        .chain(extra.iter().map(String::as_str))
        .collect();
    Ok(file.plan(&outputs)?)
}
