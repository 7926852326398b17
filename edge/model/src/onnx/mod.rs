//! leukoscope's ONNX files: the one loader ([`OnnxFile`]: decode, validate, read the contract,
//! plan in tract) and the one graph builder ([`graph`]) that trainer export, quantize's rewrite
//! and every test fixture write graphs with.
//!
//! A file carries its own contract in `metadata_props` (see
//! [`crate::contract::metadata_keys`]), so a model file is all the device needs. Foreign ONNX
//! classifiers without that metadata can still be read by supplying the contract fields as
//! [`ContractOverrides`].

pub mod graph;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use thiserror::Error;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::contract::{IMAGENET_MEAN, IMAGENET_STD, ModelContract, ResizeMethod};

/// A model file that cannot be used, naming the file and the problem.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The file cannot be read.
    #[error("{}: cannot read model: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The bytes are not an ONNX model (or are truncated, or hold no usable graph).
    #[error("{}: not an ONNX model ({reason})", path.display())]
    NotOnnx {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The leukoscope contract metadata is missing or malformed.
    #[error("{}: {reason} (leukoscope models carry their contract in ONNX metadata; for a foreign model give --labels, --size, --mean and --std)", path.display())]
    Contract {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// tract cannot load or run the graph.
    #[error("{}: tract cannot run this graph: {reason}", path.display())]
    Engine {
        /// The file.
        path: PathBuf,
        /// tract's message.
        reason: String,
    },
}

/// Contract fields given on the command line, overriding (or standing in for) the metadata.
#[derive(Clone, Debug, Default)]
pub struct ContractOverrides {
    /// Labels in output order.
    pub labels: Option<Vec<String>>,
    /// Square input size.
    pub size: Option<u32>,
    /// Per-channel mean.
    pub mean: Option<[f32; 3]>,
    /// Per-channel std.
    pub std: Option<[f32; 3]>,
}

impl ContractOverrides {
    fn is_empty(&self) -> bool {
        self.labels.is_none() && self.size.is_none() && self.mean.is_none() && self.std.is_none()
    }
}

/// An ONNX model read from a file (or bytes), validated, with its contract.
#[derive(Clone, Debug)]
pub struct OnnxFile {
    path: PathBuf,
    proto: pb::ModelProto,
    contract: ModelContract,
}

impl OnnxFile {
    /// Reads and decodes `path`; the contract metadata must be present.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        Self::read_with(path, &ContractOverrides::default())
    }

    /// Reads and decodes `path`, applying `overrides` to (or standing in for) its contract.
    pub fn read_with(path: &Path, overrides: &ContractOverrides) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_bytes_with(path, &bytes, overrides)
    }

    /// Decodes a model held in memory (`path` is only used in messages).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, ModelError> {
        Self::from_bytes_with(path, bytes, &ContractOverrides::default())
    }

    /// Wraps a proto built in memory (a model before it is written).
    pub fn from_proto(path: &Path, proto: pb::ModelProto) -> Result<Self, ModelError> {
        Self::from_bytes(path, &proto.encode_to_vec())
    }

    /// Decodes and validates: a graph with nodes, inputs and outputs, and a usable contract.
    pub fn from_bytes_with(
        path: &Path,
        bytes: &[u8],
        overrides: &ContractOverrides,
    ) -> Result<Self, ModelError> {
        let not_onnx = |reason: &str| ModelError::NotOnnx {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let proto = pb::ModelProto::decode(bytes).map_err(|e| not_onnx(&e.to_string()))?;
        let graph = proto.graph.as_ref().ok_or_else(|| not_onnx("no graph"))?;
        if graph.node.is_empty() {
            return Err(not_onnx("a graph without nodes"));
        }
        if graph.input.is_empty() {
            return Err(not_onnx("a graph without inputs"));
        }
        if graph.output.is_empty() {
            return Err(not_onnx("a graph without outputs"));
        }
        let metadata = proto
            .metadata_props
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()));
        let contract =
            contract_from(metadata, overrides).map_err(|reason| ModelError::Contract {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(OnnxFile {
            path: path.to_path_buf(),
            proto,
            contract,
        })
    }

    /// The file this model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decoded protobuf.
    pub fn proto(&self) -> &pb::ModelProto {
        &self.proto
    }

    /// The graph (always present, with nodes, inputs and outputs: checked when reading).
    pub fn graph(&self) -> &pb::GraphProto {
        self.proto
            .graph
            .as_ref()
            .expect("checked in from_bytes_with")
    }

    /// The model's contract.
    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// Every `metadata_props` entry of the file.
    pub fn metadata(&self) -> Vec<(String, String)> {
        self.proto
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    }

    /// Input height and width.
    pub fn input_hw(&self) -> (usize, usize) {
        (
            self.contract.input_height as usize,
            self.contract.input_width as usize,
        )
    }

    /// An optimized tract plan for batch 1 whose outputs are the named tensors, in order.
    pub fn plan(&self, outputs: &[&str]) -> Result<Arc<TypedRunnableModel>, ModelError> {
        self.plan_at(outputs, self.input_hw())
    }

    /// [`OnnxFile::plan`] for another input height and width than the contract's (a network
    /// whose weights do not depend on the input size, measured at a new size).
    pub fn plan_at(
        &self,
        outputs: &[&str],
        (h, w): (usize, usize),
    ) -> Result<Arc<TypedRunnableModel>, ModelError> {
        tract_onnx::onnx()
            .model_for_proto_model(&self.proto)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, h, w]).into()))
            .and_then(|m| m.with_outputs_by_name(outputs.iter().copied()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| self.engine_error(e))
    }

    /// A tract error while loading or running this model, naming the file.
    pub fn engine_error(&self, e: TractError) -> ModelError {
        ModelError::Engine {
            path: self.path.clone(),
            reason: format!("{e:#}"),
        }
    }
}

