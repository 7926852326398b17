//! One frame's way through the device: decode → field ([`FieldTracker`]) → framing ([`Framing`]:
//! the centre crop, model-scale fields, or the deprecated tiles) → quality gate → preprocess →
//! inference → decision. Allocation-free per frame apart from decoding, resampling, cutting and
//! the probabilities.

use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::fields::FieldTracker;
use crate::quality::{QualityConfig, QualityFigures, QualityGate, RetakeReason};
use crate::source::{Frame, FrameData};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::onnx::ModelError;
use leukoscope_model::preprocess::{Preprocessor, decode_image_bytes};
use leukoscope_model::scale::fields::{FieldCutter, ScaleFraming};
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
    /// The tile setting, or the declared pixel size, would cut this frame into more tiles or
    /// fields than the device allows ([`crate::source::tiles::MAX_TILES_PER_FRAME`]): a
    /// configuration error.
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

/// How a frame becomes the pictures the gate and the model see.
pub enum Framing {
    /// The centre square, resized to the model input (`leukoscope_model::preprocess`): no
    /// pixel size declared.
    CentreCrop,
    /// Resampled to the model's pixel size and cut into model-input fields that cover the frame
    /// ([`leukoscope_model::scale::fields`]); each is a result (`tile`) of its own.
    Scaled(Box<FieldCutter>),
    /// Deprecated `[source] tile = N`: a centred grid of N-pixel tiles at full resolution
    /// ([`crate::source::tiles`]).
    Tiles(u32),
}

/// The framing of a camera of `camera_um_per_px` for `model`: the model must declare its own
/// pixel size (`leukoscope.um_per_px`), else the error names the model file and what to do.
pub fn scale_framing(
    camera_um_per_px: f64,
    model: &OnnxClassifier,
) -> Result<ScaleFraming, String> {
    let contract = model.contract();
    let Some(own) = contract.um_per_px else {
        return Err(format!(
            "um_per_px = {camera_um_per_px} (the camera's pixel size) needs a model that declares \
             its own, but {} has no leukoscope.um_per_px: export it again with `trainer export` \
             (which measures it from the training pictures, or --um-per-px X), or leave \
             um_per_px out to classify the centre of each frame",
            model.path().display()
        ));
    };
    ScaleFraming::with_aspect(
        camera_um_per_px,
        own,
        contract.pixel_aspect.unwrap_or(1.0),
        contract.input_width,
        contract.input_height,
    )
    .map_err(|e| format!("{}: {e}", model.path().display()))
}

impl Framing {
    /// The framing a device config asks for with this model: `[source] um_per_px` (the camera's
    /// pixel size) needs the model's `leukoscope.um_per_px`, else an error naming the model
    /// file; the deprecated `tile` is taken with a warning; neither: the centre crop.
    pub fn from_config(
        source: &crate::config::SourceConfig,
        model: &OnnxClassifier,
    ) -> Result<Framing, String> {
        if let Some(camera) = source.um_per_px {
            let framing = scale_framing(camera, model)?;
            return Ok(Framing::Scaled(Box::new(FieldCutter::new(framing))));
        }
        if source.tile != 0 {
            tracing::warn!(
                "[source] tile = {} (--tile) is deprecated: it cuts frames into tiles of {} \
                 pixels whatever the magnification; declare the camera's pixel size instead \
                 ([source] um_per_px, measured with `edge calibrate`) to get fields at the \
                 model's scale",
                source.tile,
                source.tile
            );
            return Ok(Framing::Tiles(source.tile));
        }
        Ok(Framing::CentreCrop)
    }

    /// Refuses a frame size that this framing would cut into more than 64 pieces.
    pub fn check_count(&self, width: u32, height: u32) -> Result<(), String> {
        match self {
            Framing::CentreCrop => Ok(()),
            Framing::Scaled(cutter) => cutter.framing().check_field_count(width, height),
            Framing::Tiles(tile) => crate::source::tiles::check_tile_count(width, height, *tile),
        }
    }
}

/// Reusable per-frame state for one model.
pub struct FramePipeline {
    gate: QualityGate,
    pre: Preprocessor,
    input: Vec<f32>,
    decision: DecisionConfig,
    framing: Framing,
    scale_watch: Option<super::scale_watch::ScaleWatch>,
    scale_warning: Option<String>,
}

impl FramePipeline {
    /// A pipeline for `model`'s contract and a [`Framing`]: the centre crop of each frame, or
    /// each of its model-scale fields (or deprecated tiles) gated and classified on its own.
    pub fn new(
        model: &OnnxClassifier,
        quality: QualityConfig,
        decision: DecisionConfig,
        framing: Framing,
    ) -> Self {
        FramePipeline {
            gate: QualityGate::new(quality),
            pre: Preprocessor::new(model.contract().clone()),
            input: vec![0.0; model.contract().input_len()],
            decision,
            framing,
            scale_watch: None,
            scale_warning: None,
        }
    }

    /// Checks the frames of each session against the camera's declared pixel size
    /// (`[source] um_per_px`): the red cells of its first frames
    /// ([`super::scale_watch::ScaleWatch`]).
    pub fn watch_scale(&mut self, configured_um_per_px: f64) {
        self.scale_watch = Some(super::scale_watch::ScaleWatch::new(configured_um_per_px));
    }

    /// A new session: its frames are checked against the declared pixel size again.
    pub fn reset_scale_watch(&mut self) {
        if let Some(w) = &mut self.scale_watch {
            w.reset();
        }
        self.scale_warning = None;
    }

    /// The pixel-size warning of this session, once.
    pub fn take_scale_warning(&mut self) -> Option<String> {
        self.scale_warning.take()
    }

    /// The framing in use.
    pub fn framing(&self) -> &Framing {
        &self.framing
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
        if let Some(w) = &mut self.scale_watch
            && let Some(warning) = w.observe(image)
        {
            self.scale_warning = Some(warning);
        }
        self.framing
            .check_count(width, height)
            .map_err(FrameError::TooManyTiles)?;
        let pieces: Vec<RgbImage> = match &mut self.framing {
            Framing::CentreCrop => {
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
            // The quality gate measures each field at the model's scale: a frame shown larger
            // than the training pictures is judged as the model will see it.
            Framing::Scaled(cutter) => cutter.cut(image).into_iter().map(|f| f.image).collect(),
            Framing::Tiles(tile) => crate::source::tiles::tiles(image, *tile)
                .into_iter()
                .map(|t| t.image)
                .collect(),
        };
        let mut out = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.into_iter().enumerate() {
            let (quality, outcome) = self.judge(model, &piece)?;
            out.push(Processed {
                tile: Some((i as u32, piece)),
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
