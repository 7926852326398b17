//! The model contract: what a model expects as input and what its outputs mean.
//!
//! A contract travels with every model: in a training run's folder (`contract.json`) and, once
//! exported, in the ONNX file's metadata. Input layout is fixed for all leukoscope models: one
//! RGB image as `f32` in NCHW order (batch, channel, height, width), channels R, G, B, values
//! scaled to `0..1` and then normalized per channel as `(x - mean) / std`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::colour::ColourNormalization;
use crate::familiarity::Unfamiliarity;

/// How a picture is resized to the model's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMethod {
    /// Bilinear convolution (the default; what the shipped models are trained with).
    #[default]
    Bilinear,
    /// Nearest neighbour.
    Nearest,
    /// Lanczos3 convolution.
    Lanczos3,
}

impl ResizeMethod {
    /// The name used in configs and ONNX metadata (`bilinear`, `nearest`, `lanczos3`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResizeMethod::Bilinear => "bilinear",
            ResizeMethod::Nearest => "nearest",
            ResizeMethod::Lanczos3 => "lanczos3",
        }
    }
}

impl std::str::FromStr for ResizeMethod {
    type Err = ContractError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bilinear" => Ok(ResizeMethod::Bilinear),
            "nearest" => Ok(ResizeMethod::Nearest),
            "lanczos3" => Ok(ResizeMethod::Lanczos3),
            other => Err(ContractError::Invalid(format!(
                "unknown resize method '{other}' (expected bilinear, nearest or lanczos3)"
            ))),
        }
    }
}

/// What a model expects as input and what its outputs mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelContract {
    /// Class labels in model output order.
    pub labels: Vec<String>,
    /// Input height in pixels.
    pub input_height: u32,
    /// Input width in pixels.
    pub input_width: u32,
    /// Per-channel mean (R, G, B), applied to values scaled to `0..1`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B), applied after the mean.
    pub std: [f32; 3],
    /// How pictures are resized to the input size.
    pub resize: ResizeMethod,
    /// How a picture's colour is normalized before the mean and std (lamp, white balance);
    /// [`ColourNormalization::None`] in contracts made before it existed.
    #[serde(default)]
    pub colour: ColourNormalization,
    /// The unfamiliarity score the model file computes and its threshold; `None` for models
    /// without one.
    #[serde(default)]
    pub unfamiliarity: Option<Unfamiliarity>,
    /// The temperature already applied to the `probabilities` output (fitted on the validation
    /// split); `None` when the probabilities are the network's own softmax.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// The training pictures' pixel size in micrometres per pixel (`leukoscope.um_per_px`),
    /// when the model declares it ([`crate::scale`]): a device that declares its camera's pixel
    /// size resamples frames to it. `None`: the model does not say (older models), and frames
    /// are centre-cropped and resized as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub um_per_px: Option<f64>,
    /// A training-picture pixel's width over its height (`leukoscope.pixel_aspect`), when it is
    /// not 1: pictures stretched to another aspect ratio (the Taleqani pictures are 4:3
    /// photographs squeezed into squares, ≈ 1.3). `um_per_px` is then the geometric mean
    /// √(width·height) of a pixel, and a device resamples x and y by their own factors so its
    /// frames look like the training pictures. `None`: square pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_aspect: Option<f64>,
}

/// The largest input side a contract may name: a classifier of single smear fields has no use
/// for more, and a larger value (a corrupt file) would allocate gigabytes per picture.
pub const MAX_INPUT_SIDE: u32 = 4096;