fn contract_from<'a>(
    metadata: impl Iterator<Item = (&'a str, &'a str)>,
    o: &ContractOverrides,
) -> Result<ModelContract, String> {
    let mut contract = match (ModelContract::from_metadata(metadata), o.is_empty()) {
        (Ok(c), _) => c,
        (Err(e), true) => return Err(e.to_string()),
        (Err(_), false) => {
            let labels = o
                .labels
                .clone()
                .ok_or("no contract metadata and no --labels given")?;
            ModelContract {
                labels,
                input_height: 224,
                input_width: 224,
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
                resize: ResizeMethod::Bilinear,
                colour: Default::default(),
                unfamiliarity: None,
                temperature: None,
                um_per_px: None,
                pixel_aspect: None,
            }
        }
    };
    if let Some(l) = &o.labels {
        contract.labels = l.clone();
    }
    if let Some(s) = o.size {
        contract.input_height = s;
        contract.input_width = s;
    }
    if let Some(m) = o.mean {
        contract.mean = m;
    }
    if let Some(s) = o.std {
        contract.std = s;
    }
    contract.validate().map_err(|e| e.to_string())?;
    Ok(contract)
}

#[cfg(test)]
mod tests {
    use super::graph::{GraphBuilder, value_info};
    use super::*;

    /// A one-node graph (`Relu`) whose contract has `size`, with or without outputs.
    fn model(size: u32, with_outputs: bool) -> pb::ModelProto {
        let mut g = GraphBuilder::new();
        g.node("Relu", &["image"], vec![], Some("probabilities"));
        let outputs = if with_outputs {
            vec![value_info("probabilities", &[None, Some(2)])]
        } else {
            vec![]
        };
        let contract = ModelContract::new(vec!["a".into(), "b".into()], size);
        let s = Some(i64::from(size));
        let input = value_info("image", &[None, Some(3), s, s]);
        g.finish(input, outputs, contract.to_metadata(), "test")
    }

    #[test]
    fn a_well_formed_file_reads_back_its_contract() {
        let file = OnnxFile::from_proto(Path::new("m.onnx"), model(8, true)).unwrap();
        assert_eq!(file.contract().labels, ["a", "b"]);
        assert_eq!(file.input_hw(), (8, 8));
    }

    #[test]
    fn a_graph_without_outputs_is_refused_not_a_panic() {
        let err = OnnxFile::from_proto(Path::new("m.onnx"), model(8, false)).unwrap_err();
        assert!(err.to_string().contains("without outputs"), "{err}");
    }

    #[test]
    fn an_input_size_with_no_sane_bound_is_refused() {
        let err = OnnxFile::from_proto(Path::new("m.onnx"), model(1 << 20, true)).unwrap_err();
        assert!(err.to_string().contains("input size"), "{err}");
    }

    #[test]
    fn bytes_that_are_not_onnx_are_named() {
        let err = OnnxFile::from_bytes(Path::new("x.onnx"), b"\xff\xff not onnx").unwrap_err();
        assert!(
            err.to_string().starts_with("x.onnx: not an ONNX model"),
            "{err}"
        );
    }
}
