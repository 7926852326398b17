//! `trainer fit` / `trainer evaluate` end to end on seeded synthetic data.

mod common;

use common::{report, synthetic_dataset, text, trainer};
use std::path::Path;

#[test]
fn a_tiny_cnn_learns_visibly_different_classes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 3, 40, 32, 1);
    let run = dir.path().join("run");
    let out = trainer(&[
        "fit",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "cnn",
        "--size",
        "32",
        "--epochs",
        "8",
        "--batch",
        "8",
        "--lr",
        "1e-3",
        "--rotation",
        "10",
        "--shift",
        "0.1",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&run, "report");
    let accuracy = r["metrics"]["accuracy"].as_f64().unwrap();
    // 12 test images over 3 classes: chance is 1/3.
    assert!(accuracy >= 0.8, "test accuracy {accuracy}\n{}", text(&out));
    for f in [
        "report.md",
        "confusion_matrix.png",
        "roc.png",
        "training_curves.png",
    ] {
        assert!(run.join("report").join(f).exists(), "{f} missing");
    }
    // The manifest lists every image once with its split.
    let manifest = std::fs::read_to_string(run.join("manifest.csv")).unwrap();
    assert_eq!(manifest.lines().count(), 1 + 120);
    assert_eq!(
        manifest.lines().filter(|l| l.ends_with(",test")).count(),
        12
    );

    // The exported file carries the contract and the run's facts, and edge runs it.
    let onnx = dir.path().join("export/model.onnx");
    let out = trainer(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        onnx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let model =
        leukoscope_model::classifier::OnnxClassifier::load(&onnx, &Default::default()).unwrap();
    assert_eq!(model.contract().labels, vec!["class0", "class1", "class2"]);
    assert_eq!(model.contract().input_size_string(), "32x32");
    let meta: std::collections::HashMap<_, _> = model.metadata().iter().cloned().collect();
    assert_eq!(meta["leukoscope.model_family"], "cnn");
    assert!(meta["leukoscope.run_id"].starts_with("run-"));
    let reported: f64 = meta["leukoscope.test_accuracy"].parse().unwrap();
    assert!((reported - accuracy).abs() < 1e-6);
    let img = image::open(data.join("class1/000.png"))
        .unwrap()
        .into_rgb8();
    let input = leukoscope_model::preprocess::image_to_input(&img, model.contract()).unwrap();
    let p = model.probabilities(&input).unwrap();
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);

    // Evaluating another labeled folder with the model's labels works; unknown labels do not.
    let other = dir.path().join("other");
    synthetic_dataset(&other, 3, 6, 48, 2);
    let out = trainer(&[
        "evaluate",
        "--run",
        run.to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report(&run, "report-other")["metrics"]["samples"], 18);
    std::fs::rename(other.join("class2"), other.join("Lymphoma")).unwrap();
    let out = trainer(&[
        "evaluate",
        "--run",
        run.to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Lymphoma") && err.contains("class0"), "{err}");
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 2, 15, 24, 3);
    let args = |out: &str, epochs: &str| -> Vec<String> {
        [
            "fit",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "mobilenetv2",
            "--width",
            "0.35",
            "--size",
            "24",
            "--batch",
            "8",
            "--epochs",
            epochs,
            "--schedule",
            "cosine",
            "--optimizer",
            "adamax",
            "--sampling",
            "balanced",
            "--no-evaluate",
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let straight = dir.path().join("straight");
    let interrupted = dir.path().join("interrupted");
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = trainer(&refs);
        assert!(out.status.success(), "{}", text(&out));
    };
    run(args(straight.to_str().unwrap(), "3"));
    let mut first = args(interrupted.to_str().unwrap(), "3");
    first.extend(["--stop-after".to_string(), "2".to_string()]);
    run(first);
    // A resume needs only the run folder: everything else comes from its run.json.
    run(vec![
        "fit".into(),
        "--resume".into(),
        "--out".into(),
        interrupted.to_str().unwrap().into(),
    ]);
    let history = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("history.json")).unwrap()).unwrap()
    };
    let (a, b) = (history(&straight), history(&interrupted));
    assert_eq!(a.as_array().unwrap().len(), 3);
    for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        for key in ["train_loss", "valid_loss", "learning_rate"] {
            let (x, y) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{key}: {x} vs {y}"
            );
        }
    }
    // Starting over in a folder that holds a run is refused.
    let out = trainer(
        &args(straight.to_str().unwrap(), "3")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
}

