//! The tract runner: a model file loaded (by [`crate::onnx::OnnxFile`]), optimized for one
//! picture at a time, answering class probabilities.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::contract::ModelContract;
use crate::onnx::{ContractOverrides, ModelError, OnnxFile};

/// A loaded, optimized model ready to classify preprocessed images one at a time.
pub struct OnnxClassifier {
    path: PathBuf,
    contract: ModelContract,
    metadata: Vec<(String, String)>,
    plan: Arc<TypedRunnableModel>,
    softmax_needed: bool,
    /// Whether the plan's second output is the unfamiliarity score.
    scores_unfamiliarity: bool,
}

/// What the model says about one picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Class probabilities in label order.
    pub probabilities: Vec<f32>,
    /// The unfamiliarity score, for models that compute one ([`crate::familiarity`]).
    pub unfamiliarity: Option<f32>,
}

impl Prediction {
    /// Whether the picture is unfamiliar under `contract`'s threshold: the score is above it
    /// or not a number ([`crate::familiarity::Unfamiliarity::is_unfamiliar`]). A model without a
    /// score (or a contract without a threshold) never calls a picture unfamiliar.
    pub fn is_unfamiliar(&self, contract: &ModelContract) -> bool {
        match (&contract.unfamiliarity, self.unfamiliarity) {
            (Some(u), Some(score)) => u.is_unfamiliar(score),
            _ => false,
        }
    }
}

impl OnnxClassifier {
    /// Loads `path`, reads its contract (applying `overrides`) and optimizes it for batch 1.
    pub fn load(path: &Path, overrides: &ContractOverrides) -> Result<Self, ModelError> {
        Self::from_file(OnnxFile::read_with(path, overrides)?)
    }

    /// Like [`OnnxClassifier::load`], from a model file's bytes already in memory (`path` is
    /// the file they were read from, for [`OnnxClassifier::path`] and messages): the device
    /// runs exactly the bytes whose digest and signature it checked.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        overrides: &ContractOverrides,
    ) -> Result<Self, ModelError> {
        Self::from_file(OnnxFile::from_bytes_with(path, bytes, overrides)?)
    }

    fn from_file(file: OnnxFile) -> Result<Self, ModelError> {
        let graph = file.graph();
        let output = graph
            .output
            .iter()
            .find(|o| o.name == "probabilities")
            .unwrap_or(&graph.output[0])
            .name
            .clone();
        let softmax_needed = output != "probabilities";
        let contract = file.contract().clone();
        let mut outputs = vec![output.as_str()];
        if let Some(u) = &contract.unfamiliarity {
            if !graph.output.iter().any(|o| o.name == u.output) {
                return Err(ModelError::Contract {
                    path: file.path().to_path_buf(),
                    reason: format!(
                        "the contract names the unfamiliarity output '{}' but the graph has no \
                         such output",
                        u.output
                    ),
                });
            }
            outputs.push(u.output.as_str());
        }
        let scores_unfamiliarity = outputs.len() == 2;
        let plan = file.plan(&outputs)?;
        let metadata = file.metadata();
        Ok(OnnxClassifier {
            path: file.path().to_path_buf(),
            contract,
            metadata,
            plan,
            softmax_needed,
            scores_unfamiliarity,
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

    /// Class probabilities for one preprocessed image (`3 × H × W` values). Non-finite outputs
    /// are an error ([`ModelError::Engine`]).
    pub fn probabilities(&self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        Ok(self.predict(input)?.probabilities)
    }

    /// Class probabilities and, for a model that computes one, the unfamiliarity score of one
    /// preprocessed image. Non-finite probabilities are an error ([`ModelError::Engine`]); a
    /// non-finite score is returned as it is (it counts as unfamiliar).
    pub fn predict(&self, input: &[f32]) -> Result<Prediction, ModelError> {
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
        // NaN or infinite outputs mean the model or the engine misbehaved on this input: that is
        // an inference failure, never a result (not even an uncertain one).
        if p.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::Engine {
                path: self.path.clone(),
                reason: format!("the model gave non-finite outputs {p:?} (NaN or infinity)"),
            });
        }
        let unfamiliarity = if self.scores_unfamiliarity {
            let score = out[1].to_plain_array_view::<f32>().map_err(engine)?;
            Some(score.iter().copied().next().unwrap_or(f32::NAN))
        } else {
            None
        };
        Ok(Prediction {
            probabilities: p,
            unfamiliarity,
        })
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
