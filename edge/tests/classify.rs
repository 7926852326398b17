//! `edge classify` end to end with a tiny hand-made ONNX model: red pictures are "red", blue
//! pictures are "blue".

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{
    UNFAMILIAR_GREEN, held_field, held_tinted_field, write_familiar_model, write_model,
    write_model_with,
};

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
    assert!(broken["decision"].is_null() && broken["uncertain_reason"].is_null());
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
        text.starts_with(
            "path,label,confidence,red,blue,error,decision,uncertain_reason,unfamiliarity\n"
        ),
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

/// Pictures for the decision tests: "benign" reddish, "blast" bluish, both at about 0.94 for
/// the tiny model (confident at 0.8, not at 0.99); "sure" strongly red (0.999); "even" grey
/// (0.5 each: uncertain at any threshold above 0.5).
fn decision_pictures(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, rgb) in [
        ("benign", [180, 100, 90]),
        ("blast", [90, 100, 180]),
        ("sure", [230, 20, 20]),
        ("even", [128, 128, 128]),
    ] {
        image::RgbImage::from_pixel(10, 10, image::Rgb(rgb))
            .save(dir.join(format!("{name}.png")))
            .unwrap();
    }
}

/// `edge classify --format jsonl` on `dir` with `extra` flags: the rows by file stem.
fn classify_rows(
    model: &Path,
    dir: &Path,
    extra: &[&str],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut args = vec!["classify", "--model", model.to_str().unwrap()];
    args.extend_from_slice(&["--format", "jsonl"]);
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    let out = edge(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            let stem = Path::new(row["path"].as_str().unwrap())
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (stem, row)
        })
        .collect()
}

#[test]
fn classify_decides_each_picture_by_the_device_rule() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("benign-pro.onnx");
    write_model_with(&model, ["Benign", "Pro"], 2.0, true);
    let pics = dir.path().join("pics");
    decision_pictures(&pics);

    let decided = |rows: &std::collections::BTreeMap<String, serde_json::Value>, name: &str| {
        let r = &rows[name];
        (
            r["decision"].as_str().unwrap().to_string(),
            r["uncertain_reason"].as_str().map(String::from),
        )
    };
    let rows = classify_rows(&model, &pics, &[]);
    let confidence = rows["benign"]["confidence"].as_f64().unwrap();
    assert!((0.8..0.99).contains(&confidence), "{confidence}");
    assert_eq!(decided(&rows, "benign"), ("normal".into(), None));
    assert_eq!(decided(&rows, "sure"), ("normal".into(), None));
    assert_eq!(rows["blast"]["label"], "Pro");
    assert_eq!(decided(&rows, "blast"), ("blast".into(), None));
    assert_eq!(
        decided(&rows, "even"),
        ("uncertain".into(), Some("low_confidence".into()))
    );
    // The label and probabilities stay what the model said.
    assert_eq!(rows["even"]["label"], "Benign");

    let strict = classify_rows(&model, &pics, &["--min-confidence", "0.99"]);
    for name in ["benign", "blast", "even"] {
        assert_eq!(
            decided(&strict, name),
            ("uncertain".into(), Some("low_confidence".into())),
            "{name}"
        );
    }
    assert_eq!(decided(&strict, "sure"), ("normal".into(), None));

    // The threshold and the normal labels come from a device config's [decision]; the flag
    // overrides the file.
    let config = dir.path().join("device.toml");
    std::fs::write(
        &config,
        "[decision]\nmin_confidence = 0.99\nnormal_labels = [\"Pro\"]\n",
    )
    .unwrap();
    let from_file = classify_rows(&model, &pics, &["--config", config.to_str().unwrap()]);
    assert_eq!(decided(&from_file, "blast").0, "uncertain");
    assert_eq!(decided(&from_file, "sure"), ("blast".into(), None));
    let overridden = classify_rows(
        &model,
        &pics,
        &[
            "--config",
            config.to_str().unwrap(),
            "--min-confidence",
            "0.5",
        ],
    );
    assert_eq!(decided(&overridden, "blast"), ("normal".into(), None));
    assert_eq!(decided(&overridden, "benign"), ("blast".into(), None));

    let csv = edge(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "csv",
        "--min-confidence",
        "0.99",
        pics.join("benign.png").to_str().unwrap(),
        pics.join("sure.png").to_str().unwrap(),
    ]);
    assert!(csv.status.success());
    let text = String::from_utf8_lossy(&csv.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "path,label,confidence,Benign,Pro,error,decision,uncertain_reason,unfamiliarity"
    );
    // A model without a score: the last column is empty.
    assert!(lines[1].ends_with(",,uncertain,low_confidence,"), "{text}");
    assert!(lines[2].ends_with(",,normal,,"), "{text}");

    let table = edge(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        pics.join("even.png").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("uncertain (low_confidence)"));

    let bad = edge(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--min-confidence",
        "1.5",
        pics.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("min_confidence") && err.contains("1.5"),
        "{err}"
    );
}

