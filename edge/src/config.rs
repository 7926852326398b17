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
    /// Forwarding results to a fleet's MQTT broker (off unless `broker` is set).
    pub fleet: FleetConfig,
}

/// `[fleet]`: forwarding every committed session change and frame result to an MQTT broker,
/// through the database's outbox ([`crate::fleet`]). Off unless `broker` is set (or
/// `edge run --fleet-broker URL`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// `mqtt://HOST:PORT` (plain TCP, port 1883 when left out) or `mqtts://HOST:PORT` (TLS,
    /// 8883). None: forwarding is off and no outbox row is written.
    pub broker: Option<String>,
    /// The site the kit screens for (a topic level: no `/`, `+`, `#`).
    pub site: String,
    /// The kit's name, unique in the fleet (a topic level). Default: the host name.
    pub device: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://`); none: the
    /// system's root certificates.
    pub ca_file: Option<PathBuf>,
    /// User name for the broker.
    pub username: Option<String>,
    /// Password for the broker (prefer `password_file`).
    pub password: Option<String>,
    /// File holding the password (its first line), readable only by the service.
    pub password_file: Option<PathBuf>,
    /// PEM client certificate for TLS client authentication (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Cap of the outbox in rows: the oldest sent rows are pruned first; when every row is
    /// unsent, recording stops with `ERROR code=outbox_full` (like a full disk).
    pub outbox_max_rows: u64,
    /// Also send the kept picture of each flagged (blast, uncertain) frame, base64 in its frame
    /// message (`picture`), when `[store] flagged_dir` keeps them.
    pub send_pictures: bool,
    /// Seconds between the kit's retained status messages (online, backlog).
    pub status_interval_s: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            broker: None,
            site: "default".into(),
            device: None,
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            client_cert: None,
            client_key: None,
            outbox_max_rows: crate::store::DEFAULT_OUTBOX_MAX_ROWS,
            send_pictures: false,
            status_interval_s: 60,
        }
    }
}

impl FleetConfig {
    /// Whether forwarding is on.
    pub fn enabled(&self) -> bool {
        self.broker.is_some()
    }

    /// The kit's name: `device`, else the host name.
    pub fn device_name(&self) -> String {
        self.device.clone().unwrap_or_else(crate::fleet::host_name)
    }

    /// Checks the names and the broker URL.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("fleet.{m}"));
        crate::fleet::check_topic_level(&self.site).map_err(|e| bad(format!("site: {e}")))?;
        crate::fleet::check_topic_level(&self.device_name())
            .map_err(|e| bad(format!("device: {e}")))?;
        if let Some(url) = &self.broker {
            crate::fleet::BrokerUrl::parse(url).map_err(|e| bad(format!("broker: {e}")))?;
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(bad("client_cert and fleet.client_key go together".into()));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(bad("password and fleet.password_file: give one".into()));
        }
        if self.outbox_max_rows == 0 {
            return Err(bad("outbox_max_rows must be at least 1".into()));
        }
        Ok(())
    }
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
    /// The camera's pixel size, micrometres per pixel (`edge calibrate` measures it). With it
    /// (and a model that declares its own, `leukoscope.um_per_px`) each frame is resampled to
    /// the model's pixel size and cut into model-input fields that cover it, each gated,
    /// classified, recorded and counted on its own
    /// ([`leukoscope_model::scale::fields`]). Unset: the centre square of each frame, resized
    /// to the model input, as before.
    pub um_per_px: Option<f64>,
    /// **Deprecated** (use `um_per_px`): 0 or unset classifies the centre square of each frame;
    /// N cuts each frame into a centred grid of tiles **N pixels a side** at full resolution,
    /// each classified on its own (`edge::source::tiles`). Still accepted for old configs, with
    /// a warning; refused together with `um_per_px`.
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
            um_per_px: None,
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
        let fleet = &mut self.fleet;
        for p in [
            &mut fleet.ca_file,
            &mut fleet.password_file,
            &mut fleet.client_cert,
            &mut fleet.client_key,
        ] {
            p.iter_mut().for_each(join);
        }
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
        if let Some(u) = self.source.um_per_px {
            leukoscope_model::scale::check_um_per_px("source.um_per_px", u)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if self.source.tile != 0 {
                return Err(ConfigError::Invalid(format!(
                    "source.tile = {} (deprecated) and source.um_per_px go not together: \
                     um_per_px replaces tile (frames are cut into model-scale fields); remove tile",
                    self.source.tile
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
        self.fleet.check()?;
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
    fn the_fleet_section_is_off_by_default_checked_and_its_files_resolved() {
        let c: RunConfig = toml::from_str("").unwrap();
        assert!(!c.fleet.enabled());
        assert_eq!(
            c.fleet.outbox_max_rows,
            crate::store::DEFAULT_OUTBOX_MAX_ROWS
        );
        assert!(!c.fleet.device_name().is_empty());
        for (bad, key) in [
            ("broker = \"ftp://h\"", "fleet.broker"),
            ("site = \"a/b\"", "fleet.site"),
            ("device = \"#\"", "fleet.device"),
            ("client_cert = \"c.pem\"", "client_key"),
            ("outbox_max_rows = 0", "outbox_max_rows"),
        ] {
            let c: RunConfig = toml::from_str(&format!("[fleet]\n{bad}\n")).unwrap();
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kit.toml");
        std::fs::write(
            &file,
            "[fleet]\nbroker = \"mqtts://b:8883\"\ndevice = \"kit-7\"\nca_file = \"ca.crt\"\n",
        )
        .unwrap();
        let c = RunConfig::load(&file).unwrap();
        assert!(c.fleet.enabled());
        assert_eq!(c.fleet.device_name(), "kit-7");
        assert_eq!(c.fleet.ca_file, Some(dir.path().join("ca.crt")));
    }

    #[test]
    fn the_pixel_size_is_checked_and_replaces_tile() {
        let config: RunConfig = toml::from_str("[source]\num_per_px = 0.21\n").unwrap();
        config.check().unwrap();
        assert_eq!(config.source.um_per_px, Some(0.21));
        let config: RunConfig = toml::from_str("[source]\num_per_px = -1\n").unwrap();
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("source.um_per_px"), "{e}");
        let config: RunConfig = toml::from_str("[source]\num_per_px = 0.2\ntile = 224\n").unwrap();
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("um_per_px replaces tile"), "{e}");
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
