//! Reading an exported model: the ONNX protobuf (tract's own prost types), its contract, and
//! tract plans over it (optionally with intermediate tensors exposed as outputs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edge::contract::ModelContract;
use prost::Message;
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

/// An ONNX model read from a file, with its leukoscope contract.
#[derive(Clone, Debug)]
pub struct OnnxFile {
    path: PathBuf,
    proto: pb::ModelProto,
    contract: ModelContract,
}

impl OnnxFile {
    /// Reads and decodes `path`; the contract metadata must be present.
    pub fn read(path: &Path) -> Result<Self, QuantizeError> {
        let bytes = std::fs::read(path).map_err(|e| QuantizeError::Io {
            path: path.to_path_buf(),
            reason: format!("cannot read model: {e}"),
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Decodes a model held in memory; `path` is only used in messages.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, QuantizeError> {
        let not_onnx = |reason: String| QuantizeError::NotOnnx {
            path: path.to_path_buf(),
            reason,
        };
        let proto = pb::ModelProto::decode(bytes).map_err(|e| not_onnx(e.to_string()))?;
        match &proto.graph {
            Some(g) if !g.node.is_empty() && !g.input.is_empty() && !g.output.is_empty() => {}
            _ => return Err(not_onnx("no graph, or a graph without nodes".into())),
        }
        let contract = ModelContract::from_metadata(
            proto
                .metadata_props
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str())),
        )
        .map_err(|e| QuantizeError::Contract {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(OnnxFile {
            path: path.to_path_buf(),
            proto,
            contract,
        })
    }

    /// Wraps a proto built in memory (the quantized model before it is written).
    pub fn from_proto(path: &Path, proto: pb::ModelProto) -> Result<Self, QuantizeError> {
        Self::from_bytes(path, &proto.encode_to_vec())
    }

    /// The file this model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decoded protobuf.
    pub fn proto(&self) -> &pb::ModelProto {
        &self.proto
    }

    /// The graph (always present: checked when reading).
    pub fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked in from_bytes")
    }

    /// The model's contract.
    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// Input height and width.
    pub fn input_hw(&self) -> (usize, usize) {
        (
            self.contract.input_height as usize,
            self.contract.input_width as usize,
        )
    }

    /// Why this model looks already quantized, if it does: a quantized operator or an integer
    /// initializer feeding a convolution or matrix product.
    pub fn quantized_evidence(&self) -> Option<String> {
        let g = self.graph();
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
        if self
            .proto
            .metadata_props
            .iter()
            .any(|e| e.key == crate::rewrite::RECIPE_KEY)
        {
            return Some(format!("its metadata has {}", crate::rewrite::RECIPE_KEY));
        }
        None
    }

    /// An optimized tract plan for batch 1 whose outputs are the model's first output followed
    /// by the tensors named in `extra` (in that order).
    pub fn plan(&self, extra: &[String]) -> Result<Arc<TypedRunnableModel>, QuantizeError> {
        let engine = |e: TractError| QuantizeError::Engine {
            path: self.path.clone(),
            reason: format!("{e:#}"),
        };
        let (h, w) = self.input_hw();
        let first = self.graph().output[0].name.clone();
        let outputs: Vec<&str> = std::iter::once(first.as_str())
            .chain(extra.iter().map(String::as_str))
            .collect();
        tract_onnx::onnx()
            .model_for_proto_model(&self.proto)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, h, w]).into()))
            .and_then(|m| m.with_outputs_by_name(outputs))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(engine)
    }
}