/// ImageNet channel statistics: the usual choice, and required for torchvision weights.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Every ONNX `metadata_props` key leukoscope writes (a contract other tools read: never rename,
/// only add). The first five carry the [`ModelContract`]; the others describe where the model
/// came from.
pub mod metadata_keys {
    /// JSON list of labels in model output order.
    pub const LABELS: &str = "leukoscope.labels";
    /// Input size as `"HxW"`.
    pub const INPUT_SIZE: &str = "leukoscope.input_size";
    /// JSON list of 3 floats: per-channel mean of RGB scaled to 0..1.
    pub const MEAN: &str = "leukoscope.mean";
    /// JSON list of 3 floats: per-channel standard deviation.
    pub const STD: &str = "leukoscope.std";
    /// Resize method (`bilinear`, `nearest`, `lanczos3`).
    pub const RESIZE: &str = "leukoscope.resize";
    /// `mobilenetv2`, `efficientnet-b0`, `efficientnet-b3` or `cnn`.
    pub const MODEL_FAMILY: &str = "leukoscope.model_family";
    /// MobileNetV2's width multiplier.
    pub const WIDTH: &str = "leukoscope.width";
    /// The training run's id.
    pub const RUN_ID: &str = "leukoscope.run_id";
    /// sha256 of the training run's `manifest.csv`.
    pub const MANIFEST_SHA256: &str = "leukoscope.manifest_sha256";
    /// Test-split accuracy of the run's report.
    pub const TEST_ACCURACY: &str = "leukoscope.test_accuracy";
    /// Test-split macro-F1 of the run's report.
    pub const TEST_MACRO_F1: &str = "leukoscope.test_macro_f1";
    /// Creation time (RFC 3339).
    pub const CREATED: &str = "leukoscope.created";
    /// The leukoscope version that wrote the file.
    pub const VERSION: &str = "leukoscope.version";
    /// The quantization recipe (JSON), present only in files written by `quantize`.
    pub const QUANTIZATION: &str = "leukoscope.quantization";
    /// Colour normalization before the mean and std (JSON, [`crate::colour::ColourNormalization`]);
    /// absent: none.
    pub const COLOUR: &str = "leukoscope.colour";
    /// The unfamiliarity score and its threshold (JSON, [`crate::familiarity::Unfamiliarity`]);
    /// absent: the model has none.
    pub const UNFAMILIARITY: &str = "leukoscope.unfamiliarity";
    /// The temperature applied in the graph to the `probabilities` output; absent: none.
    pub const TEMPERATURE: &str = "leukoscope.temperature";
    /// The training pictures' pixel size, micrometres per pixel (a decimal number, e.g.
    /// `"0.3712"`); optional: models without it are framed as before.
    pub const UM_PER_PX: &str = "leukoscope.um_per_px";
    /// A training-picture pixel's width over its height (a decimal number, e.g. `"1.296"`);
    /// optional, absent for square pixels. Only meaningful with `UM_PER_PX`.
    pub const PIXEL_ASPECT: &str = "leukoscope.pixel_aspect";
}

/// A contract that cannot be used.
#[derive(Debug, Error)]
pub enum ContractError {
    /// A field has a value no model can use.
    #[error("invalid model contract: {0}")]
    Invalid(String),
}

impl ModelContract {
    /// A square-input contract with ImageNet normalization and bilinear resizing.
    pub fn new(labels: Vec<String>, size: u32) -> Self {
        ModelContract {
            labels,
            input_height: size,
            input_width: size,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            resize: ResizeMethod::Bilinear,
            colour: ColourNormalization::None,
            unfamiliarity: None,
            temperature: None,
            um_per_px: None,
            pixel_aspect: None,
        }
    }

    /// Number of classes (model outputs).
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// Number of `f32` values in one preprocessed image (3 × H × W).
    pub fn input_len(&self) -> usize {
        3 * self.input_height as usize * self.input_width as usize
    }

    /// The input size as `"HxW"`, the form used in ONNX metadata.
    pub fn input_size_string(&self) -> String {
        format!("{}x{}", self.input_height, self.input_width)
    }

    /// Parses an `"HxW"` input size.
    pub fn parse_input_size(s: &str) -> Result<(u32, u32), ContractError> {
        let bad = || ContractError::Invalid(format!("input size '{s}' is not of the form HxW"));
        let (h, w) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let h: u32 = h.trim().parse().map_err(|_| bad())?;
        let w: u32 = w.trim().parse().map_err(|_| bad())?;
        Ok((h, w))
    }

    /// Index of a label in model output order.
    pub fn label_index(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    /// The contract as ONNX metadata entries (keys in [`metadata_keys`]).
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let json = |v: &[f32]| serde_json::to_string(v).expect("floats serialize");
        vec![
            (
                metadata_keys::LABELS.into(),
                serde_json::to_string(&self.labels).expect("strings serialize"),
            ),
            (metadata_keys::INPUT_SIZE.into(), self.input_size_string()),
            (metadata_keys::MEAN.into(), json(&self.mean)),
            (metadata_keys::STD.into(), json(&self.std)),
            (metadata_keys::RESIZE.into(), self.resize.as_str().into()),
        ]
        .into_iter()
        .chain(
            (self.colour != ColourNormalization::None)
                .then(|| (metadata_keys::COLOUR.into(), self.colour.to_metadata())),
        )
        .chain(self.unfamiliarity.as_ref().map(|u| {
            (
                metadata_keys::UNFAMILIARITY.into(),
                serde_json::to_string(u).expect("an unfamiliarity record serializes"),
            )
        }))
        .chain(
            self.temperature
                .map(|t| (metadata_keys::TEMPERATURE.into(), t.to_string())),
        )
        .chain(
            self.um_per_px
                .map(|u| (metadata_keys::UM_PER_PX.into(), format!("{u}"))),
        )
        .chain(
            self.pixel_aspect
                .map(|a| (metadata_keys::PIXEL_ASPECT.into(), format!("{a}"))),
        )
        .collect()
    }