/// `edge classify --model MODEL EXTRA... IMG`.
fn classify_one(img: &Path, model: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["classify", "--model", model.to_str().unwrap()];
    a.extend_from_slice(extra);
    a.push(img.to_str().unwrap());
    edge(&a)
}

#[test]
fn unusable_models_get_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    images(&dir.path().join("imgs"));
    let img = dir.path().join("imgs/red.png");
    let run = |model: &Path, extra: &[&str]| classify_one(&img, model, extra);

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
        // 100000² inputs would be 120 GB of f32 per picture: refused before any allocation.
        let out = classify_one(&img, model, extra);
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
fn evaluate_reports_the_operating_point_from_the_flags_and_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("benign-pro.onnx");
    write_model_with(&model, ["Benign", "Pro"], 2.0, true);
    // Benign: 3 reddish (0.94); Pro: 3 bluish (0.94) and 1 grey (0.5, uncertain).
    let data = dir.path().join("clinic");
    for (class, colours) in [
        (
            "Benign",
            vec![[180, 100, 90], [182, 100, 90], [184, 100, 90]],
        ),
        (
            "Pro",
            vec![
                [90, 100, 180],
                [90, 100, 182],
                [90, 100, 184],
                [128, 128, 128],
            ],
        ),
    ] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for (i, c) in colours.into_iter().enumerate() {
            image::RgbImage::from_pixel(10, 10, image::Rgb(c))
                .save(data.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let evaluate = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "evaluate",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--slides",
            "200",
        ];
        args.extend_from_slice(extra);
        let run = edge(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let doc =
            leukoscope_model::evaluation_report::read_report(&out.join("report.json")).unwrap();
        (doc, String::from_utf8_lossy(&run.stdout).into_owned())
    };
    let pair = |p: &leukoscope_model::metrics::Proportion| (p.successes, p.n);

    let (doc, stdout) = evaluate(&dir.path().join("default"), &[]);
    let op = doc.operating_point.unwrap();
    assert_eq!(op.decision.min_confidence, 0.8);
    assert_eq!(pair(&op.sensitivity), (3, 4));
    assert_eq!(pair(&op.sensitivity_answered), (3, 3));
    assert_eq!(pair(&op.specificity), (3, 3));
    assert_eq!(pair(&op.abstention), (1, 7));
    assert_eq!(pair(&op.per_class[1].abstention), (1, 4));
    assert!(op.sensitivity.low < 0.75 && op.sensitivity.high > 0.75);
    let sim = doc.slide_simulation.unwrap();
    assert_eq!(sim.config.slides_per_condition, 200);
    assert_eq!(sim.config.seed, 17);
    assert_eq!(sim.specificity().unwrap().value, Some(1.0));
    assert!(doc.calibration.is_some());
    assert!(dir.path().join("default/reliability.png").exists());
    assert!(stdout.contains("sensitivity 75.00 %"), "{stdout}");
    assert!(stdout.contains("seed 17"), "{stdout}");

    // Above every picture's confidence, everything is uncertain: nothing detected, every
    // slide uncertain.
    let (doc, _) = evaluate(&dir.path().join("strict"), &["--min-confidence", "0.99"]);
    let op = doc.operating_point.unwrap();
    assert_eq!(pair(&op.sensitivity), (0, 4));
    assert_eq!(pair(&op.abstention), (7, 7));
    let sim = doc.slide_simulation.unwrap();
    assert!(
        sim.benign
            .iter()
            .chain(&sim.blast)
            .all(|c| c.uncertain.value == Some(1.0))
    );

    // The slide rule comes from the config: 40 good fields needed, 30 per slide → insufficient.
    let config = dir.path().join("device.toml");
    std::fs::write(
        &config,
        "[decision]\nmin_confidence = 0.9\n[slide.rule]\nmin_good_fields = 40\n",
    )
    .unwrap();
    let (doc, _) = evaluate(
        &dir.path().join("config"),
        &["--config", config.to_str().unwrap(), "--slide-seed", "3"],
    );
    let op = doc.operating_point.unwrap();
    assert_eq!(op.decision.min_confidence, 0.9);
    assert!(
        op.settings_from.contains("device.toml"),
        "{}",
        op.settings_from
    );
    let sim = doc.slide_simulation.unwrap();
    assert_eq!((sim.rule.min_good_fields, sim.config.seed), (40, 3));
    assert_eq!(sim.specificity().unwrap().value, Some(0.0));
    assert_eq!(sim.benign.unwrap().insufficient.value, Some(1.0));
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

#[test]
fn a_model_that_scores_unfamiliarity_calls_unfamiliar_pictures_uncertain() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("familiar.onnx");
    let threshold = write_familiar_model(&model, ["Benign", "Pro"], 60.0);
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    let write = |name: &str, jpeg: &[u8]| std::fs::write(pics.join(name), jpeg).unwrap();
    write("benign.jpg", &held_field(21, 20, 1, 3)[0]);
    write("blast.jpg", &held_field(22, -20, 1, 3)[0]);
    // The same smears in a colour the score was never fitted on: still a confident label.
    write(
        "green-benign.jpg",
        &held_tinted_field(21, 20, UNFAMILIAR_GREEN, 1, 3)[0],
    );
    write(
        "green-blast.jpg",
        &held_tinted_field(22, -20, UNFAMILIAR_GREEN, 1, 3)[0],
    );

    let rows = classify_rows(&model, &pics, &[]);
    let score = |name: &str| rows[name]["unfamiliarity"].as_f64().unwrap() as f32;
    for name in ["benign", "blast"] {
        assert!(score(name) <= threshold, "{name}: {}", score(name));
        assert!(rows[name]["uncertain_reason"].is_null(), "{name}");
    }
    assert_eq!(rows["benign"]["decision"], "normal");
    assert_eq!(rows["blast"]["decision"], "blast");
    for name in ["green-benign", "green-blast"] {
        let r = &rows[name];
        assert!(score(name) > threshold, "{name}: {}", score(name));
        assert!(r["confidence"].as_f64().unwrap() > 0.9, "{r}");
        assert_eq!(
            (r["decision"].as_str(), r["uncertain_reason"].as_str()),
            (Some("uncertain"), Some("unfamiliar")),
            "{r}"
        );
    }
    // The label stays what the model said.
    assert_eq!(rows["green-blast"]["label"], "Pro");

    let csv = edge(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "csv",
        pics.join("green-blast.jpg").to_str().unwrap(),
        pics.join("benign.jpg").to_str().unwrap(),
    ]);
    assert!(csv.status.success());
    let text = String::from_utf8_lossy(&csv.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines[0].last(), Some(&"unfamiliarity"));
    let (unfamiliar, familiar) = (&lines[1], &lines[2]);
    assert_eq!(unfamiliar[unfamiliar.len() - 2], "unfamiliar", "{text}");
    let value = |row: &Vec<&str>| row.last().unwrap().parse::<f32>().unwrap();
    assert!(value(unfamiliar) > threshold, "{text}");
    assert!(value(familiar) <= threshold, "{text}");
    assert_eq!(familiar[familiar.len() - 3], "normal", "{text}");

    let table = edge(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        pics.join("green-benign.jpg").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("uncertain (unfamiliar)"));
}

