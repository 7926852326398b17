//! burn (inference mode) and tract on the exported ONNX file give the same answers.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use image::RgbImage;
use leukoscope_model::contract::ModelContract;
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tract_onnx::prelude::*;
use trainer::export::to_onnx;
use trainer::model::{Classifier, EfficientNetVariant, ModelSpec};

const SIZE: usize = 48;

/// A model whose BatchNorm statistics and weights moved away from their initial values (a few
/// training steps), returned in inference mode.
fn trained(spec: &ModelSpec, classes: usize) -> Classifier {
    let device = Device::flex().autodiff();
    device.seed(7);
    let mut model = spec.init(classes, SIZE, &device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    for step in 0..3 {
        let x = Tensor::<4>::random([8, 3, SIZE, SIZE], Distribution::Normal(0.5, 2.0), &device);
        let y = Tensor::<1, Int>::from_data(
            TensorData::new((0..8).map(|i| ((i + step) % classes) as i64).collect(), [8]),
            &device,
        );
        let grads =
            GradientsParams::from_grads(loss_fn.forward(model.forward(x), y).backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    model.valid()
}

/// 16 random inputs and 16 inputs made from pictures through edge's preprocessing.
fn inputs(contract: &ModelContract) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(3);
    let n = contract.input_len();
    let mut out: Vec<Vec<f32>> = (0..16)
        .map(|_| (0..n).map(|_| rng.random_range(-2.5f32..2.5)).collect())
        .collect();
    for i in 0..16u32 {
        let img = RgbImage::from_fn(80 + i, 64, |x, y| {
            image::Rgb([(x * 3 + i * 7) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        out.push(leukoscope_model::preprocess::image_to_input(&img, contract).unwrap());
    }
    out
}

fn check(spec: ModelSpec) {
    let classes = 4;
    let contract = ModelContract::new(
        ["Benign", "Early", "Pre", "Pro"].map(String::from).to_vec(),
        SIZE as u32,
    );
    let model = trained(&spec, classes);
    let bytes = to_onnx(&model, &contract, vec![]).unwrap().encode_to_vec();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(&bytes))
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, SIZE, SIZE]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let device = Device::flex();
    let mut worst = 0.0f32;
    let mut reference = Vec::new();
    for input in inputs(&contract) {
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [1, 3, SIZE, SIZE]), &device);
        let burn_p = model
            .probabilities(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let t = tract_ndarray::Array4::from_shape_vec((1, 3, SIZE, SIZE), input.clone()).unwrap();
        let out = plan
            .run(tvec!(tract_onnx::prelude::Tensor::from(t).into()))
            .unwrap();
        let tract_p: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert_eq!(tract_p.len(), classes);
        let argmax = |v: &[f32]| leukoscope_model::metrics::argmax(v);
        assert_eq!(
            argmax(&burn_p),
            argmax(&tract_p),
            "{burn_p:?} vs {tract_p:?}"
        );
        for (a, b) in burn_p.iter().zip(&tract_p) {
            worst = worst.max((a - b).abs());
        }
        reference.push(serde_json::json!({ "input": input, "burn": burn_p }));
    }
    eprintln!("{}: max |Δp| burn vs tract = {worst:e}", spec.describe());
    // For the peer-runtime check (tests/onnx_conformance.py, run by .ci/run): the file, the
    // inputs and burn's probabilities.
    if let Some(dir) = std::env::var_os("LEUKOSCOPE_CONFORMANCE_DIR") {
        // Each conformance test writes its own subfolder, so CI sets one folder for the whole run.
        let dir = std::path::PathBuf::from(dir).join("export");
        std::fs::create_dir_all(&dir).unwrap();
        let name = match spec {
            ModelSpec::Mobilenetv2 { .. } => "mobilenetv2".to_string(),
            ModelSpec::Efficientnet { variant, .. } => format!("efficientnet-{}", variant.name()),
            ModelSpec::Cnn { .. } => "cnn".to_string(),
        };
        std::fs::write(dir.join(format!("{name}.onnx")), &bytes).unwrap();
        let doc = serde_json::json!({ "shape": [1, 3, SIZE, SIZE], "cases": reference });
        std::fs::write(dir.join(format!("{name}.json")), doc.to_string()).unwrap();
    }
    assert!(worst <= 1e-4, "max |Δp| {worst}");
}

#[test]
fn mobilenetv2_matches_in_tract() {
    check(ModelSpec::Mobilenetv2 {
        width: 0.35,
        head_units: 32,
        dropout: 0.2,
    });
}

fn efficientnet(variant: EfficientNetVariant, dropout: f64) -> ModelSpec {
    ModelSpec::Efficientnet {
        variant,
        head_units: 32,
        dropout,
        stochastic_depth: 0.2,
    }
}

#[test]
fn efficientnet_b0_matches_in_tract() {
    check(efficientnet(EfficientNetVariant::B0, 0.2));
}

#[test]
fn efficientnet_b3_matches_in_tract() {
    check(efficientnet(EfficientNetVariant::B3, 0.3));
}

#[test]
fn cnn_matches_in_tract() {
    check(ModelSpec::Cnn { dropout: 0.5 });
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

/// `fit --init-from FILE.onnx`: the weights read back from an exported file give the file's
/// answers in inference mode and, BatchNorm re-derived from its statistics, the same answers in
/// training mode on the pictures the statistics came from.
fn round_trip(spec: ModelSpec) {
    let contract = ModelContract::new(
        ["Benign", "Early", "Pre", "Pro"].map(String::from).to_vec(),
        SIZE as u32,
    );
    let model = trained(&spec, 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    trainer::export::save(&to_onnx(&model, &contract, vec![]).unwrap(), &path).unwrap();
    let calibration = inputs(&contract);
    let device = Device::flex().autodiff();
    device.seed(99);
    let fresh = spec.init(4, SIZE, &device);
    let loaded =
        trainer::import::load_onnx_weights(fresh, &path, &contract, &calibration, &device).unwrap();
    let n = calibration.len();
    let batch = |device: &Device| {
        Tensor::<4>::from_data(
            TensorData::new(calibration.concat(), [n, 3, SIZE, SIZE]),
            device,
        )
    };
    let values = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    let expected = values(model.probabilities(batch(&Device::flex())));
    let max_diff = |got: &[f32]| max_abs_diff(got, &expected);
    let inference = values(loaded.clone().valid().probabilities(batch(&Device::flex())));
    assert!(
        max_diff(&inference) <= 1e-4,
        "inference mode: max |Δp| {}",
        max_diff(&inference)
    );
    if let ModelSpec::Mobilenetv2 { .. } = spec {
        // (EfficientNet's stochastic depth makes its training mode random, so only MobileNetV2
        // is compared in training mode.)
        let training = values(loaded.probabilities(batch(&device)));
        assert!(
            max_diff(&training) <= 1e-2,
            "training mode: max |Δp| {}",
            max_diff(&training)
        );
    }

    // Another input size: MobileNetV2 (global average pool) takes the weights and measures its
    // BatchNorm statistics at the new size; the compact CNN's dense layer cannot, so it refuses.
    let larger = ModelContract::new(contract.labels.clone(), SIZE as u32 + 16);
    let larger_calibration = inputs(&larger);
    let result = trainer::import::load_onnx_weights(
        spec.init(4, SIZE + 16, &device),
        &path,
        &larger,
        &larger_calibration,
        &device,
    );
    match spec {
        ModelSpec::Efficientnet { .. } => {
            let loaded = result.unwrap();
            let n = larger_calibration.len();
            let x = Tensor::<4>::from_data(
                TensorData::new(larger_calibration.concat(), [n, 3, SIZE + 16, SIZE + 16]),
                &Device::flex(),
            );
            let p = values(loaded.valid().probabilities(x));
            assert!(
                p.iter().all(|v| v.is_finite()),
                "at {} px: {p:?}",
                SIZE + 16
            );
        }
        ModelSpec::Mobilenetv2 { .. } => {
            let loaded = result.unwrap();
            let n = larger_calibration.len();
            let batch = |device: &Device| {
                Tensor::<4>::from_data(
                    TensorData::new(larger_calibration.concat(), [n, 3, SIZE + 16, SIZE + 16]),
                    device,
                )
            };
            let inference = values(loaded.clone().valid().probabilities(batch(&Device::flex())));
            let training = values(loaded.probabilities(batch(&device)));
            let diff = max_abs_diff(&inference, &training);
            assert!(diff <= 1e-2, "at {} px: max |Δp| {diff}", SIZE + 16);
        }
        ModelSpec::Cnn { .. } => {
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains("model.onnx") && err.contains("only MobileNetV2"),
                "{err}"
            );
        }
    }

    // Refusals name the file and the problem.
    let other = ModelContract::new(["a", "b", "c", "d"].map(String::from).to_vec(), SIZE as u32);
    let err = trainer::import::load_onnx_weights(
        spec.init(4, SIZE, &device),
        &path,
        &other,
        &calibration,
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model.onnx") && err.contains("contract"),
        "{err}"
    );
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let err = trainer::import::load_onnx_weights(
        spec.init(4, SIZE, &device),
        &junk,
        &contract,
        &calibration,
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("junk.onnx") && err.contains("not an ONNX file"),
        "{err}"
    );
}

#[test]
fn mobilenetv2_weights_come_back_from_onnx() {
    // No dropout: training mode is compared with inference mode.
    round_trip(ModelSpec::Mobilenetv2 {
        width: 0.35,
        head_units: 32,
        dropout: 0.0,
    });
}

#[test]
fn efficientnet_weights_come_back_from_onnx() {
    // No stochastic depth or dropout is used in inference mode, which is what is compared.
    round_trip(efficientnet(EfficientNetVariant::B0, 0.0));
}

#[test]
fn cnn_weights_come_back_from_onnx() {
    round_trip(ModelSpec::Cnn { dropout: 0.0 });
}
