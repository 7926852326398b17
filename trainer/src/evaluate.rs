//! Evaluating a trained run: probabilities for a set of pictures, and the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use image::RgbImage;
use leukoscope_model::contract::ModelContract;
use leukoscope_model::evaluation_report::{ReportContext, write_report_with};
use leukoscope_model::metrics;
use leukoscope_model::operating_point::{ScreeningFigures, ScreeningSettings};

use crate::backend::{BackendKind, inference_device};
use crate::data::batches::build_batch;
use crate::data::folder::{ImageFolder, class_folders, scan};
use crate::data::split::{Split, read_manifest};
use crate::model::{Classifier, parameter_bytes};
use crate::progress;
use crate::run::{AverageSummary, RunDir, read_json};

/// Class probabilities for framed pictures, `batch` at a time, and the images/s achieved.
pub fn predict(
    model: &Classifier,
    images: &[&RgbImage],
    contract: &ModelContract,
    device: &Device,
    batch: usize,
) -> (Vec<Vec<f32>>, f64) {
    let mut pre = leukoscope_model::preprocess::Preprocessor::new(contract.clone());
    let started = Instant::now();
    let bar = progress::bar(images.len() as u64, "predicting");
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        let b = build_batch(chunk.iter().map(|img| ((*img).clone(), 0)), &mut pre);
        let (x, _, _) = b.into_tensors(contract, device);
        let probs = model.probabilities(x);
        let values = probs
            .into_data()
            .try_to_vec::<f32>()
            .expect("probabilities are f32");
        out.extend(values.chunks(contract.num_classes()).map(<[f32]>::to_vec));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let per_s = images.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    (out, per_s)
}

/// Loads a run's best weights for inference on `device`.
pub fn load_best_model(run: &RunDir, device: &Device) -> Result<(Classifier, ModelContract)> {
    let file = run.load_run()?;
    let contract = run.load_contract()?;
    let model = file.config.model.init(
        contract.num_classes(),
        contract.input_width as usize,
        device,
    );
    let path = run.best_model();
    if !path.exists() {
        bail!(
            "{} does not exist: the run has not finished an epoch yet",
            path.display()
        );
    }
    let model = model
        .try_load_file(&path)
        .map_err(|e| anyhow::anyhow!("{}: cannot load weights: {e}", path.display()))?;
    Ok((model, contract))
}

