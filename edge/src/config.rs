//! The device's TOML configuration (`edge run --config FILE`), every section optional.
//!
//! The annotated example `edge/leukoscope.example.toml` documents every key and its default;
//! `edge run` flags override the file. Unknown keys are refused, so a typo is an error at
//! start-up rather than a setting silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fields::FieldConfig;
use crate::quality::QualityConfig;
use crate::source::SourceOptions;
use leukoscope_screening::{DecisionConfig, SlideRule};

/// Reading the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
}

/// The whole device configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The model files and how they are checked.
    pub model: ModelConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// The quality gate's thresholds.
    pub quality: QualityConfig,
    /// Per-frame decisions.
    pub decision: DecisionConfig,
    /// How frames are grouped into microscope fields.
    pub fields: FieldConfig,
    /// Slide sessions and the slide verdict rule.
    pub slide: SlideConfig,
    /// The audit database and kept frames.
    pub store: StoreConfig,
    /// LEDs and display (see the `hardware` crate).
    pub panel: hardware::PanelConfig,
    /// The push button.
    pub button: Option<hardware::ButtonLineConfig>,
    /// The technician's serial line.
    pub serial: Option<hardware::SerialConfig>,
    /// Format of the event lines on stdout (`text` or `json`); default: the serial line's
    /// format, else text.
    #[serde(rename = "events")]
    pub events_format: Option<hardware::LineFormat>,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Model files, or folders whose `*.onnx` files are all candidates (f32 and int8 variants
    /// of one contract).
    pub paths: Vec<PathBuf>,
    /// Which variant to run: `auto` (the fastest measured at start-up), `f32` or `int8`.
    pub variant: String,
    /// Pinned SHA-256 per model file name (`"leukoscope-all-int8.onnx" = "3f…"`). When
    /// present, a candidate file without a pin or with another digest refuses to start.
    pub sha256: BTreeMap<String, String>,
    /// Ed25519 public key (64 hex digits). When set, every model file needs a valid signature
    /// in `<file>.sig` (64 raw bytes or 128 hex digits) or the device refuses to start.
    pub public_key: Option<String>,
    /// Threads for tract's matrix products.
    pub threads: usize,
    /// A known image for the start-up self-test, with `selftest_label` its expected label.
    pub selftest_image: Option<PathBuf>,
    /// The label `selftest_image` must get.
    pub selftest_label: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            paths: vec![PathBuf::from("models")],
            variant: "auto".into(),
            sha256: BTreeMap::new(),
            public_key: None,
            threads: 1,
            selftest_image: None,
            selftest_label: None,
        }
    }
}

/// `[source]`: the source spec, whether the program ends with it, the framing; how the source
/// reads is `[source.options]` ([`SourceOptions`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// `v4l2:/dev/videoN`, `stdin` (or `-`), `watch:DIR`, or a file or folder path.
    pub spec: String,
    /// Stop the program when a finite source (stdin, files) ends.
    pub exit_on_end: bool,
    /// 0: classify the centre square of each frame (the default, like the training pictures).
    /// N: cut each frame into a centred grid of N×N tiles at full resolution and classify each
    /// tile on its own (per-tile results; see `edge::source::tiles`).
    pub tile: u32,
    /// Camera mode, frame size limit, folder scanning.
    pub options: SourceOptions,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            spec: "v4l2:/dev/video0".into(),
            exit_on_end: true,
            tile: 0,
            options: SourceOptions::default(),
        }
    }
}

/// `[slide]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlideConfig {
    /// Open a session automatically when frames arrive and none is open — until the technician
    /// stops one with `STOP` or the button; from then on sessions open only with `START` or a
    /// press.
    pub auto_start: bool,
    /// Close the open session after this many seconds without a frame (0 = never).
    pub idle_gap_s: u64,
    /// The slide verdict rule.
    pub rule: SlideRule,
}

impl Default for SlideConfig {
    fn default() -> Self {
        SlideConfig {
            auto_start: true,
            idle_gap_s: 120,
            rule: SlideRule::default(),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite audit database.
    pub db: PathBuf,
    /// Folder for the JPEGs of flagged frames (blast, uncertain); none = keep none. It belongs
    /// to one database ([`crate::flagged`]): `edge run` refuses a folder another one claims.
    pub flagged_dir: Option<PathBuf>,
    /// Size cap of that folder, in MiB.
    pub flagged_cap_mib: u64,
    /// Free space below this (MiB, on the database's file system) is a disk-full fault.
    pub min_free_mib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            db: PathBuf::from("leukoscope.db"),
            flagged_dir: None,
            flagged_cap_mib: 512,
            min_free_mib: 64,
        }
    }
}

impl RunConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: RunConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn check(&self) -> Result<(), ConfigError> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::Invalid(format!(
                    "{name} must be within 0..1, got {v}"
                )))
            }
        };
        unit(
            "decision.min_confidence",
            f64::from(self.decision.min_confidence),
        )?;
        unit(
            "slide.rule.refer_min_blast_fraction",
            self.slide.rule.refer_min_blast_fraction,
        )?;
        unit(
            "slide.rule.max_uncertain_fraction",
            self.slide.rule.max_uncertain_fraction,
        )?;
        self.fields.check().map_err(ConfigError::Invalid)?;
        if !["auto", "f32", "int8"].contains(&self.model.variant.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "model.variant must be auto, f32 or int8, got {:?}",
                self.model.variant
            )));
        }
        if self.model.paths.is_empty() {
            return Err(ConfigError::Invalid("model.paths is empty".into()));
        }
        for (file, digest) in &self.model.sha256 {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid(format!(
                    "model.sha256 for {file}: expected 64 hex digits, got {digest:?}"
                )));
            }
        }
        if self.model.selftest_image.is_some() != self.model.selftest_label.is_some() {
            return Err(ConfigError::Invalid(
                "model.selftest_image and model.selftest_label go together".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_checks() {
        let text = include_str!("../leukoscope.example.toml");
        let config: RunConfig = toml::from_str(text).unwrap();
        config.check().unwrap();
        assert_eq!(config.source.spec, "v4l2:/dev/video0");
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config: RunConfig = toml::from_str("").unwrap();
        assert_eq!(config, RunConfig::default());
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_key() {
        let err = toml::from_str::<RunConfig>("[slide]\nidle_gap = 3\n").unwrap_err();
        assert!(err.to_string().contains("idle_gap"), "{err}");
        let config: RunConfig = toml::from_str("[decision]\nmin_confidence = 1.5\n").unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("decision.min_confidence"), "{err}");
        let config: RunConfig = toml::from_str("[model.sha256]\n\"a.onnx\" = \"abc\"\n").unwrap();
        assert!(config.check().unwrap_err().to_string().contains("a.onnx"));
    }
}
