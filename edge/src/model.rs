//! Loading a leukoscope ONNX model and running it with tract.
//!
//! The file carries its own contract in `metadata_props` (see [`crate::contract::metadata_keys`]),
//! so a model file is all the device needs. Foreign ONNX classifiers without that metadata can
//! still be run by supplying the contract fields as overrides.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use thiserror::Error;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::contract::{ModelContract, ResizeMethod};

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
    /// The bytes are not an ONNX model (or are truncated).
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

/// A loaded, optimized model ready to classify preprocessed images one at a time.
pub struct OnnxClassifier {
    path: PathBuf,
    contract: ModelContract,
    metadata: Vec<(String, String)>,
    plan: Arc<TypedRunnableModel>,
    softmax_needed: bool,
}

impl OnnxClassifier {
    /// Loads `path`, reads its contract (applying `overrides`) and optimizes it for batch 1.
    pub fn load(path: &Path, overrides: &ContractOverrides) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let proto = pb::ModelProto::decode(bytes.as_slice()).map_err(|e| ModelError::NotOnnx {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let graph = proto
            .graph
            .as_ref()
            .filter(|g| !g.node.is_empty())
            .ok_or_else(|| ModelError::NotOnnx {
                path: path.to_path_buf(),
                reason: "no graph".into(),
            })?;
        let metadata: Vec<(String, String)> = proto
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let contract =
            contract_from(&metadata, overrides).map_err(|reason| ModelError::Contract {
                path: path.to_path_buf(),
                reason,
            })?;
        let output_index = graph
            .output
            .iter()
            .position(|o| o.name == "probabilities")
            .unwrap_or(0);
        let softmax_needed = graph.output[output_index].name != "probabilities";
        let engine = |e: TractError| ModelError::Engine {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let shape = [
            1,
            3,
            contract.input_height as usize,
            contract.input_width as usize,
        ];
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
            .and_then(|m| m.with_outputs_by_name([graph.output[output_index].name.as_str()]))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(engine)?;
        Ok(OnnxClassifier {
            path: path.to_path_buf(),
            contract,
            metadata,
            plan,
            softmax_needed,
        })
    }

    /// The model's contract.
    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// Every `metadata_props` entry of the file.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Class probabilities for one preprocessed image (`3 × H × W` values).
    pub fn probabilities(&self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        let c = &self.contract;
        let shape = [1, 3, c.input_height as usize, c.input_width as usize];
        let engine = |e: TractError| ModelError::Engine {
            path: self.path.clone(),
            reason: format!("{e:#}"),
        };
        let x = Tensor::from_shape(&shape, input).map_err(engine)?;
        let out = self.plan.run(tvec!(x.into())).map_err(engine)?;
        let mut p: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()
            .map_err(engine)?
            .iter()
            .copied()
            .collect();
        if p.len() != c.num_classes() {
            return Err(ModelError::Contract {
                path: self.path.clone(),
                reason: format!(
                    "the model gives {} outputs but its contract names {} labels",
                    p.len(),
                    c.num_classes()
                ),
            });
        }
        if self.softmax_needed {
            softmax_in_place(&mut p);
        }
        Ok(p)
    }
}

fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

fn contract_from(
    metadata: &[(String, String)],
    o: &ContractOverrides,
) -> Result<ModelContract, String> {
    let from_file =
        ModelContract::from_metadata(metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut contract = match (from_file, o.is_empty()) {
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
                mean: crate::contract::IMAGENET_MEAN,
                std: crate::contract::IMAGENET_STD,
                resize: ResizeMethod::Bilinear,
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