#[test]
fn weight_averaging_makes_the_mean_the_runs_model_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 2, 15, 24, 4);
    let fit = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "fit",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(&[
            "--model",
            "mobilenetv2",
            "--width",
            "0.35",
            "--head-units",
            "16",
            "--size",
            "24",
            "--batch",
            "8",
            "--epochs",
            "3",
            "--lr",
            "1e-3",
            "--average-from",
            "2",
            "--patience",
            "0",
        ]);
        a.extend_from_slice(extra);
        trainer(&a)
    };
    let straight = dir.path().join("straight");
    let out = fit(&straight, &[]);
    assert!(out.status.success(), "{}", text(&out));
    // Epochs 2 and 3 are averaged: the validation loss of their mean, from the log.
    let average_val_loss = |out: &std::process::Output| -> f64 {
        let log = String::from_utf8_lossy(&out.stderr);
        let line = log
            .lines()
            .find(|l| l.starts_with("weight average of 2 epoch(s): val loss "))
            .unwrap_or_else(|| panic!("no weight-average line in\n{log}"));
        line.split("val loss ")
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no loss in {line}"))
    };
    let a = average_val_loss(&out);
    let mean = std::fs::read(straight.join("model-best.bpk")).unwrap();
    let best = std::fs::read(straight.join("model-best-epoch.bpk")).unwrap();
    assert_ne!(
        mean, best,
        "the mean replaced the best epoch as the run's model"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("average.json")).unwrap())
            .unwrap();
    assert_eq!(summary["snapshots"], 2, "{summary}");
    assert_eq!(summary["from_epoch"], 2, "{summary}");
    // The test report says which weights it evaluated.
    let report = std::fs::read_to_string(straight.join("report/report.md")).unwrap();
    assert!(
        report.contains("mean of the weights at the end of 2 epochs from epoch 2"),
        "{report}"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(straight.join("checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["averaged"], 2, "{state}");

    // Interrupted after epoch 2 (one snapshot in the average), then resumed: the same mean.
    let interrupted = dir.path().join("interrupted");
    let out = fit(&interrupted, &["--stop-after", "2", "--no-evaluate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(interrupted.join("checkpoint/average.bpk").exists());
    // Until training ends the run's model is still its best single epoch.
    assert!(!interrupted.join("average.json").exists());
    assert_eq!(
        std::fs::read(interrupted.join("model-best.bpk")).unwrap(),
        std::fs::read(interrupted.join("model-best-epoch.bpk")).unwrap()
    );
    let out = trainer(&[
        "fit",
        "--resume",
        "--no-evaluate",
        "--out",
        interrupted.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let b = average_val_loss(&out);
    assert!(interrupted.join("average.json").exists());
    assert!((a - b).abs() <= 1e-4 * a.max(1.0), "{a} vs {b}");
}

#[test]
fn a_run_can_start_from_an_earlier_runs_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 2, 12, 24, 8);
    let fit = |out: &Path, size: &str, extra: &[&str]| {
        one_epoch(&data, out, size, &["--model", "cnn"], extra)
    };
    let first = dir.path().join("first");
    let out = fit(&first, "24", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let second = dir.path().join("second");
    let out = fit(&second, "24", &["--init-from", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("init-from: started from"));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["init_from"], first.to_str().unwrap());
    // Another input size is another model: refused, naming the earlier run.
    let third = dir.path().join("third");
    let out = fit(&third, "32", &["--init-from", first.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--init-from") && err.contains("24 px"),
        "{err}"
    );
    // From an exported ONNX file (a shipped model, say): the same checks through its contract.
    let onnx = dir.path().join("first.onnx");
    let out = trainer(&[
        "export",
        "--run",
        first.to_str().unwrap(),
        "--out",
        onnx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let fourth = dir.path().join("fourth");
    let out = fit(&fourth, "24", &["--init-from", onnx.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("init-from: started from"));
    let fifth = dir.path().join("fifth");
    let out = fit(&fifth, "32", &["--init-from", onnx.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("first.onnx") && err.contains("contract"),
        "{err}"
    );
}

#[test]
fn test_group_holds_out_whole_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 2, 12, 24, 9);
    // Three "patients" per class, four pictures each: p0_000.png, p1_001.png, ...
    for class in ["class0", "class1"] {
        for i in 0..12 {
            let d = data.join(class);
            std::fs::rename(
                d.join(format!("{i:03}.png")),
                d.join(format!("p{}{}_{i:03}.png", &class[5..], i % 3)),
            )
            .unwrap();
        }
    }
    let fit = |out: &std::path::Path, pattern: &str| {
        trainer(&[
            "fit",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "cnn",
            "--size",
            "24",
            "--epochs",
            "1",
            "--batch",
            "8",
            "--test-fraction",
            "0.3",
            "--no-evaluate",
            "--test-group",
            pattern,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let run = dir.path().join("run");
    let out = fit(&run, r"(p\d+)_");
    assert!(out.status.success(), "{}", text(&out));
    let manifest = std::fs::read_to_string(run.join("manifest.csv")).unwrap();
    let mut splits: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let subject = f[0].split('/').nth(1).unwrap().split('_').next().unwrap();
        splits
            .entry(subject.to_string())
            .or_default()
            .insert(f[3].to_string());
    }
    let held_out: Vec<_> = splits.iter().filter(|(_, s)| s.contains("test")).collect();
    assert_eq!(held_out.len(), 2, "one subject per class: {splits:?}");
    assert!(held_out.iter().all(|(_, s)| s.len() == 1), "{splits:?}");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["test_group"], r"(p\d+)_");

    let out = fit(&dir.path().join("bad"), "(unclosed");
    assert!(!out.status.success());
    assert!(text(&out).contains("--test-group"), "{}", text(&out));
}

#[test]
fn bad_datasets_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fit = |strict: bool| {
        let out = dir.path().join(format!("run{}", rand_suffix()));
        let mut a = vec![
            "fit",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "cnn",
            "--size",
            "16",
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        if strict {
            a.push("--strict");
        }
        trainer(&a)
    };
    let out = fit(false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no class folders"),
        "{}",
        text(&out)
    );

    synthetic_dataset(&data, 1, 8, 16, 4);
    let out = fit(false);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only one class"),
        "{}",
        text(&out)
    );

    synthetic_dataset(&data, 2, 8, 16, 5);
    std::fs::write(data.join("class1/notes.txt"), "lab notes").unwrap();
    let good = std::fs::read(data.join("class0/000.png")).unwrap();
    std::fs::write(data.join("class0/truncated.png"), &good[..good.len() / 2]).unwrap();
    std::fs::write(data.join("class0/corrupt.jpg"), b"\xff\xd8\xff\xe0garbage").unwrap();
    let out = fit(true);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--strict"),
        "{}",
        text(&out)
    );
    let out = fit(false);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped 3 unreadable"), "{err}");
    assert!(
        err.contains("notes.txt") && err.contains("corrupt.jpg"),
        "{err}"
    );

    let out = trainer(&[
        "fit",
        "--data",
        "/nonexistent/smears",
        "--model",
        "cnn",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/smears"));
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn mobilenetv2_can_continue_at_a_larger_input_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 2, 12, 32, 10);
    let model = [
        "--model",
        "mobilenetv2",
        "--width",
        "0.35",
        "--head-units",
        "16",
    ];
    let fit = |out: &Path, size: &str, extra: &[&str]| one_epoch(&data, out, size, &model, extra);
    let first = dir.path().join("first");
    let out = fit(&first, "24", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let second = dir.path().join("second");
    let out = fit(&second, "32", &["--init-from", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("init-from: started from"));
    let contract: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("contract.json")).unwrap())
            .unwrap();
    assert_eq!(contract["input_height"], 32, "{contract}");
}

/// `trainer fit` for one epoch of `model` (its flags) on `data` at `size` px, without the test
/// evaluation, plus `extra` flags.
fn one_epoch(
    data: &Path,
    out: &Path,
    size: &str,
    model: &[&str],
    extra: &[&str],
) -> std::process::Output {
    let mut a = vec!["fit", "--data", data.to_str().unwrap()];
    a.extend_from_slice(model);
    a.extend_from_slice(&[
        "--size",
        size,
        "--epochs",
        "1",
        "--batch",
        "8",
        "--no-evaluate",
        "--out",
        out.to_str().unwrap(),
    ]);
    a.extend_from_slice(extra);
    trainer(&a)
}
