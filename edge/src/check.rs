//! `edge check`: is this deployment ready to screen? The checks `edge run` makes at start, and
//! the hardware it would open, run one after the other without opening a session or writing a
//! result: the config, the model files, their pins and signatures, the model's self-test, the
//! database (writable, schema current), free space, the flagged-pictures folder, the frame
//! source (a camera delivers frames: format, resolution, measured fps, its controls), the serial
//! port, the LEDs and display, the button, and with `[fleet]` the outbox and the broker. The systemd unit runs it before `edge run`
//! (`ExecStartPre`), so a kit that is not ready says why in the journal instead of screening.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::RunConfig;
use crate::source::{FrameData, RecvTimeoutError, SourceEvent, SourceSpec};
use crate::store::{SCHEMA_VERSION, Store};

/// What became of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Ready.
    Pass,
    /// Not ready: `edge run` would refuse to start or fail on it.
    Fail,
    /// Not configured, or not something this check can open (e.g. a pipe on stdin).
    Skip,
    /// Works, but not as it should: `edge run` starts and screens (e.g. the fleet broker is
    /// unreachable or refuses the kit: results wait in the outbox).
    Warn,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Outcome::Pass => "ok",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
            Outcome::Warn => "WARN",
        })
    }
}

/// One row of the check table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// What was checked (`config`, `model files`, …).
    pub check: &'static str,
    /// Pass, fail or skip.
    pub result: Outcome,
    /// What was found, in words.
    pub detail: String,
}

/// Every check of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// The config file checked (none: the defaults).
    pub config: Option<PathBuf>,
    /// True when no check failed.
    pub passed: bool,
    /// The checks, in the order they ran.
    pub checks: Vec<CheckResult>,
}

/// How long the source check waits for frames.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Wait at most this long for the first frame.
    pub first_frame_timeout: Duration,
    /// A camera's frame rate is measured over this long after its first frame.
    pub fps_window: Duration,
    /// Wait at most this long for the fleet broker's answer.
    pub broker_timeout: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            first_frame_timeout: Duration::from_secs(10),
            fps_window: Duration::from_secs(2),
            broker_timeout: Duration::from_secs(5),
        }
    }
}

impl CheckReport {
    /// The report as a table, one check a line, and a closing line.
    pub fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let config = self.config.as_ref().map_or_else(
            || "(no --config: defaults)".into(),
            |p| p.display().to_string(),
        );
        writeln!(out, "leukoscope deployment check: {config}")?;
        writeln!(out, "{:<16} {:<6} DETAIL", "CHECK", "RESULT")?;
        for c in &self.checks {
            writeln!(out, "{:<16} {:<6} {}", c.check, c.result, c.detail)?;
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.result == Outcome::Fail)
            .count();
        if failed == 0 {
            writeln!(out, "all checks passed")
        } else {
            writeln!(
                out,
                "{failed} check(s) failed: this device is not ready to screen"
            )
        }
    }
}

/// Checks the deployment `config_path` describes (none: the defaults), with `source` (a source
/// spec, as `edge run --source`) over the config's.
pub fn check_deployment(
    config_path: Option<&Path>,
    source: Option<&str>,
    options: &CheckOptions,
) -> CheckReport {
    let mut checks = Vec::new();
    let config = match config_path {
        Some(path) => RunConfig::load(path).map(|c| (c, path.display().to_string())),
        None => Ok((RunConfig::default(), "no config file: the defaults".into())),
    };
    let mut config = match config {
        Ok((config, detail)) => {
            checks.push(row(
                "config",
                Ok(format!("{detail}: parses, values in range")),
            ));
            config
        }
        Err(e) => {
            checks.push(row("config", Err(e.to_string())));
            return finish(config_path, checks);
        }
    };
    if let Some(spec) = source {
        config.source.spec = spec.to_string();
    }

    checks.extend(model_checks(&config));
    checks.push(row("database", database_check(&config.store.db)));
    checks.push(row(
        "disk",
        crate::run::selftest::disk_check(
            &existing_ancestor(&config.store.db).join("db"),
            config.store.min_free_mib,
        ),
    ));
    checks.push(match &config.store.flagged_dir {
        Some(dir) => row("flagged folder", flagged_check(dir, &config.store.db)),
        None => skip("flagged folder", "not configured: no pictures kept"),
    });
    checks.push(source_check(&config, options));
    checks.push(match &config.serial {
        Some(serial) => row("serial", serial_check(serial)),
        None => skip("serial", "not configured"),
    });
    checks.push(panel_check(&config));
    checks.push(match &config.button {
        Some(line) => row("button", button_check(line)),
        None => skip("button", "not configured"),
    });
    checks.extend(fleet_checks(&config, options));
    finish(config_path, checks)
}

