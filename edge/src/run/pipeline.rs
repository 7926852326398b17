//! One frame's way through the device: decode → field ([`FieldTracker`]) → (tiles) → quality
//! gate → preprocess → inference → decision. Allocation-free per frame apart from decoding, tiling and the
//! probabilities.

use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::fields::FieldTracker;
use crate::quality::{QualityConfig, QualityFigures, QualityGate, RetakeReason};
use crate::source::{Frame, FrameData};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::onnx::ModelError;
use leukoscope_model::preprocess::{Preprocessor, decode_image_bytes};
use leukoscope_screening::{
    DecisionConfig, FieldKey, FrameDecision, decide_frame_with_familiarity,
};

/// A frame could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Its bytes are not one whole, decodable picture (garbage, truncated, corrupt, too large:
    /// `leukoscope_model::picture`). The frame is skipped and counted, never recorded.
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
    /// The tile setting would cut this frame into more tiles than the device allows
    /// ([`crate::source::tiles::MAX_TILES_PER_FRAME`]): a configuration error.
    #[error("{0}")]
    TooManyTiles(String),
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
        /// The model's unfamiliarity score (`None` for a model without one).
        unfamiliarity: Option<f32>,
        /// The decision (uncertain with the reason `unfamiliar` when the score is above the
        /// contract's threshold).
        decision: FrameDecision,
    },
}

/// A processed frame, or one tile of it.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The tile index (row by row from the top left) and its pixels, when frames are tiled.
    pub tile: Option<(u32, RgbImage)>,
    /// SHA-256 of the frame as received (encoded bytes, or raw RGB for raw frames).
    pub sha256: String,
    /// Decoded width.
    pub width: u32,
    /// Decoded height.
    pub height: u32,
    /// The microscope field the frame shows (none while the stage moves).
    pub field: Option<u32>,
    /// The quality gate's figures.
    pub quality: QualityFigures,
    /// The result.
    pub outcome: Outcome,
}

impl Processed {
    /// The tile index, when frames are tiled.
    pub fn tile_index(&self) -> Option<u32> {
        self.tile.as_ref().map(|(i, _)| *i)
    }

    /// The field this result counts for: the frame's field and, when tiled, the tile.
    pub fn field_key(&self) -> Option<FieldKey> {
        self.field.map(|field| FieldKey {
            field,
            tile: self.tile_index(),
        })
    }
}

/// Reusable per-frame state for one model.
pub struct FramePipeline {
    gate: QualityGate,
    pre: Preprocessor,
    input: Vec<f32>,
    decision: DecisionConfig,
    tile: u32,
}

impl FramePipeline {
    /// A pipeline for `model`'s contract. `tile` 0 classifies the centre crop of each frame;
    /// otherwise each frame is cut into `tile`×`tile` tiles, each gated and classified on its
    /// own ([`crate::source::tiles`]).
    pub fn new(
        model: &OnnxClassifier,
        quality: QualityConfig,
        decision: DecisionConfig,
        tile: u32,
    ) -> Self {
        FramePipeline {
            gate: QualityGate::new(quality),
            pre: Preprocessor::new(model.contract().clone()),
            input: vec![0.0; model.contract().input_len()],
            decision,
            tile,
        }
    }

    /// Runs one frame through the field tracker, the gate and, when it passes, the model: one
    /// result, or one per tile.
    pub fn process(
        &mut self,
        model: &OnnxClassifier,
        frame: &Frame,
        fields: &mut FieldTracker,
    ) -> Result<Vec<Processed>, FrameError> {
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
        let (width, height) = image.dimensions();
        let field = fields.place(image, &sha256);
        if self.tile == 0 {
            let (quality, outcome) = self.judge(model, image)?;
            return Ok(vec![Processed {
                tile: None,
                sha256,
                width,
                height,
                field,
                quality,
                outcome,
            }]);
        }
        crate::source::tiles::check_tile_count(width, height, self.tile)
            .map_err(FrameError::TooManyTiles)?;
        let mut out = Vec::new();
        for (i, t) in crate::source::tiles::tiles(image, self.tile)
            .into_iter()
            .enumerate()
        {
            let (quality, outcome) = self.judge(model, &t.image)?;
            out.push(Processed {
                tile: Some((i as u32, t.image)),
                sha256: sha256.clone(),
                width,
                height,
                field,
                quality,
                outcome,
            });
        }
        Ok(out)
    }

    fn judge(
        &mut self,
        model: &OnnxClassifier,
        image: &RgbImage,
    ) -> Result<(QualityFigures, Outcome), FrameError> {
        let (quality, retake) = self.gate.assess(image);
        let outcome = match retake {
            Some(reason) => Outcome::Retake(reason),
            None => self.classify(model, image)?,
        };
        Ok((quality, outcome))
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
        let prediction = model.predict(&self.input)?;
        let decision = decide_frame_with_familiarity(
            &self.decision,
            &model.contract().labels,
            &prediction.probabilities,
            prediction.is_unfamiliar(model.contract()),
        );
        Ok(Outcome::Classified {
            probabilities: prediction.probabilities,
            unfamiliarity: prediction.unfamiliarity,
            decision,
        })
    }
}
