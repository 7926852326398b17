//! The model families: MobileNetV2, EfficientNet (B0, B3) and the seed paper's compact CNN.
//!
//! Each takes a batch of preprocessed images `[batch, 3, H, W]` (see `leukoscope_model::preprocess`) and
//! return logits `[batch, classes]`; probabilities are their softmax.

mod cnn;
pub(crate) mod efficientnet;
pub(crate) mod mobilenetv2;

pub use cnn::{Cnn, CnnConfig};
pub use efficientnet::{EfficientNet, EfficientNetConfig, EfficientNetVariant};
pub use mobilenetv2::{MobileNetV2, MobileNetV2Config};

use burn::module::Module;
use burn::tensor::{Device, Tensor, activation::softmax};
use serde::{Deserialize, Serialize};

/// Which architecture a run trains, with its settings. Stored in the run's `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum ModelSpec {
    /// MobileNetV2 with a width multiplier and the paper's dense head.
    Mobilenetv2 {
        /// Width multiplier (0.35–1.4).
        width: f32,
        /// Units in the hidden dense layer of the head.
        head_units: usize,
        /// Dropout before the output layer.
        dropout: f64,
    },
    /// EfficientNet B0 or B3 with MobileNetV2's dense head.
    Efficientnet {
        /// `b0` or `b3`.
        variant: EfficientNetVariant,
        /// Units in the hidden dense layer of the head.
        head_units: usize,
        /// Dropout before the output layer.
        dropout: f64,
        /// Stochastic-depth probability of the last MBConv block (0.2 in torchvision).
        stochastic_depth: f64,
    },
    /// The compact CNN: three conv layers (32, 64, 128), dense 128, dropout.
    Cnn {
        /// Dropout before the output layer.
        dropout: f64,
    },
}

impl ModelSpec {
    /// Short human-readable name, e.g. `MobileNetV2 ×0.5`.
    pub fn describe(&self) -> String {
        match self {
            ModelSpec::Mobilenetv2 { width, .. } => format!("MobileNetV2 ×{width}"),
            ModelSpec::Efficientnet { variant, .. } => {
                format!("EfficientNet-{}", variant.name().to_uppercase())
            }
            ModelSpec::Cnn { .. } => "compact CNN".to_string(),
        }
    }

    /// Builds a freshly initialised model for `classes` outputs and a square `size` input.
    pub fn init(&self, classes: usize, size: usize, device: &Device) -> Classifier {
        match self {
            ModelSpec::Mobilenetv2 {
                width,
                head_units,
                dropout,
            } => Classifier::MobileNetV2(
                MobileNetV2Config::new(classes)
                    .with_width(*width)
                    .with_head_units(*head_units)
                    .with_dropout(*dropout)
                    .init(device),
            ),
            ModelSpec::Efficientnet {
                variant,
                head_units,
                dropout,
                stochastic_depth,
            } => Classifier::EfficientNet(
                EfficientNetConfig::new(classes, *variant)
                    .with_head_units(*head_units)
                    .with_dropout(*dropout)
                    .with_stochastic_depth(*stochastic_depth)
                    .init(device),
            ),
            ModelSpec::Cnn { dropout } => Classifier::Cnn(
                CnnConfig::new(classes, size)
                    .with_dropout(*dropout)
                    .init(device),
            ),
        }
    }
}

/// A leukoscope image classifier of any family.
// One value per model, never in a collection: the size difference between variants is harmless.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Classifier {
    /// MobileNetV2.
    MobileNetV2(MobileNetV2),
    /// EfficientNet B0 or B3.
    EfficientNet(EfficientNet),
    /// The compact CNN.
    Cnn(Cnn),
}

impl Classifier {
    /// Logits `[batch, classes]` for images `[batch, 3, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Classifier::MobileNetV2(m) => m.forward(images),
            Classifier::EfficientNet(m) => m.forward(images),
            Classifier::Cnn(m) => m.forward(images),
        }
    }

    /// Every BatchNorm layer (none in the compact CNN).
    pub(crate) fn batch_norms_mut(&mut self) -> Vec<&mut burn::nn::BatchNorm> {
        match self {
            Classifier::MobileNetV2(m) => m.conv_bns_mut().into_iter().map(|l| &mut l.bn).collect(),
            Classifier::EfficientNet(m) => {
                m.conv_bns_mut().into_iter().map(|l| &mut l.bn).collect()
            }
            Classifier::Cnn(_) => Vec::new(),
        }
    }

    /// Class probabilities `[batch, classes]` (softmax of the logits).
    pub fn probabilities(&self, images: Tensor<4>) -> Tensor<2> {
        softmax(self.forward(images), 1)
    }
}

/// Size in bytes of the model's parameters as `f32`.
pub fn parameter_bytes(model: &Classifier) -> u64 {
    model.num_params() as u64 * 4
}