/// Fleet forwarding: the outbox (a full one fails: `edge run` would stop recording) and the
/// broker (unreachable or refusing the kit is a warning, never a failure: the kit screens and
/// its results wait in the outbox, and the systemd unit must still start `edge run`).
fn fleet_checks(config: &RunConfig, options: &CheckOptions) -> Vec<CheckResult> {
    if !config.fleet.enabled() {
        return vec![skip(
            "fleet",
            "not configured ([fleet] broker): results stay on the kit",
        )];
    }
    let report = crate::fleet::SyncReport::gather(config, options.broker_timeout);
    let outbox = if report.outbox_full() {
        row(
            "fleet outbox",
            Err(format!("full: {}", report.backlog_line())),
        )
    } else {
        row("fleet outbox", Ok(report.backlog_line()))
    };
    let broker = match report.connection {
        Some(Ok(detail)) => row("fleet broker", Ok(detail)),
        Some(Err(reason)) => CheckResult {
            check: "fleet broker",
            result: Outcome::Warn,
            detail: format!("{reason}; results wait in the outbox"),
        },
        None => skip("fleet broker", "off"),
    };
    vec![outbox, broker]
}

fn finish(config: Option<&Path>, checks: Vec<CheckResult>) -> CheckReport {
    CheckReport {
        config: config.map(Path::to_path_buf),
        passed: checks.iter().all(|c| c.result != Outcome::Fail),
        checks,
    }
}

fn row(check: &'static str, result: Result<String, String>) -> CheckResult {
    match result {
        Ok(detail) => CheckResult {
            check,
            result: Outcome::Pass,
            detail,
        },
        Err(detail) => CheckResult {
            check,
            result: Outcome::Fail,
            detail,
        },
    }
}

fn skip(check: &'static str, detail: &str) -> CheckResult {
    CheckResult {
        check,
        result: Outcome::Skip,
        detail: detail.into(),
    }
}

