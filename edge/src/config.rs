//! The device's TOML configuration (`edge run --config FILE`), every section optional.
//!
//! The annotated example `edge/leukoscope.example.toml` documents every key and its default;
//! `edge run` flags override the file. Unknown keys are refused, so a typo is an error at
//! start-up rather than a setting silently ignored. Relative paths in a file (models, the
//! self-test image, the database, the flagged-pictures folder, a watched folder or files) are
//! relative to the file's folder, so `--config /etc/leukoscope/leukoscope.toml` means the same
//! from any working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fields::FieldConfig;
use crate::quality::QualityConfig;
use crate::source::{FramePolicy, SourceOptions, SourceSpec};
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
    /// of one contract). Empty (the default): the first of `$LEUKOSCOPE_MODELS`,
    /// `/usr/share/leukoscope/models` and `./models` that holds a model
    /// ([`crate::model_search`]).
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
            paths: Vec::new(),
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
    /// Stop the program when a finite source (stdin, files) ends; `false` (`--keep-running`):
    /// close the session and stay up (serial line, button, panel) until SIGTERM/SIGINT.
    pub exit_on_end: bool,
    /// Frames the classifier has not taken yet when a newer one arrives: `latest` drops them
    /// (counted: `dropped`), `all` keeps every one. Unset: `latest` for a camera, `all` for
    /// stdin, files and a watched folder. `latest` on files or a folder, and `all` on a camera,
    /// are refused. Set `latest` for `stdin` from a live camera (`rpicam-vid`, GStreamer).
    pub policy: Option<FramePolicy>,
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
            policy: None,
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
        let mut config: RunConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check()?;
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        config.resolve_relative_to(&base);
        Ok(config)
    }

    /// Makes the file paths of this config that are relative, relative to `base` (the config
    /// file's folder) instead of the working directory. Device nodes and `stdin` are left alone.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.model.paths.iter_mut().for_each(join);
        self.model.selftest_image.iter_mut().for_each(join);
        join(&mut self.store.db);
        self.store.flagged_dir.iter_mut().for_each(join);
        self.source.spec = resolve_source_spec(&self.source.spec, base);
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
        unit(
            "slide.rule.max_unfamiliar_fraction",
            self.slide.rule.max_unfamiliar_fraction,
        )?;
        self.fields.check().map_err(ConfigError::Invalid)?;
        if !["auto", "f32", "int8"].contains(&self.model.variant.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "model.variant must be auto, f32 or int8, got {:?}",
                self.model.variant
            )));
        }
        for (file, digest) in &self.model.sha256 {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid(format!(
                    "model.sha256 for {file}: expected 64 hex digits, got {digest:?}"
                )));
            }
        }
        let camera =
            self.source.spec.starts_with("v4l2:") || self.source.spec.starts_with("/dev/video");
        if camera {
            // The camera's mode is known before the first frame; other sources are checked on
            // their first frame (`edge::run`).
            crate::source::tiles::check_tile_count(
                self.source.options.width,
                self.source.options.height,
                self.source.tile,
            )
            .map_err(ConfigError::Invalid)?;
        }
        if let (Some(policy), Ok(spec)) =
            (self.source.policy, self.source.spec.parse::<SourceSpec>())
        {
            policy
                .check(&spec)
                .map_err(|e| ConfigError::Invalid(format!("source.policy: {e}")))?;
        }
        crate::source::v4l2::controls::validate(&self.source.options)
            .map_err(ConfigError::Invalid)?;
        if self.model.selftest_image.is_some() != self.model.selftest_label.is_some() {
            return Err(ConfigError::Invalid(
                "model.selftest_image and model.selftest_label go together".into(),
            ));
        }
        Ok(())
    }
}

/// A source spec with a relative folder or file made relative to `base`; camera, `stdin` and
/// absolute paths as they are.
fn resolve_source_spec(spec: &str, base: &Path) -> String {
    let resolve = |p: &str| {
        let path = Path::new(p);
        if path.is_relative() {
            base.join(path).display().to_string()
        } else {
            p.to_string()
        }
    };
    if spec.is_empty() || spec == "stdin" || spec == "-" || spec.starts_with("v4l2:") {
        return spec.to_string();
    }
    match spec.strip_prefix("watch:") {
        Some(dir) if !dir.is_empty() => format!("watch:{}", resolve(dir)),
        Some(_) => spec.to_string(),
        None => resolve(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_in_a_file_are_relative_to_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("device.toml");
        std::fs::write(
            &file,
            "[model]\npaths = [\"models\", \"/opt/m.onnx\"]\nselftest_image = \"s.jpg\"\n\
             selftest_label = \"Pro\"\n[source]\nspec = \"watch:incoming\"\n\
             [store]\ndb = \"state/l.db\"\nflagged_dir = \"/var/lib/f\"\n",
        )
        .unwrap();
        let c = RunConfig::load(&file).unwrap();
        let d = dir.path();
        assert_eq!(
            c.model.paths,
            vec![d.join("models"), PathBuf::from("/opt/m.onnx")]
        );
        assert_eq!(c.model.selftest_image, Some(d.join("s.jpg")));
        assert_eq!(c.store.db, d.join("state/l.db"));
        assert_eq!(c.store.flagged_dir, Some(PathBuf::from("/var/lib/f")));
        assert_eq!(
            c.source.spec,
            format!("watch:{}", d.join("incoming").display())
        );
        for kept in ["stdin", "-", "v4l2:/dev/video0", "/srv/in"] {
            assert_eq!(resolve_source_spec(kept, d), kept);
        }
        assert_eq!(
            resolve_source_spec("pictures", Path::new("/etc/l")),
            "/etc/l/pictures"
        );
    }

    #[test]
    fn the_example_config_parses_and_checks() {
        let text = include_str!("../leukoscope.example.toml");
        let config: RunConfig = toml::from_str(text).unwrap();
        config.check().unwrap();
        assert_eq!(config.source.spec, "v4l2:/dev/video0");
    }

    #[test]
    fn the_example_config_locks_white_balance_and_exposure() {
        let config: RunConfig = toml::from_str(include_str!("../leukoscope.example.toml")).unwrap();
        let o = &config.source.options;
        assert_eq!(o.white_balance_auto, Some(false));
        assert!(o.white_balance_temperature.is_some());
        assert_eq!(
            o.exposure_auto,
            Some(crate::source::ExposureSetting::Switch(false))
        );
        assert!(o.catch_up);
    }

    #[test]
    fn policy_and_camera_controls_are_checked_at_load() {
        let config: RunConfig =
            toml::from_str("[source]\nspec = \"-\"\npolicy = \"latest\"\n").unwrap();
        config.check().unwrap();
        assert_eq!(config.source.policy, Some(FramePolicy::Latest));
        let config: RunConfig =
            toml::from_str("[source]\nspec = \"watch:in\"\npolicy = \"latest\"\n").unwrap();
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("source.policy") && e.contains("watch:in"), "{e}");
        assert!(toml::from_str::<RunConfig>("[source]\npolicy = \"newest\"\n").is_err());
        let config: RunConfig =
            toml::from_str("[source.options]\nwhite_balance_temperature = 4500\n").unwrap();
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("white_balance_auto = false"), "{e}");
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
        // tile = 3 on the camera's 1280x720 would be ~100,000 inferences per frame.
        let config: RunConfig = toml::from_str("[source]\ntile = 3\n").unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains("tile = 3") && err.contains("1280x720"),
            "{err}"
        );
    }
}
