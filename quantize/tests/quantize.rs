//! End to end: a seeded MobileNetV2-like model through `quantize`, then checked in tract.

mod common;

use std::path::Path;

use common::{LABELS, contract, labeled_folder, write_model};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::contract::metadata_keys::QUANTIZATION as RECIPE_KEY;
use prost::Message;
use quantize::calibrate::ImageSource;
use quantize::pipeline::{Options, Silent, run};
use quantize::ranges::{ActivationType, Method};
use quantize::rewrite::Depthwise;
use tract_onnx::pb;

fn options(calibration: &Path) -> Options {
    Options {
        calibration: ImageSource {
            dir: calibration.to_path_buf(),
            manifest: None,
        },
        samples: 24,
        method: Method::MinMax,
        activations: ActivationType::U8,
        per_tensor_weights: false,
        depthwise: Depthwise::Float,
        keep_float: vec![],
        evaluation: None,
        auto: None,
        bench_runs: 0,
        threshold_pictures: None,
    }
}

fn decode(p: &Path) -> pb::ModelProto {
    pb::ModelProto::decode(std::fs::read(p).unwrap().as_slice()).unwrap()
}

fn ops(m: &pb::ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.clone())
        .collect()
}

/// Top-1 agreement of two models on the pictures of a labeled folder.
fn agreement(a: &Path, b: &Path, data: &Path) -> f64 {
    let a = OnnxClassifier::load(a, &Default::default()).unwrap();
    let b = OnnxClassifier::load(b, &Default::default()).unwrap();
    let files = leukoscope_model::images::expand_paths(&[data.to_path_buf()]);
    let mut same = 0;
    for f in &files {
        let img = leukoscope_model::preprocess::decode_image(f).unwrap();
        let x = leukoscope_model::preprocess::image_to_input(&img, a.contract()).unwrap();
        let (pa, pb) = (a.probabilities(&x).unwrap(), b.probabilities(&x).unwrap());
        same += (leukoscope_model::metrics::argmax(&pa) == leukoscope_model::metrics::argmax(&pb))
            as usize;
    }
    same as f64 / files.len() as f64
}