#[test]
fn evaluate_counts_unfamiliar_pictures_as_abstentions_reported_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("familiar.onnx");
    write_familiar_model(&model, ["Benign", "Pro"], 60.0);
    // Benign: 4 familiar, 2 green (unfamiliar); Pro: 3 familiar, 3 green.
    let data = dir.path().join("clinic");
    for (class, shift, familiar, green) in [("Benign", 20, 4, 2), ("Pro", -20, 3, 3)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..familiar + green {
            let tint = if i < familiar { 0 } else { UNFAMILIAR_GREEN };
            let jpeg = &held_tinted_field(40 + i, shift, tint, 1, i)[0];
            std::fs::write(data.join(class).join(format!("{i}.jpg")), jpeg).unwrap();
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
        "--slides",
        "50",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rejected as unfamiliar (abstentions): 41.67 %")
            && stdout.contains("Benign 2/6, Pro 3/6"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    let op = &json["operating_point"];
    assert_eq!(
        (&op["unfamiliar"]["successes"], &op["unfamiliar"]["n"]),
        (&serde_json::json!(5), &serde_json::json!(12))
    );
    assert_eq!(op["abstention"]["successes"], 5);
    assert_eq!(op["per_class"][1]["rejected_unfamiliar"], 3);
    // Blast pictures rejected as unfamiliar are misses, not detections.
    assert_eq!(
        (&op["sensitivity"]["successes"], &op["sensitivity"]["n"]),
        (&serde_json::json!(3), &serde_json::json!(6))
    );
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("**Rejected as unfamiliar**"), "{md}");
    assert!(md.contains("| Pro | 6 | 3 |"), "{md}");
    assert!(md.contains("slides called **unfamiliar**"), "{md}");
}

#[test]
fn acceptance_accepts_a_site_like_the_training_pictures_and_refuses_an_unfamiliar_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("familiar.onnx");
    write_familiar_model(&model, ["Benign", "Pro"], 60.0);
    // A site labels only blast or normal: 25 of each; `green` of each group in another tint.
    let site = |name: &str, green: u64| {
        let data = dir.path().join(name);
        for (group, shift) in [("normal", 20), ("blast", -20)] {
            std::fs::create_dir_all(data.join(group)).unwrap();
            for i in 0..25u64 {
                let tint = if i < green { UNFAMILIAR_GREEN } else { 0 };
                let jpeg = &held_tinted_field(300 + i, shift, tint, 1, i)[0];
                std::fs::write(data.join(group).join(format!("{i}.jpg")), jpeg).unwrap();
            }
        }
        data
    };
    let accept = |data: &Path| {
        let out_dir = data.with_extension("report");
        let out = edge(&[
            "evaluate",
            "--acceptance",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out_dir.join("acceptance.json")).unwrap(),
        )
        .unwrap();
        (out, json)
    };

    let (out, json) = accept(&site("familiar", 0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("# Site acceptance: ACCEPTED"), "{stdout}");
    assert_eq!(json["accepted"], true);
    assert_eq!(json["operating_point"]["sensitivity"]["n"], 25);
    assert_eq!(json["operating_point"]["specificity"]["n"], 25);

    // 6 of 25 per group unlike anything the model was fitted on: 24 % unfamiliar.
    let (out, json) = accept(&site("another-microscope", 6));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("# Site acceptance: NOT ACCEPTED"),
        "{stdout}"
    );
    assert_eq!(json["accepted"], false);
    let failed: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["met"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(failed.contains(&"unfamiliar to the model"), "{failed:?}");
    assert_eq!(json["operating_point"]["unfamiliar"]["successes"], 12);
}
