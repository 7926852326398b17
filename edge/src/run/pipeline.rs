//! One frame's way through the device: decode → quality gate → preprocess → inference →
//! decision. Allocation-free per frame apart from decoding and the probabilities.

use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::decision::{DecisionConfig, FrameDecision, decide_frame};
use crate::model::{ModelError, OnnxClassifier};
use crate::preprocess::{Preprocessor, decode_image_bytes};
use crate::quality::{QualityConfig, QualityFigures, QualityGate, RetakeReason};
use crate::source::{Frame, FrameData};

/// A frame could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Its bytes are not a decodable image (garbage, truncated).
    #[error("{origin}: {reason}")]
    Decode {
        /// Where the frame came from.
        origin: String,
        /// Why.
        reason: String,
    },
    /// Inference failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What came of one frame.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Rejected by the quality gate: not classified.
    Retake(RetakeReason),
    /// Classified.
    Classified {
        /// Probabilities in label order.
        probabilities: Vec<f32>,
        /// The decision.
        decision: FrameDecision,
    },
}

/// A processed frame.
#[derive(Debug, Clone)]
pub struct Processed {
    /// SHA-256 of the frame as received (encoded bytes, or raw RGB for raw frames).
    pub sha256: String,
    /// Decoded width.
    pub width: u32,
    /// Decoded height.
    pub height: u32,
    /// The quality gate's figures.
    pub quality: QualityFigures,
    /// The result.
    pub outcome: Outcome,
}

/// Reusable per-frame state for one model.
pub struct FramePipeline {
    gate: QualityGate,
    pre: Preprocessor,
    input: Vec<f32>,
    decision: DecisionConfig,
}

impl FramePipeline {
    /// A pipeline for `model`'s contract.
    pub fn new(model: &OnnxClassifier, quality: QualityConfig, decision: DecisionConfig) -> Self {
        FramePipeline {
            gate: QualityGate::new(quality),
            pre: Preprocessor::new(model.contract().clone()),
            input: vec![0.0; model.contract().input_len()],
            decision,
        }
    }

    /// Runs one frame through the gate and, when it passes, through the model.
    pub fn process(
        &mut self,
        model: &OnnxClassifier,
        frame: &Frame,
    ) -> Result<Processed, FrameError> {
        let decoded;
        let (sha256, image): (String, &RgbImage) = match &frame.data {
            FrameData::Encoded(bytes) => {
                decoded = decode_image_bytes(bytes).map_err(|reason| FrameError::Decode {
                    origin: frame.origin.clone(),
                    reason,
                })?;
                (hex::encode(Sha256::digest(bytes)), &decoded)
            }
            FrameData::Rgb(img) => (hex::encode(Sha256::digest(img.as_raw())), img),
        };
        let (quality, retake) = self.gate.assess(image);
        let outcome = match retake {
            Some(reason) => Outcome::Retake(reason),
            None => self.classify(model, image)?,
        };
        Ok(Processed {
            sha256,
            width: image.width(),
            height: image.height(),
            quality,
            outcome,
        })
    }

    fn classify(
        &mut self,
        model: &OnnxClassifier,
        image: &RgbImage,
    ) -> Result<Outcome, FrameError> {
        self.pre
            .run_into(image, &mut self.input)
            .map_err(|e| ModelError::Engine {
                path: model.path().to_path_buf(),
                reason: e.to_string(),
            })?;
        let probabilities = model.probabilities(&self.input)?;
        let decision = decide_frame(&self.decision, &model.contract().labels, &probabilities);
        Ok(Outcome::Classified {
            probabilities,
            decision,
        })
    }
}
