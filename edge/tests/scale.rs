//! Physical scale on the device: frames of a declared pixel size resampled to the model's and
//! cut into model-scale fields (`edge run --um-per-px`), the quality gate at the model's scale,
//! and the refusals.

mod common;

use std::path::Path;
use std::process::Command;

use common::write_model_at_scale;
use edge::quality::{QualityConfig, QualityGate, RetakeReason, synthetic_smear};
use edge::store::Store;
use image::RgbImage;
use image::imageops::{FilterType, resize};
use leukoscope_model::scale::fields::{FieldCutter, ScaleFraming};

/// The model's pixel size in these tests.
const MODEL_UM: f64 = 0.5;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// `img` shown `k` times larger (a higher magnification), bilinear.
fn magnified(img: &RgbImage, k: u32) -> RgbImage {
    resize(img, img.width() * k, img.height() * k, FilterType::Triangle)
}

fn gate() -> QualityGate {
    QualityGate::new(QualityConfig::default())
}

#[test]
fn quality_is_judged_at_the_model_scale() {
    // A sharp field as the model's training pictures show it, and the same field through an
    // objective three times stronger: every cell three times larger, edges three times wider.
    let sharp = synthetic_smear(224, 224, 5);
    let (own, own_reason) = gate().assess(&sharp);
    assert_eq!(own_reason, None, "{own:?}");
    let big = magnified(&sharp, 3);

    // With the camera's pixel size declared (a third of the model's), the frame is resampled to
    // the model's scale before the gate: one 224 px field, sharp again, passes.
    let framing = ScaleFraming::new(MODEL_UM / 3.0, MODEL_UM, 224, 224).unwrap();
    let fields = FieldCutter::new(framing).cut(&big);
    assert_eq!(fields.len(), 1);
    let (figures, reason) = gate().assess(&fields[0].image);
    assert_eq!(reason, None, "{figures:?}");
    // (The enlargement was bilinear, a low-pass the shrink cannot undo, so not all of it.)
    assert!(
        figures.focus > 0.25 * own.focus,
        "focus at the model's scale {} vs the field's own {}",
        figures.focus,
        own.focus
    );

    // Without a declared scale, what the gate sees depends on how many pixels the camera
    // gives. The 672 px frame as a whole is centre-cropped and shrunk to the 224 px analysis
    // picture, which happens to undo the magnification: it passes too.
    assert_eq!(gate().assess(&big).1, None);
    // But a camera of the training pictures' resolution (224 px) behind the stronger objective
    // shows the middle third of the field at full size: the measurement. Sharp, yet the
    // gate rejects it for focus, and no setting of the gate tells the two apart.
    let view = image::imageops::crop_imm(&big, 224, 224, 224, 224).to_image();
    let (figures, reason) = gate().assess(&view);
    assert_eq!(reason, Some(RetakeReason::Focus), "{figures:?}");
    assert!(figures.focus < 0.1 * own.focus, "{figures:?} vs {own:?}");
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edge"))
        .arg("run")
        .arg("--db")
        .arg(dir.join("audit.db"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

#[test]
fn a_declared_scale_cuts_each_frame_into_model_scale_fields() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("scaled.onnx");
    write_model_at_scale(&model, ["Benign", "Pro"], 224, Some(MODEL_UM));
    // A 448×224 field at the model's scale, photographed at twice the magnification: 896×448
    // at 0.25 µm/px. At the model's 0.5 µm/px it is 448×224 again: two fields side by side.
    let picture = dir.path().join("wide.png");
    magnified(&synthetic_smear(448, 224, 11), 2)
        .save(&picture)
        .unwrap();
    let out = run(
        dir.path(),
        &[
            "--model",
            model.to_str().unwrap(),
            "--um-per-px",
            "0.25",
            "--source",
            picture.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(
        stderr.contains("frames resampled ×0.500") && stderr.contains("224x224 px fields"),
        "{stderr}"
    );
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT ") || l.starts_with("RETAKE "))
        .collect();
    let tiles: Vec<Option<&str>> = results.iter().map(|l| field(l, "tile")).collect();
    assert_eq!(tiles, vec![Some("0"), Some("1")], "{stdout}");
    for l in &results {
        assert!(l.starts_with("RESULT "), "each field passes the gate: {l}");
        assert_eq!(field(l, "frame"), Some("1"), "{l}");
    }
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let rows = store.frames(1).unwrap();
    let recorded: Vec<(Option<u32>, u32, u32)> = rows
        .iter()
        .map(|r| (r.frame.tile, r.frame.width, r.frame.height))
        .collect();
    // Both fields of the one frame, with the frame's own size.
    assert_eq!(recorded, vec![(Some(0), 896, 448), (Some(1), 896, 448)]);
    let session = &store.sessions().unwrap()[0];
    let counts = session
        .counts
        .as_ref()
        .expect("a closed session has its counts");
    assert_eq!(counts.fields, Some(2), "each field counts on its own");
}

#[test]
fn a_declared_scale_needs_a_model_that_declares_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("unscaled.onnx");
    write_model_at_scale(&model, ["Benign", "Pro"], 224, None);
    let picture = dir.path().join("p.png");
    synthetic_smear(224, 224, 1).save(&picture).unwrap();
    let out = run(
        dir.path(),
        &[
            "--model",
            model.to_str().unwrap(),
            "--um-per-px",
            "0.3",
            "--source",
            picture.to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("unscaled.onnx") && stderr.contains("leukoscope.um_per_px"),
        "{stderr}"
    );
    // Without the flag the same model classifies the centre of the frame, as before.
    let out = run(
        dir.path(),
        &[
            "--model",
            model.to_str().unwrap(),
            "--source",
            picture.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // More than 64 fields a frame is refused on the first frame, naming the scales.
    let scaled = dir.path().join("scaled.onnx");
    write_model_at_scale(&scaled, ["Benign", "Pro"], 224, Some(0.05));
    let out = run(
        dir.path(),
        &[
            "--model",
            scaled.to_str().unwrap(),
            "--um-per-px",
            "0.5",
            "--source",
            picture.to_str().unwrap(),
        ],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("more than 64"), "{all}");
}

fn calibrate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edge"))
        .arg("calibrate")
        .args(args)
        .output()
        .unwrap()
}

/// The `um_per_px = X` value of `edge calibrate`'s output.
fn pasted_value(stdout: &str) -> f64 {
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "[source]")
        .unwrap_or_else(|| panic!("no [source] line: {stdout}"));
    lines[at + 1]
        .strip_prefix("um_per_px = ")
        .unwrap_or_else(|| panic!("no um_per_px line: {stdout}"))
        .parse()
        .unwrap()
}

#[test]
fn calibrate_prints_the_config_line_from_red_cells_or_a_micrometer() {
    use leukoscope_model::scale::synthetic::SyntheticField;
    let dir = tempfile::tempdir().unwrap();
    // Five camera frames whose red cells are 25 px across: 7.5 µm / 25 px = 0.3 µm/px.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for seed in 0..5 {
        SyntheticField {
            width: 640,
            height: 480,
            cells: 45,
            ..SyntheticField::new(25.0, seed)
        }
        .draw()
        .save(frames.join(format!("f{seed}.png")))
        .unwrap();
    }
    let out = calibrate(&[frames.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    assert!(
        stdout.contains("red cells: 0.") && stdout.contains("5 picture(s)"),
        "{stdout}"
    );
    let u = pasted_value(&stdout);
    assert!((u - 0.3).abs() / 0.3 < 0.03, "{stdout}");

    // A stage micrometer with 10 µm divisions 40 px apart: 0.25 µm/px, the line to paste.
    let ruler = dir.path().join("ruler.png");
    leukoscope_model::scale::micrometer::synthetic_ruler(640, 480, 40.0, true, 3)
        .save(&ruler)
        .unwrap();
    let out = calibrate(&[
        "--micrometer",
        ruler.to_str().unwrap(),
        "--division-um",
        "10",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    assert!((pasted_value(&stdout) - 0.25).abs() < 0.0025, "{stdout}");
    // Both: the micrometer's figure is pasted, the red cells compared with it.
    let out = calibrate(&[
        "--micrometer",
        ruler.to_str().unwrap(),
        frames.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!((pasted_value(&stdout) - 0.25).abs() < 0.0025, "{stdout}");
    assert!(stdout.contains("% above the micrometer"), "{stdout}");

    // A config that declares another scale is compared.
    let config = dir.path().join("device.toml");
    std::fs::write(&config, "[source]\nspec = \"-\"\num_per_px = 0.39\n").unwrap();
    let out = calibrate(&[
        "--config",
        config.to_str().unwrap(),
        frames.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("the config declares um_per_px = 0.39 (+"),
        "{stdout}"
    );
}

#[test]
fn calibrate_fails_clearly_without_red_cells_or_lines() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.png");
    RgbImage::from_pixel(320, 240, image::Rgb([236, 232, 238]))
        .save(&blank)
        .unwrap();
    let out = calibrate(&[blank.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("too few red cells"), "{stderr}");
    assert!(text(&out.stdout).is_empty());
    let out = calibrate(&["--micrometer", blank.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("blank.png") && stderr.contains("no stage-micrometer lines"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.png");
    let out = calibrate(&[missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing.png"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_run_warns_once_when_the_frames_disagree_with_the_declared_scale() {
    use leukoscope_model::scale::synthetic::SyntheticField;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("scaled.onnx");
    write_model_at_scale(&model, ["Benign", "Pro"], 224, Some(0.45));
    // Frames whose red cells are 25 px across (0.3 µm/px), declared as 0.45 µm/px: 50 % off.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for seed in 0..6 {
        SyntheticField {
            width: 480,
            height: 360,
            cells: 40,
            ..SyntheticField::new(25.0, seed)
        }
        .draw()
        .save(frames.join(format!("f{seed}.png")))
        .unwrap();
    }
    let args = |declared: &'static str| {
        [
            "--model".to_string(),
            model.to_str().unwrap().to_string(),
            "--um-per-px".into(),
            declared.into(),
            "--source".into(),
            frames.to_str().unwrap().to_string(),
        ]
    };
    let a = args("0.45");
    let out = run(
        dir.path(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let notices: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("NOTICE "))
        .collect();
    assert_eq!(notices.len(), 1, "{stdout}");
    assert_eq!(field(notices[0], "code"), Some("scale_mismatch"));
    assert!(notices[0].contains("0.45"), "{}", notices[0]);
    assert_eq!(
        stderr.matches("pixel size: the red cells").count(),
        1,
        "{stderr}"
    );
    // Declared right (0.3): no warning.
    let a = args("0.3");
    let out = run(
        dir.path(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("NOTICE"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn classify_and_evaluate_take_the_declared_scale() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("scaled.onnx");
    write_model_at_scale(&model, ["Benign", "Pro"], 224, Some(MODEL_UM));
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("Benign")).unwrap();
    std::fs::create_dir_all(data.join("Pro")).unwrap();
    let picture = data.join("Benign/wide.png");
    magnified(&synthetic_smear(448, 224, 11), 2)
        .save(&picture)
        .unwrap();
    synthetic_smear(224, 224, 3)
        .save(data.join("Pro/small.png"))
        .unwrap();
    let edge = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(args)
            .output()
            .unwrap()
    };
    let m = model.to_str().unwrap();
    let p = picture.to_str().unwrap();
    let out = edge(&[
        "classify",
        "--model",
        m,
        "--um-per-px",
        "0.25",
        "--format",
        "jsonl",
        p,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tiles: Vec<i64> = rows.iter().map(|r| r["tile"].as_i64().unwrap()).collect();
    assert_eq!(tiles, vec![0, 1]);
    let out = edge(&[
        "classify",
        "--model",
        m,
        "--um-per-px",
        "0.25",
        "--format",
        "csv",
        p,
    ]);
    let csv = text(&out.stdout);
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",uncertain_reason,unfamiliarity,tile"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // Without the flag: one row for the whole picture, and no tile key or column.
    let out = edge(&["classify", "--model", m, "--format", "jsonl", p]);
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert!(row.get("tile").is_none(), "{row}");

    let report = dir.path().join("report");
    let out = edge(&[
        "evaluate",
        "--model",
        m,
        "--data",
        data.to_str().unwrap(),
        "--um-per-px",
        "0.25",
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 images"),
        "{}",
        text(&out.stdout)
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("declared at 0.25 µm/px"), "{md}");
}

#[test]
fn edge_check_says_whether_the_model_can_take_the_declared_scale() {
    let dir = tempfile::tempdir().unwrap();
    write_model_at_scale(
        &dir.path().join("unscaled.onnx"),
        ["Benign", "Pro"],
        224,
        None,
    );
    write_model_at_scale(
        &dir.path().join("scaled.onnx"),
        ["Benign", "Pro"],
        224,
        Some(MODEL_UM),
    );
    std::fs::create_dir(dir.path().join("pics")).unwrap();
    synthetic_smear(224, 224, 1)
        .save(dir.path().join("pics/p.png"))
        .unwrap();
    let check = |model: &str| {
        let config = dir.path().join(format!("{model}.toml"));
        std::fs::write(
            &config,
            format!(
                "[model]\npaths = [\"{model}.onnx\"]\n[source]\nspec = \"pics\"\num_per_px = 0.3\n\
                 [store]\ndb = \"audit.db\"\n"
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(["check", "--format", "json", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
        let row = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "model self-test")
            .unwrap()
            .clone();
        (out.status.code(), row)
    };
    let (code, row) = check("unscaled");
    assert_eq!(code, Some(1), "{row}");
    assert_eq!(row["result"], "fail", "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains("unscaled.onnx") && detail.contains("leukoscope.um_per_px"),
        "{detail}"
    );
    let (_, row) = check("scaled");
    assert_eq!(row["result"], "pass", "{row}");
    assert!(
        row["detail"]
            .as_str()
            .unwrap()
            .contains("pixel size 0.5 µm/px"),
        "{row}"
    );
}