/// Model files found, their pins and signatures, and each one's self-test.
fn model_checks(config: &RunConfig) -> Vec<CheckResult> {
    let files = crate::model_search::model_paths(&config.model.paths)
        .map_err(|e| e.to_string())
        .and_then(|paths| crate::run::model_files(&paths).map_err(|e| e.to_string()));
    let files = match files {
        Ok(files) => files,
        Err(e) => {
            return vec![
                row("model files", Err(e)),
                skip("integrity", "no model file"),
                skip("model self-test", "no model file"),
            ];
        }
    };
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut rows = vec![row("model files", Ok(names.join(", ")))];
    let mut verified = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match crate::integrity::verify_model(
            file,
            &config.model.sha256,
            config.model.public_key.as_deref(),
        ) {
            Ok(v) => verified.push(v),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let how = match (config.model.sha256.is_empty(), &config.model.public_key) {
        (false, Some(_)) => "sha256 pins and ed25519 signatures valid",
        (false, None) => "sha256 pins match",
        (true, Some(_)) => "ed25519 signatures valid (no sha256 pins)",
        (true, None) => "read whole (no sha256 pins or public key configured)",
    };
    rows.push(row(
        "integrity",
        if problems.is_empty() {
            Ok(format!("{how}: {} file(s)", verified.len()))
        } else {
            Err(problems.join("; "))
        },
    ));
    let mut details = Vec::new();
    let mut failures = Vec::new();
    for v in &verified {
        let result = v
            .classifier(&leukoscope_model::onnx::ContractOverrides::default())
            .map_err(|e| e.to_string())
            .and_then(|model| {
                let detail = crate::run::selftest::model_check(&model, &config.model)?;
                match config.source.um_per_px {
                    // The framing `edge run` would use: the model must declare its pixel size,
                    // and a camera's mode give at most 64 fields.
                    Some(u) => {
                        let f = crate::run::scale_framing(u, &model)?;
                        let spec = &config.source.spec;
                        if !(spec.starts_with("v4l2:") || spec.starts_with("/dev/video")) {
                            return Ok(format!(
                                "{detail}; pixel size {} µm/px, frames at {u} µm/px",
                                f.model_um_per_px
                            ));
                        }
                        let (w, h) = (config.source.options.width, config.source.options.height);
                        f.check_field_count(w, h)?;
                        Ok(format!(
                            "{detail}; pixel size {} µm/px, camera {u} µm/px: {} field(s) per \
                             {w}x{h} frame",
                            f.model_um_per_px,
                            f.field_count(w, h)
                        ))
                    }
                    None => Ok(detail),
                }
            });
        match result {
            Ok(d) => details.push(d),
            Err(e) => failures.push(e),
        }
    }
    rows.push(if verified.is_empty() {
        skip("model self-test", "no model passed the integrity check")
    } else if failures.is_empty() {
        row("model self-test", Ok(details.join("; ")))
    } else {
        row("model self-test", Err(failures.join("; ")))
    });
    rows
}

/// The database is (or can be) created and written, and its schema is one this program reads
/// or migrates.
fn database_check(db: &Path) -> Result<String, String> {
    if db.exists() {
        let version = Store::schema_version(db).map_err(|e| e.to_string())?;
        writable(db)?;
        let folder = existing_ancestor(db);
        writable(&folder)?;
        Ok(match version {
            0 => format!(
                "{}: empty, writable (created at the first run)",
                db.display()
            ),
            v if v == SCHEMA_VERSION => {
                format!("{}: writable, schema version {v} (current)", db.display())
            }
            v => format!(
                "{}: writable, schema version {v} (edge run migrates it to {SCHEMA_VERSION} at start)",
                db.display()
            ),
        })
    } else {
        let folder = existing_ancestor(db);
        writable(&folder)?;
        Ok(format!(
            "{}: not there yet, created at the first run ({} writable)",
            db.display(),
            folder.display()
        ))
    }
}

/// The flagged-pictures folder can be written and belongs to this database (or to none yet).
fn flagged_check(dir: &Path, db: &Path) -> Result<String, String> {
    let folder = existing_ancestor(dir);
    writable(&folder)?;
    let owner_file = dir.join(crate::flagged::OWNER_FILE);
    match std::fs::read(&owner_file) {
        Ok(owner) => {
            let owner = PathBuf::from(String::from_utf8_lossy(&owner).trim_end().to_string());
            let ours = db.canonicalize().unwrap_or_else(|_| db.to_path_buf());
            if owner == ours {
                Ok(format!(
                    "{}: writable, owned by this database",
                    dir.display()
                ))
            } else {
                Err(format!(
                    "{} belongs to the database {} (see {}), not {}: edge run would refuse it",
                    dir.display(),
                    owner.display(),
                    owner_file.display(),
                    db.display()
                ))
            }
        }
        Err(_) => Ok(format!(
            "{}: writable (claimed by this database at the first run)",
            dir.display()
        )),
    }
}

/// The frame source: a camera opens and delivers frames (with its mode, measured rate and
/// controls); files decode; a watched folder can be read; a pipe is left to `edge run`.
fn source_check(config: &RunConfig, options: &CheckOptions) -> CheckResult {
    let spec: SourceSpec = match config.source.spec.parse() {
        Ok(spec) => spec,
        Err(e) => return row("source", Err(e.to_string())),
    };
    match &spec {
        SourceSpec::Stdin => skip(
            "source",
            "stdin: a pipe (rpicam-vid, GStreamer), checked when edge run starts",
        ),
        SourceSpec::Watch { dir } => row(
            "source",
            std::fs::read_dir(dir)
                .map(|entries| {
                    let pictures = entries
                        .flatten()
                        .filter(|e| leukoscope_model::images::is_image_file(&e.path()))
                        .count();
                    format!(
                        "watch:{}: readable, {pictures} picture(s) there",
                        dir.display()
                    )
                })
                .map_err(|e| format!("watch:{}: {e}", dir.display())),
        ),
        SourceSpec::V4l2 { device } => row("source", camera_check(config, &spec, device, options)),
        SourceSpec::Files(_) => row("source", first_frames(config, &spec, options)),
    }
}

/// Opens the camera as `edge run` does (format, frame rate, the controls of `[source.options]`),
/// grabs frames for about `fps_window` and reports its mode, the measured rate and the controls
/// it offers with their values.
fn camera_check(
    config: &RunConfig,
    spec: &SourceSpec,
    device: &Path,
    options: &CheckOptions,
) -> Result<String, String> {
    let o = &config.source.options;
    let frames = (f64::from(o.fps.max(1)) * options.fps_window.as_secs_f64()).round() as u32;
    let p = crate::source::probe(device, o, frames.clamp(2, 300)).map_err(|e| e.to_string())?;
    crate::source::tiles::check_tile_count(p.width, p.height, config.source.tile)?;
    let format = String::from_utf8_lossy(&p.format.fourcc()).into_owned();
    let mut detail = format!(
        "{spec}: {format} {}x{}, {:.1} frames/s measured",
        p.width, p.height, p.measured_fps
    );
    if p.controls.is_empty() {
        detail.push_str("; no controls offered");
    } else {
        detail.push_str(&format!("; controls: {}", p.controls_text()));
    }
    Ok(detail)
}

/// Opens a files source as `edge run` does and waits for its first whole picture.
fn first_frames(
    config: &RunConfig,
    spec: &SourceSpec,
    options: &CheckOptions,
) -> Result<String, String> {
    let source = crate::source::open(spec, &config.source.options).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + options.first_frame_timeout;
    let mut skipped = Vec::new();
    let described = |skipped: &[String]| {
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join("; "))
        }
    };
    let result = loop {
        let now = Instant::now();
        if now >= deadline {
            break Err(format!(
                "{spec}: no frame within {} s{}",
                options.first_frame_timeout.as_secs(),
                described(&skipped)
            ));
        }
        match source.recv_timeout(deadline - now) {
            Ok(SourceEvent::Frame(frame)) => {
                let (w, h, kind) = match &frame.data {
                    FrameData::Encoded(bytes) => {
                        match leukoscope_model::preprocess::decode_image_bytes(bytes) {
                            Ok(img) => (img.width(), img.height(), "JPEG/PNG"),
                            Err(e) => {
                                skipped.push(format!("{}: {e}", frame.origin));
                                continue;
                            }
                        }
                    }
                    FrameData::Rgb(img) => (img.width(), img.height(), "RGB"),
                };
                break crate::source::tiles::check_tile_count(w, h, config.source.tile)
                    .map(|()| format!("{spec}: first frame {w}x{h} ({kind})"));
            }
            Ok(SourceEvent::Skipped { origin, reason }) => {
                skipped.push(format!("{origin}: {reason}"))
            }
            Ok(SourceEvent::Lost { reason }) => break Err(format!("{spec}: {reason}")),
            Ok(SourceEvent::End) | Err(RecvTimeoutError::Disconnected) => {
                break Err(format!(
                    "{spec}: ended without a whole picture{}",
                    described(&skipped)
                ));
            }
            Ok(SourceEvent::Restored) | Err(RecvTimeoutError::Timeout) => {}
        }
    };
    source.stop();
    result
}

