//! The shipped models (every folder of `leukoscope_tests::SHIPPED`) through `edge classify` on
//! pictures of the dataset each was trained on: each picture gets its folder's label with high
//! confidence. Reported as ignored when the dataset is not there (a fresh clone); the 4-class
//! model itself must always be there.
//!
//! With `LEUKOSCOPE_CONFORMANCE_DIR` set, each shipped model (f32 and int8) is also written to its `shipped/` with the
//! test split of its manifest (`models/<name>.manifest.csv`) as inputs and tract's probabilities,
//! for `tests/quantize_conformance.py` to compare with onnxruntime (run by .ci/run).

use std::path::PathBuf;

use leukoscope_tests::{ShippedModel, run, shipped_models, text};
use libtest_mimic::{Arguments, Failed, Trial};

/// Per class, this many pictures (the first by name) are classified.
const PER_CLASS: usize = 5;

fn classify_with(ShippedModel { path: model, data }: ShippedModel) -> Result<(), Failed> {
    let labels = leukoscope_model::classifier::OnnxClassifier::load(&model, &Default::default())
        .map_err(|e| e.to_string())?
        .contract()
        .labels
        .clone();
    let mut files = Vec::new();
    for class in &labels {
        let mut names: Vec<PathBuf> = std::fs::read_dir(data.join(class))
            .map_err(|e| format!("{}: {e}", data.join(class).display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
            .collect();
        names.sort();
        files.extend(
            names
                .into_iter()
                .take(PER_CLASS)
                .map(|p| (class.as_str(), p)),
        );
    }
    let mut args = vec![
        "classify".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--format".into(),
        "jsonl".into(),
    ];
    args.extend(files.iter().map(|(_, p)| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("edge", &args);
    if !out.status.success() {
        return Err(format!("edge classify failed\n{}", text(&out)).into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not JSON lines: {e}\n{stdout}"))?;
    if rows.len() != files.len() {
        return Err(format!("{} rows for {} files\n{stdout}", rows.len(), files.len()).into());
    }
    // Confident as the device means it: at or above its frame threshold (below, a field is
    // `uncertain`). The model with the colour and JPEG augmentation hedges more than the one
    // before it (whose bar here was 0.9) on a few training pictures.
    let bar = f64::from(leukoscope_screening::DecisionConfig::default().min_confidence);
    let mut wrong = Vec::new();
    for ((class, file), row) in files.iter().zip(&rows) {
        let confidence = row["confidence"].as_f64().unwrap_or(0.0);
        if row["label"] != *class || confidence < bar {
            wrong.push(format!(
                "{}: expected {class}, got {} ({confidence:.3})",
                file.display(),
                row["label"]
            ));
        }
    }
    // 5 pictures per class, most of them seen in training: at most one may miss.
    if wrong.len() > 1 {
        return Err(format!(
            "{} of {} wrong:\n{}",
            wrong.len(),
            rows.len(),
            wrong.join("\n")
        )
        .into());
    }
    Ok(())
}

/// Writes `NAME.onnx`, `NAME.f32` (inputs) and `NAME.json` (shape, tract's probabilities and,
/// for a model with the score, tract's unfamiliarity scores and the threshold) for the
/// onnxruntime check.
fn conformance_dump(
    ShippedModel {
        path: model_path,
        data,
    }: ShippedModel,
    out: PathBuf,
) -> Result<(), Failed> {
    use std::io::Write;
    let model =
        leukoscope_model::classifier::OnnxClassifier::load(&model_path, &Default::default())
            .map_err(|e| e.to_string())?;
    let manifest = manifest_of(&model_path)?;
    let selection = leukoscope_model::evaluate::Selection {
        manifest: Some((manifest, "test".into())),
    };
    let files =
        leukoscope_model::evaluate::labeled_files(&data, &model.contract().labels, &selection)
            .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stem = model_path
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut raw = std::io::BufWriter::new(
        std::fs::File::create(out.join(format!("{stem}.f32"))).map_err(|e| e.to_string())?,
    );
    let (mut tract, mut scores) = (Vec::new(), Vec::new());
    for (file, _) in &files {
        let img = leukoscope_model::preprocess::decode_image(file).map_err(|e| e.to_string())?;
        let x = leukoscope_model::preprocess::image_to_input(&img, model.contract())
            .map_err(|e| e.to_string())?;
        for v in &x {
            raw.write_all(&v.to_le_bytes()).map_err(|e| e.to_string())?;
        }
        let p = model.predict(&x).map_err(|e| e.to_string())?;
        tract.push(p.probabilities);
        scores.extend(p.unfamiliarity);
    }
    raw.flush().map_err(|e| e.to_string())?;
    let c = model.contract();
    let precision = match leukoscope_model::variant::Precision::of(&model) {
        leukoscope_model::variant::Precision::Int8 => "int8",
        _ => "f32",
    };
    let mut doc = serde_json::json!({
        "precision": precision,
        "shape": [1, 3, c.input_height, c.input_width],
        "inputs_file": format!("{stem}.f32"),
        "tract": tract,
    });
    // A model with an unfamiliarity score: onnxruntime must compute the same score (and the
    // same side of the threshold) from the graph.
    if let Some(u) = &c.unfamiliarity {
        doc["unfamiliarity"] = serde_json::json!({
            "output": u.output,
            "threshold": u.threshold,
            "tract": scores,
        });
    }
    std::fs::write(out.join(format!("{stem}.json")), doc.to_string()).map_err(|e| e.to_string())?;
    std::fs::copy(&model_path, out.join(format!("{stem}.onnx"))).map_err(|e| e.to_string())?;
    eprintln!(
        "{stem}: {} test-split inputs written to {}",
        files.len(),
        out.display()
    );
    Ok(())
}

/// `models/all-x-int8.onnx` → `models/all-x.manifest.csv` (the training run's split).
fn manifest_of(model: &std::path::Path) -> Result<PathBuf, Failed> {
    let stem = model.file_stem().unwrap().to_string_lossy();
    let base = stem
        .strip_suffix("-int8")
        .or_else(|| stem.strip_suffix("-f32"))
        .unwrap_or(&stem);
    let manifest = model.with_file_name(format!("{base}.manifest.csv"));
    if manifest.is_file() {
        Ok(manifest)
    } else {
        Err(format!("{}: no manifest beside the model", manifest.display()).into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let models = shipped_models();
    let four_class = models
        .iter()
        .filter(|m| m.path.parent() == Some(&leukoscope_tests::workspace().join("models")))
        .count();
    let mut tests = vec![Trial::test("models_folder_holds_a_model", move || {
        if four_class == 0 {
            Err("no .onnx file in models/".into())
        } else {
            Ok(())
        }
    })];
    // Each conformance test writes its own subfolder, so CI sets one folder for the whole run.
    let dump =
        std::env::var_os("LEUKOSCOPE_CONFORMANCE_DIR").map(|d| PathBuf::from(d).join("shipped"));
    let mut missing = std::collections::BTreeSet::new();
    for model in models {
        let present = model.data.is_dir();
        if !present {
            missing.insert(model.data.display().to_string());
        }
        let name = model
            .path
            .strip_prefix(leukoscope_tests::workspace())
            .unwrap_or(&model.path)
            .display()
            .to_string();
        // Every shipped file, f32 and int8, is compared with onnxruntime (its score too).
        if let Some(out) = &dump {
            let (copy, out) = (
                ShippedModel {
                    path: model.path.clone(),
                    data: model.data.clone(),
                },
                out.clone(),
            );
            tests.push(
                Trial::test(format!("conformance_dump_{name}"), move || {
                    conformance_dump(copy, out)
                })
                .with_ignored_flag(!present),
            );
        }
        tests.push(
            Trial::test(format!("edge_classify_with_{name}"), move || {
                classify_with(model)
            })
            .with_ignored_flag(!present),
        );
    }
    for data in missing {
        eprintln!(
            "{data} not found (set LEUKOSCOPE_DATA): the checks of the models trained on it are reported as ignored"
        );
    }
    libtest_mimic::run(&args, tests).exit();
}
