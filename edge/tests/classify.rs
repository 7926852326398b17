//! `edge classify` end to end with a tiny hand-made ONNX model: red pictures are "red", blue
//! pictures are "blue".

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::write_model;

fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(args)
        .output()
        .unwrap()
}

fn images(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    image::RgbImage::from_pixel(20, 16, image::Rgb([230, 20, 20]))
        .save(dir.join("red.png"))
        .unwrap();
    image::RgbImage::from_pixel(12, 12, image::Rgb([20, 20, 230]))
        .save(dir.join("sub/blue.jpg"))
        .unwrap();
    std::fs::write(dir.join("sub/broken.jpg"), b"\xff\xd8\xff\xe0 not really").unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image, not listed").unwrap();
}

#[test]
fn folders_are_classified_and_bad_images_reported_without_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.onnx");
    write_model(&model, true);
    images(&dir.path().join("imgs"));
    let out = edge(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "jsonl",
        dir.path().join("imgs").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(n))
            .unwrap()
    };
    assert_eq!(by_name("red.png")["label"], "red");
    assert!(by_name("red.png")["confidence"].as_f64().unwrap() > 0.9);
    assert_eq!(by_name("blue.jpg")["label"], "blue");
    let p = by_name("blue.jpg")["probabilities"]
        .as_object()
        .unwrap()
        .clone();
    assert!((p["red"].as_f64().unwrap() + p["blue"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert!(by_name("blue.jpg")["error"].is_null());
    let broken = by_name("broken.jpg");
    assert!(broken["label"].is_null());
    assert!(broken["error"].as_str().unwrap().contains("broken.jpg"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.jpg"));

    let csv = edge(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "csv",
        dir.path().join("imgs/red.png").to_str().unwrap(),
    ]);
    assert!(csv.status.success());
    let text = String::from_utf8_lossy(&csv.stdout);
    assert!(
        text.starts_with("path,label,confidence,red,blue,error\n"),
        "{text}"
    );
    assert!(text.lines().nth(1).unwrap().contains(",red,"), "{text}");
}

/// Pictures that are not whole, each with what its error must say.
fn partial_pictures(dir: &Path) -> Vec<(&'static str, &'static str)> {
    let jpeg = common::smear_jpeg(160, 120, 7, 20);
    assert!(jpeg.len() > 3000, "{} bytes", jpeg.len());
    std::fs::write(dir.join("truncated.jpg"), &jpeg[..3000]).unwrap();
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    std::fs::write(dir.join("header-only.jpg"), &jpeg[..sos]).unwrap();
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(20, 16, image::Rgb([230, 20, 20]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    // IEND is the last chunk: 4 bytes length, 4 type, 4 CRC.
    std::fs::write(dir.join("no-iend.png"), &png[..png.len() - 12]).unwrap();
    std::fs::write(dir.join("empty.jpg"), b"").unwrap();
    vec![
        (
            "truncated.jpg",
            "truncated JPEG: no end-of-image marker (EOI) after 3000 bytes",
        ),
        ("header-only.jpg", "truncated JPEG"),
        ("no-iend.png", "ends before its IEND chunk"),
        ("empty.jpg", "empty file (0 bytes)"),
    ]
}

#[test]
fn partial_pictures_get_an_error_row_and_no_result_and_the_others_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.onnx");
    write_model(&model, true);
    let imgs = dir.path().join("imgs");
    images(&imgs);
    std::fs::remove_file(imgs.join("sub/broken.jpg")).unwrap();
    let bad = partial_pictures(&imgs);
    let out = edge(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "jsonl",
        imgs.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2 + bad.len(), "{rows:?}");
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(n))
            .unwrap()
    };
    assert_eq!(by_name("red.png")["label"], "red");
    assert_eq!(by_name("blue.jpg")["label"], "blue");
    for (name, says) in &bad {
        let row = by_name(name);
        for key in ["label", "confidence", "probabilities"] {
            assert!(row[key].is_null(), "{name}: {row}");
        }
        let error = row["error"].as_str().unwrap();
        assert!(error.contains(name) && error.contains(says), "{error}");
        assert!(stderr.contains(error), "{stderr}");
    }

    // One partial picture alone: exit 2 in every format, no label or confidence.
    let cut = imgs.join("truncated.jpg");
    for format in ["csv", "table"] {
        let out = edge(&[
            "classify",
            "--model",
            model.to_str().unwrap(),
            "--format",
            format,
            cut.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2));
        let text = String::from_utf8_lossy(&out.stdout);
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("truncated JPEG"), "{text}");
        if format == "csv" {
            let prefix = format!("{},,,,,", cut.display());
            assert!(row.starts_with(&prefix), "{text}");
        } else {
            assert!(row.contains("ERROR"), "{text}");
        }
    }
}

#[test]
fn unusable_models_get_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    images(&dir.path().join("imgs"));
    let img = dir.path().join("imgs/red.png");
    let run = |model: &Path, extra: &[&str]| {
        let mut a = vec!["classify", "--model", model.to_str().unwrap()];
        a.extend_from_slice(extra);
        a.push(img.to_str().unwrap());
        edge(&a)
    };

    let not_onnx = dir.path().join("model.onnx");
    std::fs::write(&not_onnx, b"GIF89a this is a picture, not a model").unwrap();
    let out = run(&not_onnx, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );

    let good = dir.path().join("good.onnx");
    write_model(&good, true);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&cut, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut.onnx"));

    let bare = dir.path().join("bare.onnx");
    write_model(&bare, false);
    let out = run(&bare, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("leukoscope.labels") && err.contains("--labels"),
        "{err}"
    );
    // A foreign model runs once its contract is given on the command line.
    let out = run(
        &bare,
        &[
            "--labels",
            "red,blue",
            "--size",
            "8",
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.5,0.5,0.5",
            "--format",
            "jsonl",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"label\":\"red\""));
}