/// The LEDs and display answer (the `linux` build), or what else the panel is.
fn panel_check(config: &RunConfig) -> CheckResult {
    use hardware::PanelKind;
    match config.panel.kind {
        PanelKind::None => skip("panel", "none configured"),
        PanelKind::Console => skip("panel", "console: drawn on stderr by edge run"),
        PanelKind::Hardware => row(
            "panel",
            hardware::open_panel(&config.panel)
                .map(|_| "LEDs and display open and answer".to_string())
                .map_err(|e| e.to_string()),
        ),
    }
}

/// The serial port opens, through the opener `edge run`'s serial link uses.
fn serial_check(serial: &hardware::SerialConfig) -> Result<String, String> {
    use hardware::Opener;
    hardware::PortOpener::new(serial.clone())
        .open()
        .map(|_| format!("{} opens at {} baud", serial.path, serial.baud))
        .map_err(|e| format!("{} at {} baud: {e}", serial.path, serial.baud))
}

/// The button's GPIO line can be requested with edge events (what `edge run` reads).
#[cfg(feature = "linux")]
fn button_check(line: &hardware::ButtonLineConfig) -> Result<String, String> {
    hardware::linux::GpioEdges::open(&line.chip, line.line)
        .map(|_| format!("{} line {} requested", line.chip, line.line))
        .map_err(|e| e.to_string())
}

