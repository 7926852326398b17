//! `trainer uncertainty` on a small model and synthetic pictures: the written file computes the
//! score the contract describes, refuses a second fit, and flags a picture unlike the classes.

mod common;

use std::path::Path;

use common::{synthetic_dataset, text, trainer};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::contract::ModelContract;
use leukoscope_model::manifest::{ManifestRow, Split, sha256_hex};
use leukoscope_model::onnx::graph::{GraphBuilder, value_info};
use leukoscope_model::preprocess::image_to_input;
use prost::Message;

/// image → GlobalAveragePool → Flatten (3 features: the mean colour) → Gemm → Softmax.
fn tiny_model(path: &Path) {
    let mut g = GraphBuilder::new();
    let pooled = g.node("GlobalAveragePool", &["image"], vec![], None);
    let flat = g.flatten(&pooled);
    let w = vec![2.0, -1.0, 0.5, -1.0, 2.0, 0.3, 0.5, 0.5, -2.0];
    let logits = g.linear(&flat, (3, 3, w), vec![0.0; 3], Some("logits"));
    g.softmax(&logits, "probabilities");
    let labels = ["class0", "class1", "class2"].map(String::from).to_vec();
    let contract = ModelContract::new(labels, 16);
    let input = value_info("image", &[None, Some(3), Some(16), Some(16)]);
    let outputs = vec![
        value_info("probabilities", &[None, Some(3)]),
        value_info("logits", &[None, Some(3)]),
    ];
    let model = g.finish(input, outputs, contract.to_metadata(), "test");
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

/// Every 4th picture of a class in val, the next in test, the rest in train.
fn manifest(data: &Path, path: &Path) {
    let mut rows = Vec::new();
    for class in ["class0", "class1", "class2"] {
        let mut files: Vec<_> = std::fs::read_dir(data.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for (i, f) in files.iter().enumerate() {
            rows.push(ManifestRow {
                file: format!("{class}/{}", f.file_name().unwrap().to_string_lossy()),
                sha256: sha256_hex(&std::fs::read(f).unwrap()),
                class: class.into(),
                split: match i % 4 {
                    0 => Split::Val,
                    1 => Split::Test,
                    _ => Split::Train,
                },
            });
        }
    }
    leukoscope_model::manifest::write(path, &rows).unwrap();
}

#[test]
fn the_written_model_scores_unfamiliar_pictures_and_carries_its_temperature() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 3, 24, 16, 9);
    let model = dir.path().join("f32.onnx");
    let split = dir.path().join("manifest.csv");
    let out = dir.path().join("calibrated.onnx");
    tiny_model(&model);
    manifest(&data, &split);
    let args = |out: &Path| {
        [
            "uncertainty",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--manifest",
            split.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
    };
    let o = trainer(&args(&out).each_ref().map(String::as_str));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("unfamiliarity threshold"),
        "{}",
        text(&o)
    );

    let classifier = OnnxClassifier::load(&out, &Default::default()).unwrap();
    let contract = classifier.contract().clone();
    let u = contract
        .unfamiliarity
        .clone()
        .expect("the contract names the score");
    let t = contract
        .temperature
        .expect("the contract names the temperature");
    assert!(
        t > 0.0 && u.threshold > 0.0 && u.validation_rejected <= 0.01,
        "{u:?}"
    );
    assert_eq!((u.output.as_str(), u.dims), ("unfamiliarity", 3));

    // A picture of the training kind is familiar; a green one is not.
    let class0 = image::open(data.join("class0/002.png")).unwrap().to_rgb8();
    let input = image_to_input(&class0, &contract).unwrap();
    let p = classifier.predict(&input).unwrap();
    assert!(!u.is_unfamiliar(p.unfamiliarity.unwrap()), "{p:?} vs {u:?}");
    let green = image::RgbImage::from_pixel(16, 16, image::Rgb([20, 230, 20]));
    let p = classifier
        .predict(&image_to_input(&green, &contract).unwrap())
        .unwrap();
    assert!(u.is_unfamiliar(p.unfamiliarity.unwrap()), "{p:?} vs {u:?}");

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("calibrated.onnx.uncertainty.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["train_pictures"], 36);
    assert_eq!(report["validation_pictures"], 18);
    // The written temperature is the fit, kept at or above --min-temperature (default 1) ...
    let fitted = report["fitted_temperature"].as_f64().unwrap();
    let written = report["temperature"].as_f64().unwrap();
    assert_eq!(written, fitted.max(1.0), "{report}");
    assert!((f64::from(t) - written).abs() < 1e-6, "{t} vs {written}");
    // ... and a floor above the fit is what the file carries.
    let floored = dir.path().join("floored.onnx");
    let floor = (2.0 * fitted.max(1.0)) as f32;
    let mut with_floor = args(&floored).to_vec();
    with_floor.extend(["--min-temperature".to_string(), floor.to_string()]);
    let o = trainer(&with_floor.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let kept = OnnxClassifier::load(&floored, &Default::default())
        .unwrap()
        .contract()
        .temperature
        .unwrap();
    assert_eq!(kept, floor);

    // A file that already carries them is refused, naming it.
    let again = dir.path().join("again.onnx");
    let mut second = args(&again);
    second[2] = out.to_str().unwrap().into();
    let o = trainer(&second.each_ref().map(String::as_str));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already carries"),
        "{}",
        text(&o)
    );
    assert!(!again.exists());
}

#[test]
fn augmented_copies_join_the_fit_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 3, 24, 16, 9);
    let model = dir.path().join("f32.onnx");
    let split = dir.path().join("manifest.csv");
    tiny_model(&model);
    manifest(&data, &split);
    let fit = |name: &str, copies: &str| {
        let out = dir.path().join(name);
        let o = trainer(&[
            "uncertainty",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--manifest",
            split.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--augmented-copies",
            copies,
            "--seed",
            "3",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{name}.uncertainty.json"))).unwrap(),
        )
        .unwrap();
        (std::fs::read(&out).unwrap(), report)
    };
    let (plain, plain_report) = fit("plain.onnx", "0");
    let (a, report) = fit("a.onnx", "2");
    let (b, _) = fit("b.onnx", "2");
    assert_eq!(a, b, "the same seed gives the same file");
    assert_ne!(a, plain, "the copies change the fit");
    assert_eq!(report["augmented_copies"], 2);
    assert_eq!(report["train_pictures"], plain_report["train_pictures"]);
    assert_eq!(report["validation_pictures"], 18);
}