/// A `GlobalAveragePool` graph whose contract names `size`, with or without graph outputs.
fn write_odd_model(path: &Path, size: u32, with_outputs: bool) {
    use leukoscope_model::onnx::graph::{GraphBuilder, value_info};
    use prost::Message;
    let mut g = GraphBuilder::new();
    g.node(
        "GlobalAveragePool",
        &["image"],
        vec![],
        Some("probabilities"),
    );
    let outputs = if with_outputs {
        vec![value_info("probabilities", &[None, Some(2)])]
    } else {
        vec![]
    };
    let contract =
        leukoscope_model::contract::ModelContract::new(vec!["red".into(), "blue".into()], size);
    let s = Some(i64::from(size));
    let model = g.finish(
        value_info("image", &[None, Some(3), s, s]),
        outputs,
        contract.to_metadata(),
        "edge-tests",
    );
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

#[test]
fn models_without_outputs_or_with_a_huge_input_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    images(&dir.path().join("imgs"));
    let img = dir.path().join("imgs/red.png");
    let classify = |model: &Path, extra: &[&str]| {
        let mut a = vec!["classify", "--model", model.to_str().unwrap()];
        a.extend_from_slice(extra);
        a.push(img.to_str().unwrap());
        let started = std::time::Instant::now();
        let out = edge(&a);
        // 100000² inputs would be 120 GB of f32 per picture: refused before any allocation.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(out.stdout.is_empty(), "no header, no rows");
        assert!(!err.contains("panicked"), "{err}");
        err
    };

    let no_outputs = dir.path().join("no-outputs.onnx");
    write_odd_model(&no_outputs, 8, false);
    let err = classify(&no_outputs, &[]);
    assert!(
        err.contains("no-outputs.onnx") && err.contains("without outputs"),
        "{err}"
    );

    let huge = dir.path().join("huge-input.onnx");
    write_odd_model(&huge, 100_000, true);
    let err = classify(&huge, &[]);
    assert!(
        err.contains("huge-input.onnx")
            && err.contains("input size 100000x100000 is larger than 4096 px on a side"),
        "{err}"
    );

    // The same size given on the command line for a model without a contract.
    let bare = dir.path().join("bare.onnx");
    write_model(&bare, false);
    let err = classify(&bare, &["--labels", "red,blue", "--size", "100000"]);
    assert!(err.contains("larger than 4096 px"), "{err}");
}

#[test]
fn evaluate_writes_the_report_and_refuses_unknown_classes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.onnx");
    write_model(&model, true);
    let data = dir.path().join("clinic");
    for (class, colour) in [("red", [220, 30, 30]), ("blue", [30, 30, 220])] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..3u8 {
            let c = image::Rgb([colour[0] - i * 5, colour[1], colour[2]]);
            image::RgbImage::from_pixel(10, 10, c)
                .save(data.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let out_dir = dir.path().join("report");
    let out = edge(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc =
        leukoscope_model::evaluation_report::read_report(&out_dir.join("report.json")).unwrap();
    assert_eq!(doc.metrics.samples, 6);
    assert!((doc.metrics.accuracy - 1.0).abs() < 1e-12);
    assert!(out_dir.join("confusion_matrix.png").exists());

    std::fs::create_dir_all(data.join("green")).unwrap();
    let out = edge(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("green") && err.contains("\"red\""), "{err}");
}

#[test]
fn bench_prints_the_stage_latencies_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.onnx");
    write_model(&model, true);
    let out = edge(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--runs",
        "5",
        "--warmup",
        "1",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "decode_ms_p50",
        "preprocess_ms_p50",
        "inference_ms_p50",
        "inference_ms_p95",
        "fps",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert_eq!(v["threads"], 1);
}