#[test]
fn quantized_model_runs_in_tract_agrees_with_f32_and_keeps_its_metadata() {
    let d = tempfile::tempdir().unwrap();
    let f32_path = write_model(d.path(), "m.onnx", 5);
    let cal = labeled_folder(&d.path().join("cal"), 8);
    let eval = labeled_folder(&d.path().join("eval"), 12);
    let out = d.path().join("m-int8.onnx");
    let mut opts = options(&cal);
    opts.evaluation = Some(ImageSource {
        dir: eval.clone(),
        manifest: None,
    });
    let report = run(&f32_path, &out, &opts, &Silent).unwrap();

    let q = decode(&out);
    let ops = ops(&q);
    // Stem, expand, project and head convs are integer; the depthwise one keeps f32 compute.
    assert_eq!(
        ops.iter().filter(|o| *o == "QLinearConv").count(),
        4,
        "{ops:?}"
    );
    assert_eq!(ops.iter().filter(|o| *o == "Conv").count(), 1, "{ops:?}");
    // ReLU6 and ReLU after the integer convs are folded into their output ranges.
    assert_eq!(ops.iter().filter(|o| *o == "Clip").count(), 1, "{ops:?}");
    assert!(!ops.contains(&"Relu".to_string()), "{ops:?}");
    for op in &ops {
        assert!(
            !["QLinearAdd", "QGemm", "QLinearGlobalAveragePool"].contains(&op.as_str()),
            "non-standard op {op}"
        );
    }
    assert!(
        q.opset_import
            .iter()
            .any(|o| o.domain.is_empty() && o.version >= 13)
    );
    // Every metadata entry kept, the recipe added.
    let original = decode(&f32_path);
    for e in &original.metadata_props {
        assert!(q.metadata_props.contains(e), "lost {}", e.key);
    }
    let recipe = q
        .metadata_props
        .iter()
        .find(|e| e.key == RECIPE_KEY)
        .unwrap();
    let recipe: serde_json::Value = serde_json::from_str(&recipe.value).unwrap();
    assert_eq!(recipe["method"], "minmax");
    assert_eq!(recipe["samples"], 24);
    assert_eq!(recipe["calibration_sha256"].as_str().unwrap().len(), 64);

    // The report: beside the output, consistent with an independent check.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("m-int8.quantization.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["evaluation"]["images"], 48);
    let own = agreement(&f32_path, &out, &eval);
    assert!(
        (report.evaluation.top1_agreement - own).abs() < 1e-9,
        "{} vs {own}",
        report.evaluation.top1_agreement
    );
    assert!(own >= 0.9, "top-1 agreement {own}");
    assert!(report.evaluation.f32.is_some() && report.evaluation.int8.is_some());
    // Per-layer SQNR sorted worst first; 6 layers (5 conv + 1 dense); int8 layers lose something.
    let db: Vec<f64> = report
        .layers
        .iter()
        .map(|l| l.sqnr_db.unwrap_or(f64::INFINITY))
        .collect();
    assert_eq!(db.len(), 6);
    assert!(db.windows(2).all(|w| w[0] <= w[1]), "{db:?}");
    assert!(db[0].is_finite() && db[0] > 10.0, "{db:?}");
    assert!(report.bytes_int8 < report.bytes_f32);
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let f32_path = write_model(d.path(), "m.onnx", 9);
    let cal = labeled_folder(&d.path().join("cal"), 6);
    let (a, b) = (d.path().join("a.onnx"), d.path().join("b.onnx"));
    let mut opts = options(&cal);
    opts.method = Method::Entropy;
    run(&f32_path, &a, &opts, &Silent).unwrap();
    run(&f32_path, &b, &opts, &Silent).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // A different calibration set gives a different recipe hash (and bytes).
    opts.samples = 10;
    run(&f32_path, &b, &opts, &Silent).unwrap();
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn options_change_the_graph_as_asked() {
    let d = tempfile::tempdir().unwrap();
    let f32_path = write_model(d.path(), "m.onnx", 11);
    let cal = labeled_folder(&d.path().join("cal"), 5);
    let out = d.path().join("q.onnx");
    let original = decode(&f32_path);
    let first_conv = original.graph.as_ref().unwrap().node[0].name.clone();

    // --keep-float: that conv stays Conv with its f32 weight.
    let mut opts = options(&cal);
    opts.keep_float = vec![first_conv.clone()];
    opts.activations = ActivationType::I8;
    opts.per_tensor_weights = true;
    opts.depthwise = Depthwise::Int8;
    opts.method = Method::Percentile(99.9);
    run(&f32_path, &out, &opts, &Silent).unwrap();
    let q = decode(&out);
    let g = q.graph.as_ref().unwrap();
    let kept = g.node.iter().find(|n| n.name == first_conv).unwrap();
    assert_eq!(kept.op_type, "Conv");
    let w = g
        .initializer
        .iter()
        .find(|t| t.name == kept.input[1])
        .unwrap();
    assert_eq!(w.data_type, pb::tensor_proto::DataType::Float as i32);
    // Depthwise int8: every other conv is QLinearConv, activations i8, weight scales scalar.
    assert_eq!(ops(&q).iter().filter(|o| *o == "QLinearConv").count(), 4);
    let qconv = g.node.iter().find(|n| n.op_type == "QLinearConv").unwrap();
    let zp = g
        .initializer
        .iter()
        .find(|t| t.name == qconv.input[2])
        .unwrap();
    assert_eq!(zp.data_type, pb::tensor_proto::DataType::Int8 as i32);
    let ws = g
        .initializer
        .iter()
        .find(|t| t.name == qconv.input[4])
        .unwrap();
    assert!(ws.dims.is_empty());
    assert!(agreement(&f32_path, &out, &cal) >= 0.85);

    // An unknown node name is an error that lists the layers.
    opts.keep_float = vec!["Conv_999".into()];
    let e = run(&f32_path, &out, &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Conv_999") && e.contains(&first_conv), "{e}");
}

#[test]
fn auto_mode_stays_within_the_budget() {
    let d = tempfile::tempdir().unwrap();
    let f32_path = write_model(d.path(), "m.onnx", 3);
    let cal = labeled_folder(&d.path().join("cal"), 6);
    let val = labeled_folder(&d.path().join("val"), 10);
    let out = d.path().join("q.onnx");
    let mut opts = options(&cal);
    // A budget of zero with i8 per-tensor weights: float layers are added until validation
    // accuracy is the f32 one (or everything is float).
    opts.activations = ActivationType::I8;
    opts.per_tensor_weights = true;
    opts.auto = Some((
        ImageSource {
            dir: val.clone(),
            manifest: None,
        },
        0.0,
    ));
    opts.evaluation = Some(ImageSource {
        dir: val,
        manifest: None,
    });
    let r = run(&f32_path, &out, &opts, &Silent).unwrap();
    assert!(!r.auto_steps.is_empty());
    let change = r.evaluation.accuracy_change_points.unwrap();
    let all_float = r.auto_steps.iter().any(|s| s.contains("cannot be met"));
    assert!(change >= 0.0 || all_float, "{:?}", r.auto_steps);
    assert_eq!(
        r.recipe.keep_float.len() + 1,
        r.auto_steps.len() - all_float as usize
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let f32_path = write_model(d.path(), "m.onnx", 1);
    let cal = labeled_folder(&d.path().join("cal"), 3);
    let out = d.path().join("q.onnx");
    let err =
        |model: &Path, opts: &Options| run(model, &out, opts, &Silent).unwrap_err().to_string();

    let text = d.path().join("notes.onnx");
    std::fs::write(&text, b"this is not a model at all").unwrap();
    let e = err(&text, &options(&cal));
    assert!(
        e.contains("notes.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );

    let mut bare = common::tiny_mobilenet(1);
    bare.metadata_props.clear();
    let bare_path = d.path().join("bare.onnx");
    std::fs::write(&bare_path, bare.encode_to_vec()).unwrap();
    let e = err(&bare_path, &options(&cal));
    assert!(
        e.contains("bare.onnx") && e.contains("leukoscope.labels"),
        "{e}"
    );

    run(&f32_path, &out, &options(&cal), &Silent).unwrap();
    let again = d.path().join("again.onnx");
    let e = run(&out, &again, &options(&cal), &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q.onnx") && e.contains("already quantized"),
        "{e}"
    );

    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = err(&f32_path, &options(&empty));
    assert!(e.contains("empty") && e.contains("no pictures"), "{e}");
    let e = err(&f32_path, &options(&d.path().join("nowhere")));
    assert!(e.contains("nowhere") && e.contains("not a folder"), "{e}");

    let wrong = d.path().join("wrong");
    std::fs::create_dir_all(wrong.join(LABELS[0])).unwrap();
    std::fs::write(
        wrong.join(LABELS[0]).join("scan.jpg"),
        b"%PDF-1.4 not a picture",
    )
    .unwrap();
    let e = err(&f32_path, &options(&wrong));
    assert!(e.contains("scan.jpg") && e.contains("not an image"), "{e}");
    let other = d.path().join("other");
    common::picture(0, 0)
        .save(other.join("Lymphoma").join("1.png"))
        .ok();
    std::fs::create_dir_all(other.join("Lymphoma")).unwrap();
    common::picture(0, 0)
        .save(other.join("Lymphoma").join("1.png"))
        .unwrap();
    let e = err(&f32_path, &options(&other));
    assert!(e.contains("Lymphoma") && e.contains("not labels"), "{e}");

    let mut zero = options(&cal);
    zero.samples = 0;
    assert!(err(&f32_path, &zero).contains("--samples"));
    let _ = contract();
}

#[test]
fn the_unfamiliarity_score_and_the_temperature_stay_f32_and_agree() {
    use leukoscope_model::familiarity::{
        MahalanobisFit, Unfamiliarity, apply_temperature, is_uncertainty_node, pooled_features,
    };
    use leukoscope_model::preprocess::{decode_image, image_to_input};
    use tract_onnx::prelude::*;
    let d = tempfile::tempdir().unwrap();
    let cal = labeled_folder(&d.path().join("cal"), 8);
    // The features of the calibration pictures fit the score.
    let mut model = common::tiny_mobilenet(5);
    let file =
        leukoscope_model::onnx::OnnxFile::from_proto(Path::new("m.onnx"), model.clone()).unwrap();
    let features = pooled_features(file.graph()).unwrap();
    let plan = file.plan(&[features.as_str()]).unwrap();
    let pictures: Vec<(std::path::PathBuf, usize)> = LABELS
        .iter()
        .enumerate()
        .flat_map(|(c, l)| {
            leukoscope_model::images::expand_paths(&[cal.join(l)])
                .into_iter()
                .map(move |p| (p, c))
        })
        .collect();
    let feature_of = |p: &Path| -> Vec<f32> {
        let x = image_to_input(&decode_image(p).unwrap(), &contract()).unwrap();
        let t = Tensor::from_shape(&[1, 3, 24, 24], &x).unwrap();
        let out = plan.run(tvec!(t.into())).unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    };
    let feats: Vec<Vec<f32>> = pictures.iter().map(|(p, _)| feature_of(p)).collect();
    let classes: Vec<usize> = pictures.iter().map(|(_, c)| *c).collect();
    let fit = MahalanobisFit::fit(&feats, &classes, 4, 0.2).unwrap();
    let g = model.graph.as_mut().unwrap();
    fit.append_to_graph(g, &features).unwrap();
    apply_temperature(g, 1.5).unwrap();
    let mut c = contract();
    c.temperature = Some(1.5);
    c.unfamiliarity = Some(Unfamiliarity {
        output: "unfamiliarity".into(),
        method: "mahalanobis".into(),
        features: features.clone(),
        dims: fit.dims(),
        threshold: 10.0,
        validation_rejected: 0.0,
        shrinkage: 0.2,
    });
    model.metadata_props = c
        .to_metadata()
        .into_iter()
        .map(|(key, value)| pb::StringStringEntryProto { key, value })
        .collect();
    let f32_path = d.path().join("m.onnx");
    std::fs::write(&f32_path, model.encode_to_vec()).unwrap();

    let out = d.path().join("m-int8.onnx");
    run(&f32_path, &out, &options(&cal), &Silent).unwrap();
    let q = decode(&out);
    for n in &q.graph.as_ref().unwrap().node {
        if is_uncertainty_node(&n.name) {
            assert!(
                !n.op_type.starts_with("QLinear") && !n.input.iter().any(|i| i.contains("quant")),
                "{} became {} {:?}",
                n.name,
                n.op_type,
                n.input
            );
        }
    }
    let a = OnnxClassifier::load(&f32_path, &Default::default()).unwrap();
    let b = OnnxClassifier::load(&out, &Default::default()).unwrap();
    assert_eq!(b.contract().unfamiliarity, a.contract().unfamiliarity);
    let (mut max_a, mut max_b) = (0f32, 0f32);
    for (p, _) in &pictures {
        let x = image_to_input(&decode_image(p).unwrap(), &contract()).unwrap();
        let (pa, pb) = (a.predict(&x).unwrap(), b.predict(&x).unwrap());
        let (ua, ub) = (pa.unfamiliarity.unwrap(), pb.unfamiliarity.unwrap());
        // The f32 file computes the fit's own score.
        assert!((ua - fit.score(&feature_of(p))).abs() < 1e-3 * ua.max(1.0));
        assert!(ub.is_finite());
        (max_a, max_b) = (max_a.max(ua), max_b.max(ub));
    }
    // int8 features move the score (on this random tiny model by up to ~1 unit, so the int8
    // file's threshold must be checked on its own validation scores), but a picture unlike
    // every class stays above every familiar one in both files.
    let green = image::RgbImage::from_pixel(40, 36, image::Rgb([20, 230, 20]));
    let x = image_to_input(&green, &contract()).unwrap();
    let (ga, gb) = (
        a.predict(&x).unwrap().unfamiliarity.unwrap(),
        b.predict(&x).unwrap().unfamiliarity.unwrap(),
    );
    assert!(
        ga > max_a && gb > max_b,
        "green {ga} / {gb}, familiar max {max_a} / {max_b}"
    );

    // With validation pictures the int8 file gets its own threshold, set on its own scores.
    let refitted = d.path().join("m-int8-own.onnx");
    let mut opts = options(&cal);
    opts.threshold_pictures = Some(ImageSource {
        dir: cal.clone(),
        manifest: None,
    });
    let report = run(&f32_path, &refitted, &opts, &Silent).unwrap();
    let own = OnnxClassifier::load(&refitted, &Default::default()).unwrap();
    let u = own.contract().unfamiliarity.clone().unwrap();
    let scores: Vec<f32> = pictures
        .iter()
        .map(|(p, _)| {
            let x = image_to_input(&decode_image(p).unwrap(), &contract()).unwrap();
            own.predict(&x).unwrap().unfamiliarity.unwrap()
        })
        .collect();
    let expected = leukoscope_model::familiarity::threshold_for(&scores, 0.01).unwrap();
    assert_eq!(u.threshold, expected);
    assert!(
        u.threshold != 10.0 && u.validation_rejected <= 0.01,
        "{u:?}"
    );
    let r = report
        .unfamiliarity
        .expect("the report says what was refitted");
    assert_eq!((r.f32_threshold, r.int8_threshold), (10.0, expected));
    assert_eq!(r.pictures, pictures.len());
    assert!(u.is_unfamiliar(own.predict(&x).unwrap().unfamiliarity.unwrap()));
}