/// A configured button needs the `linux` build.
#[cfg(not(feature = "linux"))]
fn button_check(_line: &hardware::ButtonLineConfig) -> Result<String, String> {
    Err("a [button] is configured, but this build has no GPIO support (build edge with --features linux)".into())
}

/// `path` (a file or folder that exists) can be written by this user.
fn writable(path: &Path) -> Result<(), String> {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK)
        .map_err(|e| format!("{}: not writable by this user ({e})", path.display()))
}

/// `path` itself when it exists, else its nearest existing ancestor (where it will be created).
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = if path.is_relative() {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from(".");
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_database_is_fine_where_it_can_be_created_and_a_foreign_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state/sub/l.db");
        let ok = database_check(&db).unwrap();
        assert!(ok.contains("created at the first run"), "{ok}");
        let foreign = dir.path().join("foreign.db");
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
        drop(conn);
        let err = database_check(&foreign).unwrap_err();
        assert!(err.contains("foreign.db"), "{err}");
    }

    #[test]
    fn a_flagged_folder_owned_by_another_database_fails() {
        let dir = tempfile::tempdir().unwrap();
        let flagged = dir.path().join("flagged");
        std::fs::create_dir(&flagged).unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"").unwrap();
        assert!(flagged_check(&flagged, &db).is_ok());
        std::fs::write(flagged.join(crate::flagged::OWNER_FILE), b"/elsewhere/b.db").unwrap();
        let err = flagged_check(&flagged, &db).unwrap_err();
        assert!(err.contains("/elsewhere/b.db"), "{err}");
        std::fs::write(
            flagged.join(crate::flagged::OWNER_FILE),
            db.canonicalize().unwrap().as_os_str().as_encoded_bytes(),
        )
        .unwrap();
        assert!(flagged_check(&flagged, &db).is_ok());
    }

    #[test]
    fn a_config_that_does_not_parse_is_one_failed_check() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[slide]\nidle_gap = 3\n").unwrap();
        let report = check_deployment(Some(&file), None, &CheckOptions::default());
        assert!(!report.passed);
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.checks[0].result, Outcome::Fail);
        assert!(report.checks[0].detail.contains("idle_gap"));
    }

    #[test]
    fn a_missing_camera_and_a_missing_model_fail_and_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("device.toml");
        std::fs::write(
            &file,
            "[model]\npaths = [\"no-models-here\"]\n[source]\nspec = \"v4l2:/dev/video-none\"\n",
        )
        .unwrap();
        let report = check_deployment(Some(&file), None, &CheckOptions::default());
        assert!(!report.passed);
        let find = |name: &str| report.checks.iter().find(|c| c.check == name).unwrap();
        assert_eq!(find("model files").result, Outcome::Fail);
        assert!(find("model files").detail.contains("no-models-here"));
        assert_eq!(find("source").result, Outcome::Fail);
        assert!(find("source").detail.contains("/dev/video-none"));
        assert_eq!(find("database").result, Outcome::Pass);
        assert_eq!(find("serial").result, Outcome::Skip);
        let mut table = Vec::new();
        report.write_table(&mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("check(s) failed"), "{table}");
    }
}