    /// Reads a contract back from ONNX metadata entries; names the missing or malformed key.
    pub fn from_metadata<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ContractError> {
        let map: std::collections::HashMap<&str, &str> = entries.into_iter().collect();
        let get = |key: &str| {
            map.get(key)
                .copied()
                .ok_or_else(|| ContractError::Invalid(format!("metadata key '{key}' is missing")))
        };
        let bad = |key: &str, e: &dyn std::fmt::Display| {
            ContractError::Invalid(format!("metadata key '{key}' is malformed: {e}"))
        };
        let labels: Vec<String> = serde_json::from_str(get(metadata_keys::LABELS)?)
            .map_err(|e| bad(metadata_keys::LABELS, &e))?;
        let (input_height, input_width) = Self::parse_input_size(get(metadata_keys::INPUT_SIZE)?)?;
        let triple = |key: &str| -> Result<[f32; 3], ContractError> {
            serde_json::from_str(get(key)?).map_err(|e| bad(key, &e))
        };
        let resize = match map.get(metadata_keys::RESIZE) {
            Some(r) => r.parse()?,
            None => ResizeMethod::Bilinear,
        };
        let colour = match map.get(metadata_keys::COLOUR) {
            Some(c) => {
                ColourNormalization::from_metadata(c).map_err(|e| bad(metadata_keys::COLOUR, &e))?
            }
            None => ColourNormalization::None,
        };
        let unfamiliarity = match map.get(metadata_keys::UNFAMILIARITY) {
            Some(u) => Some(
                serde_json::from_str::<Unfamiliarity>(u)
                    .map_err(|e| bad(metadata_keys::UNFAMILIARITY, &e))?,
            ),
            None => None,
        };
        let temperature = match map.get(metadata_keys::TEMPERATURE) {
            Some(t) => Some(
                t.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .ok_or_else(|| bad(metadata_keys::TEMPERATURE, &"not a positive number"))?,
            ),
            None => None,
        };
        let number = |key: &str| -> Result<Option<f64>, ContractError> {
            map.get(key)
                .map(|v| v.trim().parse::<f64>().map_err(|e| bad(key, &e)))
                .transpose()
        };
        let um_per_px = number(metadata_keys::UM_PER_PX)?;
        let pixel_aspect = number(metadata_keys::PIXEL_ASPECT)?;
        let contract = ModelContract {
            labels,
            input_height,
            input_width,
            mean: triple(metadata_keys::MEAN)?,
            std: triple(metadata_keys::STD)?,
            resize,
            colour,
            unfamiliarity,
            temperature,
            um_per_px,
            pixel_aspect,
        };
        contract.validate()?;
        Ok(contract)
    }