/// Evaluates a run's best model and writes the report.
///
/// Without `data`, the run's own test split (from its manifest) is used and the report goes to
/// `RUN_DIR/report`. With `data`, every image of that labeled folder is used — its class folders
/// must carry the model's labels — and the report goes to `RUN_DIR/report-<folder name>`.
pub fn evaluate_run(run: &RunDir, data: Option<&Path>, backend: BackendKind) -> Result<PathBuf> {
    let device = inference_device(backend)?;
    let file = run.load_run()?;
    let (model, contract) = load_best_model(run, &device)?;
    let mut pre = leukoscope_model::preprocess::Preprocessor::new(contract.clone());
    let mut fit = |img: &RgbImage| pre.fit(img).map_err(|e| e.to_string());
    let (folder, indices, split, out_dir): (ImageFolder, Vec<usize>, &str, PathBuf) = match data {
        None => {
            let bar = progress::bar(0, "reading test images");
            let folder = scan(&file.config.data, false, &mut fit, &mut |d, t| {
                bar.set_length(t as u64);
                bar.set_position(d as u64);
            })?;
            bar.finish_and_clear();
            let assignment = read_manifest(&run.manifest(), &folder)?;
            let idx = assignment.indices(Split::Test);
            (folder, idx, "test", run.report())
        }
        Some(dir) => {
            let classes = class_folders(dir)?;
            let unknown: Vec<&String> = classes
                .iter()
                .filter(|c| contract.label_index(c).is_none())
                .collect();
            if !unknown.is_empty() {
                bail!(
                    "{}: class folder(s) {:?} are not labels of this model; its labels are {:?}",
                    dir.display(),
                    unknown,
                    contract.labels
                );
            }
            let bar = progress::bar(0, "reading images");
            let folder = scan(dir, false, &mut fit, &mut |d, t| {
                bar.set_length(t as u64);
                bar.set_position(d as u64);
            })?;
            bar.finish_and_clear();
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into());
            let n = folder.samples.len();
            (
                folder,
                (0..n).collect(),
                "all",
                run.0.join(format!("report-{name}")),
            )
        }
    };
    if indices.is_empty() {
        bail!("no images to evaluate");
    }
    // Folder classes are sorted names; map them to the model's label order.
    let truth: Vec<usize> = indices
        .iter()
        .map(|&i| {
            let name = &folder.classes[folder.samples[i].class];
            contract
                .label_index(name)
                .with_context(|| format!("class '{name}' is not a label of the model"))
        })
        .collect::<Result<_>>()?;
    let images: Vec<&RgbImage> = indices.iter().map(|&i| &folder.samples[i].image).collect();
    let (probs, per_s) = predict(&model, &images, &contract, &device, 32);
    let report = metrics::evaluate(&contract.labels, &truth, &probs)?;
    let history = run.load_history()?;
    let ctx = ReportContext {
        title: format!(
            "{} @{} — {split} split",
            file.config.model.describe(),
            contract.input_width
        ),
        model: format!(
            "{} (run {}, {})",
            file.config.model.describe(),
            file.info.id,
            match read_json::<AverageSummary>(&run.average_summary()) {
                Ok(a) => format!(
                    "mean of the weights at the end of {} epochs from epoch {}, BatchNorm \
                     statistics re-measured",
                    a.snapshots, a.from_epoch
                ),
                Err(_) => "best epoch by validation loss".to_string(),
            }
        ),
        dataset: format!(
            "{} (manifest sha256 {})",
            data.unwrap_or(&file.config.data).display(),
            file.info.manifest_sha256
        ),
        split: split.to_string(),
        parameters: Some(file.info.parameters),
        model_bytes: Some(parameter_bytes(&model)),
        train_images_per_s: history.last().map(|h| h.images_per_s),
        inference_images_per_s: Some(per_s),
        notes: run_notes(&file.config, &file.info),
    };
    let settings = ScreeningSettings {
        settings_from: "the device defaults (DecisionConfig::default(), SlideRule::default()): \
                        the trainer reads no device config; `edge evaluate --config FILE` \
                        evaluates at a device's own settings"
            .into(),
        ..ScreeningSettings::default()
    };
    let screening = ScreeningFigures::compute(&contract.labels, &truth, &probs, &settings);
    write_report_with(&out_dir, &ctx, &report, Some(&history), Some(&screening))?;
    println!(
        "{split}: {} images, accuracy {:.2} %, macro-F1 {:.4}, kappa {:.4}, MCC {:.4} — report in {}",
        report.samples,
        report.accuracy * 100.0,
        report.macro_avg.f1,
        report.cohen_kappa,
        report.mcc,
        out_dir.display()
    );
    let op = &screening.operating_point;
    println!(
        "at the device defaults (min_confidence {:.2}): blast sensitivity {}, specificity {}, \
         abstention {}, ECE {:.4}",
        op.decision.min_confidence,
        percent(&op.sensitivity),
        percent(&op.specificity),
        percent(&op.abstention),
        screening.calibration.ece
    );
    Ok(out_dir)
}

/// `97.50 % [94.1–99.0]`, or `n/a` without pictures.
fn percent(p: &metrics::Proportion) -> String {
    p.value.map_or_else(
        || "n/a".into(),
        |v| {
            format!(
                "{:.2} % [{:.1}–{:.1}]",
                v * 100.0,
                p.low * 100.0,
                p.high * 100.0
            )
        },
    )
}

/// The training recipe in words, for the report.
fn run_notes(c: &crate::run::RunConfig, info: &crate::run::RunInfo) -> Vec<String> {
    let mut notes = vec![
        format!(
            "Training: {:?} lr {} ({:?} schedule), batch {}, up to {} epochs, early-stopping patience {}, seed {}.",
            c.optimizer, c.lr, c.schedule, c.batch, c.epochs, c.patience, c.seed
        ),
        format!(
            "Class imbalance: sampling {:?}, class-weighted loss {}.",
            c.sampling,
            if c.class_weights { "on" } else { "off" }
        ),
        format!(
            "Augmentation (training only): {}.",
            serde_json::to_string(&c.augment).unwrap_or_default()
        ),
        match &c.test_group {
            Some(pattern) => format!(
                "Test split by whole groups (--test-group '{pattern}'): no test group was seen in \
                 training; validation is per image within the training groups."
            ),
            None => "Split per image, not per patient: images of one patient may sit in both \
                     training and test, which can flatter these figures."
                .to_string(),
        },
    ];
    if let Some(p) = &info.pretrained_report {
        notes.push(format!("Pretrained backbone: {p}"));
    }
    if !info.skipped.is_empty() {
        notes.push(format!(
            "{} unreadable file(s) were skipped.",
            info.skipped.len()
        ));
    }
    notes
}
