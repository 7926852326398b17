//! Writes int8 models, evaluation inputs and tract's probabilities for the peer-runtime check
//! (`tests/quantize_conformance.py`, run by .ci/run) when LEUKOSCOPE_CONFORMANCE_DIR is set.
//! Without it, checks that tract runs each variant and gives probability distributions.

mod common;

use common::{LABELS, labeled_folder, picture, write_model};
use leukoscope_model::classifier::OnnxClassifier;
use quantize::calibrate::ImageSource;
use quantize::pipeline::{Options, Silent, run};
use quantize::ranges::{ActivationType, Method};
use quantize::rewrite::Depthwise;

fn variant(name: &str, activations: ActivationType, depthwise: Depthwise, method: Method) {
    let d = tempfile::tempdir().unwrap();
    let f32_path = write_model(d.path(), "m.onnx", 21);
    let cal = labeled_folder(&d.path().join("cal"), 10);
    let out = d.path().join(format!("{name}.onnx"));
    let opts = Options {
        calibration: ImageSource {
            dir: cal,
            manifest: None,
        },
        samples: 40,
        method,
        activations,
        per_tensor_weights: false,
        depthwise,
        keep_float: vec![],
        evaluation: None,
        auto: None,
        bench_runs: 0,
        threshold_pictures: None,
    };
    run(&f32_path, &out, &opts, &Silent).unwrap();
    let model = OnnxClassifier::load(&out, &Default::default()).unwrap();
    let mut cases = Vec::new();
    // 100 evaluation pictures not seen in calibration (other seeds).
    for i in 0..100u64 {
        let img = picture((i % LABELS.len() as u64) as usize, 500 + i);
        let x = leukoscope_model::preprocess::image_to_input(&img, model.contract()).unwrap();
        let p = model.probabilities(&x).unwrap();
        let sum: f32 = p.iter().sum();
        assert!(
            p.iter().all(|v| v.is_finite()) && (sum - 1.0).abs() < 1e-4,
            "{p:?}"
        );
        cases.push(serde_json::json!({ "input": x, "tract": p }));
    }
    if let Some(dir) = std::env::var_os("LEUKOSCOPE_CONFORMANCE_DIR") {
        // Each conformance test writes its own subfolder, so CI sets one folder for the whole run.
        let dir = std::path::PathBuf::from(dir).join("quantize");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&out, dir.join(format!("{name}.onnx"))).unwrap();
        let s = common::SIZE as usize;
        let doc = serde_json::json!({ "shape": [1, 3, s, s], "cases": cases });
        std::fs::write(dir.join(format!("{name}.json")), doc.to_string()).unwrap();
    }
}

#[test]
fn u8_activations_float_depthwise() {
    variant(
        "int8-u8",
        ActivationType::U8,
        Depthwise::Float,
        Method::MinMax,
    );
}

#[test]
fn i8_activations_int8_depthwise() {
    variant(
        "int8-i8-dw",
        ActivationType::I8,
        Depthwise::Int8,
        Method::Entropy,
    );
}
