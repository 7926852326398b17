//! The device as deployed: it finds its model and its files without a working directory
//! (`$LEUKOSCOPE_MODELS`, paths relative to the config file), `edge check` tells a ready kit from
//! one that is not, logs carry no colour codes when stderr is a file, and a tile setting that
//! would mean thousands of inferences per frame is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{smear_jpeg, write_model_with};

fn edge(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge"));
    c.current_dir(cwd)
        .env_remove("LEUKOSCOPE_MODELS")
        .env("RUST_LOG", "info");
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A kit folder: `models/tiny.onnx`, `pictures/` with `n` smears, `elsewhere/` to run from.
struct Kit {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Kit {
    fn new(pictures: usize) -> Kit {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("models")).unwrap();
        write_model_with(
            &root.join("models/tiny.onnx"),
            ["Benign", "Pro"],
            60.0,
            true,
        );
        std::fs::create_dir_all(root.join("pictures")).unwrap();
        for i in 0..pictures {
            std::fs::write(
                root.join(format!("pictures/{i:02}.jpg")),
                smear_jpeg(320, 240, 100 + i as u64, 20),
            )
            .unwrap();
        }
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        Kit { _dir: dir, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

#[test]
fn classify_from_any_folder_finds_the_model_through_the_environment_or_says_where_it_looked() {
    let kit = Kit::new(2);
    let out = edge(&kit.path("elsewhere"))
        .args(["classify", "--format", "jsonl"])
        .arg(kit.path("pictures"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("LEUKOSCOPE_MODELS not set")
            && err.contains("/usr/share/leukoscope/models")
            && err.contains(&kit.path("elsewhere/models").display().to_string()),
        "{err}"
    );

    let out = edge(&kit.path("elsewhere"))
        .env("LEUKOSCOPE_MODELS", kit.path("models"))
        .args(["classify", "--format", "jsonl"])
        .arg(kit.path("pictures"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout).lines().count(), 2, "{}", show(&out));
    assert!(
        text(&out.stderr).contains(&kit.path("models/tiny.onnx").display().to_string()),
        "the model used is said: {}",
        show(&out)
    );
}

#[test]
fn a_config_with_relative_paths_means_the_same_from_any_working_directory() {
    let kit = Kit::new(3);
    let config = kit.path("device.toml");
    std::fs::write(
        &config,
        "[model]\npaths = [\"models\"]\n[source]\nspec = \"pictures\"\n[store]\ndb = \"state/audit.db\"\n",
    )
    .unwrap();
    let out = edge(&kit.path("elsewhere"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        text(&out.stdout).matches("RESULT ").count(),
        3,
        "{}",
        show(&out)
    );
    assert!(kit.path("state/audit.db").is_file());
    assert!(!kit.path("elsewhere/state").exists());
    // The README's `edge sessions --config FILE` from anywhere.
    let out = edge(&kit.path("elsewhere"))
        .arg("sessions")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout).lines().count(), 2, "{}", show(&out));
}

#[test]
fn edge_check_passes_a_ready_kit_and_names_what_is_wrong_with_another() {
    let kit = Kit::new(2);
    let config = kit.path("device.toml");
    std::fs::write(
        &config,
        "[model]\npaths = [\"models\"]\n[source]\nspec = \"pictures\"\n[store]\ndb = \"state/audit.db\"\n",
    )
    .unwrap();
    let out = edge(&kit.path("elsewhere"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let table = text(&out.stdout);
    for check in [
        "config",
        "model files",
        "integrity",
        "model self-test",
        "database",
        "disk",
        "source",
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(check))
            .unwrap_or_else(|| panic!("no {check} row:\n{table}"));
        assert!(line.contains(" ok "), "{line}");
    }
    assert!(table.contains("first frame 320x240"), "{table}");
    assert!(table.contains("all checks passed"), "{table}");
    // Nothing was recorded: the check opens no session and creates no database.
    assert!(!kit.path("state/audit.db").exists());

    // A wrong pin, a missing camera: exit 1, and the JSON names each.
    std::fs::write(
        &config,
        format!(
            "[model]\npaths = [\"models\"]\n[model.sha256]\n\"tiny.onnx\" = \"{}\"\n[source]\nspec = \"v4l2:/dev/video-absent\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = edge(&kit.path("elsewhere"))
        .args(["check", "--format", "json", "--timeout", "2", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    let result = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name}: {report}"))
            .clone()
    };
    assert_eq!(result("integrity")["result"], "fail");
    assert!(
        result("integrity")["detail"]
            .as_str()
            .unwrap()
            .contains("tiny.onnx")
    );
    assert_eq!(result("source")["result"], "fail");
    assert!(
        result("source")["detail"]
            .as_str()
            .unwrap()
            .contains("/dev/video-absent")
    );
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let kit = Kit::new(2);
    let out = edge(&kit.path("elsewhere"))
        .arg("run")
        .arg("--model")
        .arg(kit.path("models"))
        .arg("--source")
        .arg(kit.path("pictures"))
        .arg("--db")
        .arg(kit.path("audit.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.contains("INFO"), "logs at info were written: {err}");
    assert!(
        !out.stderr.contains(&0x1b),
        "escape codes in a log that is not a terminal: {err:?}"
    );
}

#[test]
fn a_tile_side_that_would_mean_thousands_of_inferences_per_frame_is_refused() {
    let kit = Kit::new(1);
    // A camera: refused before anything opens.
    let out = edge(&kit.path("elsewhere"))
        .args([
            "run",
            "--source",
            "v4l2:/dev/video-absent",
            "--tile",
            "3",
            "--model",
        ])
        .arg(kit.path("models"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("tile = 3") && err.contains("1280x720") && err.contains("tile >= 117"),
        "{err}"
    );
    // Files: the first frame stops classifying with the same explanation; nothing recorded.
    let out = edge(&kit.path("elsewhere"))
        .args(["run", "--tile", "3", "--source"])
        .arg(kit.path("pictures"))
        .arg("--model")
        .arg(kit.path("models"))
        .arg("--db")
        .arg(kit.path("audit.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let all = show(&out);
    assert!(
        all.contains("320x240 frame into 8480 tiles"),
        "the frame's own size is named: {all}"
    );
    assert!(!text(&out.stdout).contains("RESULT "), "{all}");
}