    /// Checks that every field is usable: at least two distinct labels, a non-zero input size,
    /// finite means and positive standard deviations.
    pub fn validate(&self) -> Result<(), ContractError> {
        if self.labels.len() < 2 {
            return Err(ContractError::Invalid(format!(
                "a classifier needs at least two labels, got {:?}",
                self.labels
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for l in &self.labels {
            if l.trim().is_empty() || !seen.insert(l) {
                return Err(ContractError::Invalid(format!(
                    "labels must be non-empty and distinct, got {:?}",
                    self.labels
                )));
            }
        }
        if self.input_height == 0 || self.input_width == 0 {
            return Err(ContractError::Invalid(format!(
                "input size {} has a zero side",
                self.input_size_string()
            )));
        }
        if self.input_height > MAX_INPUT_SIDE || self.input_width > MAX_INPUT_SIDE {
            return Err(ContractError::Invalid(format!(
                "input size {} is larger than {MAX_INPUT_SIDE} px on a side",
                self.input_size_string()
            )));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(ContractError::Invalid(format!(
                "mean {:?} is not finite",
                self.mean
            )));
        }
        if let Some(u) = self.um_per_px {
            crate::scale::check_um_per_px(metadata_keys::UM_PER_PX, u)
                .map_err(|e| ContractError::Invalid(e.to_string()))?;
        }
        if let Some(a) = self.pixel_aspect
            && !(a.is_finite() && (0.25..=4.0).contains(&a))
        {
            return Err(ContractError::Invalid(format!(
                "{} = {a} is not a pixel aspect ratio (expected 0.25..4)",
                metadata_keys::PIXEL_ASPECT
            )));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(ContractError::Invalid(format!(
                "std {:?} must be positive",
                self.std
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["Benign", "Early", "Pre", "Pro"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn input_size_round_trips_through_its_string_form() {
        let c = ModelContract::new(labels(), 224);
        assert_eq!(c.input_size_string(), "224x224");
        assert_eq!(
            ModelContract::parse_input_size("128x96").unwrap(),
            (128, 96)
        );
        assert!(ModelContract::parse_input_size("128").is_err());
        assert!(ModelContract::parse_input_size("ax1").is_err());
    }

    #[test]
    fn validation_rejects_unusable_contracts() {
        let good = ModelContract::new(labels(), 64);
        good.validate().unwrap();
        let mut one = good.clone();
        one.labels.truncate(1);
        assert!(one.validate().is_err());
        let mut dup = good.clone();
        dup.labels[1] = "Benign".into();
        assert!(dup.validate().is_err());
        let mut zero_std = good.clone();
        zero_std.std[2] = 0.0;
        assert!(zero_std.validate().is_err());
        let mut zero_size = good;
        zero_size.input_width = 0;
        assert!(zero_size.validate().is_err());
    }

    #[test]
    fn contract_round_trips_through_onnx_metadata() {
        let mut c = ModelContract::new(labels(), 128);
        c.input_width = 96;
        c.resize = ResizeMethod::Lanczos3;
        let entries = c.to_metadata();
        assert!(entries.iter().all(|(k, _)| k != metadata_keys::COLOUR));
        let back =
            ModelContract::from_metadata(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap();
        assert_eq!(back, c);
        let mut coloured = c.clone();
        coloured.colour = ColourNormalization::BackgroundWhite {
            white: [250.0, 254.5, 252.0],
        };
        coloured.temperature = Some(1.37);
        coloured.unfamiliarity = Some(Unfamiliarity {
            output: "unfamiliarity".into(),
            method: "mahalanobis".into(),
            features: "flatten_1".into(),
            dims: 1280,
            threshold: 41.5,
            validation_rejected: 0.0073,
            shrinkage: 0.1,
        });
        let entries = coloured.to_metadata();
        let back =
            ModelContract::from_metadata(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap();
        assert_eq!(back, coloured);
        assert!(!entries.iter().any(|(k, _)| k == metadata_keys::UM_PER_PX));
        // The pixel size is optional and round-trips when present.
        let mut scaled = c.clone();
        scaled.um_per_px = Some(0.3712);
        scaled.pixel_aspect = Some(1.296);
        let e = scaled.to_metadata();
        let back =
            ModelContract::from_metadata(e.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(back.um_per_px, Some(0.3712));
        assert_eq!(back.pixel_aspect, Some(1.296));
        let bad = e.iter().map(|(k, v)| {
            if k == metadata_keys::UM_PER_PX {
                (k.as_str(), "-2")
            } else {
                (k.as_str(), v.as_str())
            }
        });
        let err = ModelContract::from_metadata(bad).unwrap_err().to_string();
        assert!(err.contains("leukoscope.um_per_px"), "{err}");
        let without_labels = entries.iter().filter(|(k, _)| k != metadata_keys::LABELS);
        let err =
            ModelContract::from_metadata(without_labels.map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("leukoscope.labels") && err.contains("missing"),
            "{err}"
        );
        let broken = entries.iter().map(|(k, v)| {
            if k == metadata_keys::MEAN {
                (k.as_str(), "[0.5, oops]")
            } else {
                (k.as_str(), v.as_str())
            }
        });
        let err = ModelContract::from_metadata(broken)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("leukoscope.mean") && err.contains("malformed"),
            "{err}"
        );
    }

    #[test]
    fn resize_method_names_parse() {
        for m in [
            ResizeMethod::Bilinear,
            ResizeMethod::Nearest,
            ResizeMethod::Lanczos3,
        ] {
            assert_eq!(m.as_str().parse::<ResizeMethod>().unwrap(), m);
        }
        assert!("cubic".parse::<ResizeMethod>().is_err());
    }
}
