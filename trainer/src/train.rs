//! `trainer fit`: the training loop, with a checkpoint every epoch and exact resume.
//!
//! Everything random is derived from the run seed and the epoch number — the split, the order
//! of images, augmentation, dropout — so a run resumed from its last checkpoint replays exactly
//! what an uninterrupted run would have done (as far as the backend's kernels are
//! deterministic).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::lr_scheduler::LrSchedulerRecord;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use image::RgbImage;
use leukoscope_model::colour::{ColourNormalization, median_background};
use leukoscope_model::contract::ModelContract;
use leukoscope_model::durable;
use leukoscope_model::evaluation_report::EpochRecord;
use leukoscope_model::preprocess::Preprocessor;
use sha2::{Digest, Sha256};

use crate::average::{WeightAverage, remeasure_batch_norm};
use crate::backend::training_device;
use crate::data::balance::{Sampling, class_weights, epoch_order, smote};
use crate::data::batches::{LabeledImages, stream};
use crate::data::folder::{class_folders, scan};
use crate::data::split::{
    Split, group_held_out_split, read_manifest, stratified_split, write_manifest,
};
use crate::evaluate::evaluate_run;
use crate::model::Classifier;
use crate::optim::{build_optimizer, build_schedule};
use crate::pretrained;
use crate::progress;
use crate::run::{
    AverageSummary, ColourMethod, RunConfig, RunDir, RunFile, RunInfo, TrainState, read_json,
    write_json,
};

/// What `fit` is asked to do besides the run's settings.
pub struct FitRequest<'a> {
    /// The run folder.
    pub out: &'a Path,
    /// Continue the run already in `out`.
    pub resume: bool,
    /// Reuse this manifest's split instead of drawing a new one.
    pub manifest: Option<&'a Path>,
    /// Evaluate on the test split when training ends.
    pub evaluate: bool,
    /// Stop (resumable) after this many epochs in this invocation, e.g. to fit a session.
    pub stop_after: Option<usize>,
}

/// The contract's colour normalization for `method`, measured on the training pictures.
fn colour_normalization(
    method: ColourMethod,
    train: &[(RgbImage, usize)],
) -> Result<ColourNormalization> {
    Ok(match method {
        ColourMethod::None => ColourNormalization::None,
        ColourMethod::BackgroundWhite => {
            let white = median_background(train.iter().map(|(img, _)| img.as_raw().as_slice()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--colour background-white: no training picture has a bright background \
                         to measure (is this a bright-field smear?); use --colour none"
                    )
                })?;
            eprintln!(
                "colour: background white point of the training split R {:.1} G {:.1} B {:.1}",
                white[0], white[1], white[2]
            );
            ColourNormalization::BackgroundWhite { white }
        }
    })
}

/// Trains (or resumes) a run, then evaluates its best model on the test split.
pub fn fit(config: RunConfig, req: FitRequest<'_>) -> Result<()> {
    let run = RunDir(req.out.to_path_buf());
    let (config, previous) = if req.resume {
        if !run.run_file().exists() {
            bail!(
                "--resume: {} holds no run (no run.json); start one without --resume",
                req.out.display()
            );
        }
        let stored = run.load_run()?;
        let mut c = stored.config;
        // The only setting a resume may change: more epochs.
        if config.epochs > c.epochs {
            c.epochs = config.epochs;
        }
        (c, Some(stored.info))
    } else {
        if run.run_file().exists() {
            bail!(
                "{} already holds a run: continue it with --resume, or choose another --out",
                req.out.display()
            );
        }
        (config, None)
    };
    durable::create_dir_all(req.out)?;

    // Data: every picture framed by the model contract, then split.
    let labels = class_folders(&config.data)?;
    let mut contract = ModelContract::new(labels, config.size);
    let mut pre = Preprocessor::new(contract.clone());
    let bar = progress::bar(0, "reading");
    let folder = scan(
        &config.data,
        config.strict,
        &mut |img: &RgbImage| pre.fit(img).map_err(|e| e.to_string()),
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    contract.validate()?;
    if !folder.skipped.is_empty() {
        eprintln!(
            "warning: skipped {} unreadable file(s) (see the log; --strict refuses them):",
            folder.skipped.len()
        );
        for s in folder.skipped.iter().take(10) {
            eprintln!("  {}: {}", s.path.display(), s.reason);
        }
    }
    let assignment = match (&previous, req.manifest) {
        (Some(_), _) => read_manifest(&run.manifest(), &folder)?,
        (None, Some(m)) => read_manifest(m, &folder)?,
        (None, None) => match &config.test_group {
            None => stratified_split(&folder, config.fractions, config.seed),
            Some(pattern) => {
                let pattern = regex::Regex::new(pattern)
                    .map_err(|e| anyhow::anyhow!("--test-group '{pattern}': {e}"))?;
                group_held_out_split(&folder, config.fractions, config.seed, &pattern)?
            }
        },
    };
    if previous.is_none() {
        write_manifest(&run.manifest(), &folder, &assignment)?;
    }
    let manifest_sha256 = hex::encode(Sha256::digest(std::fs::read(run.manifest())?));
    let k = contract.num_classes();
    let mut split_counts = vec![[0usize; 3]; k];
    for (s, split) in folder.samples.iter().zip(&assignment.0) {
        split_counts[s.class][*split as usize] += 1;
    }
    let pick = |split: Split| -> Vec<(RgbImage, usize)> {
        assignment
            .indices(split)
            .into_iter()
            .map(|i| (folder.samples[i].image.clone(), folder.samples[i].class))
            .collect()
    };
    let mut train = pick(Split::Train);
    let val = pick(Split::Val);
    if train.is_empty() || val.is_empty() {
        bail!("the split left no training or no validation images: use more images per class");
    }
    // The colour reference comes from the training split's real pictures (not SMOTE's), the
    // same on a resume.
    contract.colour = colour_normalization(config.colour, &train)?;
    let mut synthetic = vec![0; k];
    if config.sampling == Sampling::Smote {
        let images: Vec<&RgbImage> = train.iter().map(|(i, _)| i).collect();
        let classes: Vec<usize> = train.iter().map(|(_, c)| *c).collect();
        let extra = smote(&images, &classes, 5, config.seed);
        for (_, c) in &extra {
            synthetic[*c] += 1;
        }
        train.extend(extra);
    }
    let train_classes: Vec<usize> = train.iter().map(|(_, c)| *c).collect();
    let mut train_counts = vec![0; k];
    for &c in &train_classes {
        train_counts[c] += 1;
    }
    let train: LabeledImages = Arc::new(train);
    let val: LabeledImages = Arc::new(val);

    // Model, optimizer, schedule.
    let device = training_device(config.backend)?;
    device.seed(config.seed);
    let mut model = config.model.init(k, config.size as usize, &device);
    let mut pretrained_report = previous.as_ref().and_then(|p| p.pretrained_report.clone());
    if let (None, Some(path)) = (&previous, &config.pretrained) {
        let (loaded, report) = pretrained::load_torchvision_backbone(model, path)?;
        eprintln!("pretrained: {report}");
        model = loaded;
        pretrained_report = Some(report);
    }
    if let (None, Some(from)) = (&previous, &config.init_from) {
        model = if from.is_dir() {
            init_from_run(model, from, &config, &contract.labels)?
        } else {
            // BatchNorm statistics from up to 64 training pictures spread over the split.
            let mut pre = Preprocessor::new(contract.clone());
            let step = train.len().div_ceil(64).max(1);
            let calibration = train
                .iter()
                .step_by(step)
                .map(|(img, _)| {
                    let mut x = vec![0.0; contract.input_len()];
                    pre.run_into(img, &mut x).map(|()| x)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let model =
                crate::import::load_onnx_weights(model, from, &contract, &calibration, &device)?;
            eprintln!("init-from: started from {}", from.display());
            model
        };
    }
    let steps_per_epoch = train.len().div_ceil(config.batch);
    let mut optim = build_optimizer(config.optimizer, config.weight_decay);
    let mut scheduler = build_schedule(config.schedule, config.lr, steps_per_epoch * config.epochs)
        .map_err(|e| anyhow::anyhow!("learning-rate schedule: {e}"))?;
    let info = RunInfo {
        id: previous.as_ref().map_or_else(
            || {
                format!(
                    "{}-{}",
                    req.out
                        .file_name()
                        .map_or("run".into(), |n| n.to_string_lossy()),
                    chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
                )
            },
            |p| p.id.clone(),
        ),
        created: previous
            .as_ref()
            .map_or_else(|| chrono::Utc::now().to_rfc3339(), |p| p.created.clone()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        classes: contract.labels.clone(),
        split_counts,
        synthetic,
        skipped: folder
            .skipped
            .iter()
            .map(|s| (s.path.display().to_string(), s.reason.clone()))
            .collect(),
        manifest_sha256,
        parameters: model.num_params() as u64,
        pretrained_report,
    };
    drop(folder);
    write_json(
        &run.run_file(),
        &RunFile {
            config: config.clone(),
            info: info.clone(),
        },
    )?;
    write_json(&run.contract(), &contract)?;

    let mut state = TrainState::default();
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut average: Option<WeightAverage> = None;
    if previous.is_some()
        && let Some(ckpt) = latest_checkpoint(&run)
    {
        (model, optim, scheduler, state, history) =
            load_checkpoint(&ckpt, model, optim, scheduler)?;
        if state.averaged > 0 {
            let path = ckpt.join("average.bpk");
            let mean = model
                .clone()
                .try_load_file(&path)
                .map_err(|e| anyhow::anyhow!("{}: cannot load: {e}", path.display()))?;
            average = Some(WeightAverage::resume(mean, state.averaged));
        }
        eprintln!(
            "resuming after epoch {} from {}",
            state.epochs_done,
            ckpt.display()
        );
    }

    let loss_fn = loss(&train_counts, config.class_weights, &device);
    let augment = config.augment.is_active().then(|| config.augment.clone());
    let first_epoch = state.epochs_done;
    for epoch in first_epoch..config.epochs {
        if state.stopped_early {
            break;
        }
        if req.stop_after.is_some_and(|n| epoch - first_epoch >= n) {
            eprintln!(
                "stopping after {} epoch(s) as asked: continue with `trainer fit --resume --out {}`",
                epoch - first_epoch,
                req.out.display()
            );
            return Ok(());
        }
        device.seed(config.seed.wrapping_add(1 + epoch as u64));
        let order = epoch_order(&train_classes, config.sampling, config.seed, epoch);
        let bar = progress::bar(
            order.len() as u64,
            &format!("epoch {}/{}", epoch + 1, config.epochs),
        );
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = config.lr;
        let batches = stream(
            train.clone(),
            order,
            config.batch,
            contract.clone(),
            augment.clone(),
            config.seed,
            epoch,
        );
        for batch in batches {
            let (x, y, labels) = batch.into_tensors(&contract, &device);
            let logits = model.forward(x);
            let loss = loss_fn.forward(logits.clone(), y.clone());
            let (l, c) = loss_and_correct(&loss, &logits, &labels);
            loss_sum += l * labels.len() as f64;
            correct += c;
            seen += labels.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let step_lr = scheduler.step();
            lr = step_lr.base();
            model = optim.step(step_lr, model, grads);
            let per_s = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(seen as u64);
            bar.set_message(format!(
                "loss {:.4} acc {:.1}% {:.1} img/s",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                per_s
            ));
        }
        bar.finish_and_clear();
        let images_per_s = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let (valid_loss, valid_accuracy) =
            validate(&model, &val, &contract, &loss_fn, &device, config.batch);
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            valid_loss,
            valid_accuracy,
            learning_rate: lr,
            images_per_s,
        };
        let improved = state.best_val_loss.is_none_or(|b| valid_loss < b);
        if improved {
            state.best_val_loss = Some(valid_loss);
            state.best_epoch = epoch + 1;
            state.stale_epochs = 0;
            save_model_atomically(&model, &run.best_model())?;
            if config.average_from.is_some() {
                // model-best.bpk is a single epoch again until the average is finished.
                save_model_atomically(&model, &run.best_epoch_model())?;
                remove_if_present(&run.average_summary())?;
            }
        } else {
            state.stale_epochs += 1;
        }
        state.epochs_done = epoch + 1;
        state.stopped_early = config.patience > 0 && state.stale_epochs >= config.patience;
        eprintln!(
            "epoch {:>3}/{}: train loss {:.4} acc {:.2}% | val loss {:.4} acc {:.2}%{} | {:.1} img/s",
            epoch + 1,
            config.epochs,
            record.train_loss,
            record.train_accuracy * 100.0,
            valid_loss,
            valid_accuracy * 100.0,
            if improved { " (best)" } else { "" },
            images_per_s
        );
        history.push(record);
        if config.average_from.is_some_and(|from| epoch + 1 >= from) {
            match &mut average {
                Some(mean) => mean.add(&model),
                None => average = Some(WeightAverage::new(&model)),
            }
            state.averaged = average.as_ref().map_or(0, |m| m.count);
        }
        save_checkpoint(
            &run,
            &model,
            average.as_ref().map(|m| &m.model),
            &optim,
            &scheduler,
            &state,
            &history,
        )?;
        if state.stopped_early {
            eprintln!(
                "early stop: validation loss has not improved for {} epochs (best at epoch {})",
                state.stale_epochs, state.best_epoch
            );
        }
    }
    if let Some(mean) = average {
        finish_average(
            &run, mean, &train, &val, &contract, &loss_fn, &device, &config,
        )?;
    } else if let Some(from) = config.average_from {
        eprintln!(
            "warning: training ended before epoch {from} (--average-from): the model is the best epoch"
        );
    }
    if req.evaluate {
        evaluate_run(&run, None, config.backend)?;
    }
    Ok(())
}

/// Makes the weight average the run's model: BatchNorm re-measured on the training pictures,
/// validated, written as `model-best.bpk` (the best single epoch stays in `model-best-epoch.bpk`),
/// and described in `average.json`.
#[allow(clippy::too_many_arguments)]
fn finish_average(
    run: &RunDir,
    mean: WeightAverage,
    train: &LabeledImages,
    val: &LabeledImages,
    contract: &ModelContract,
    loss_fn: &CrossEntropyLoss,
    device: &Device,
    config: &crate::run::RunConfig,
) -> Result<()> {
    let count = mean.count;
    let augment = config.augment.is_active().then(|| config.augment.clone());
    eprintln!(
        "averaged {count} epoch(s): re-measuring BatchNorm statistics on the training pictures \
         (shuffled{})",
        if augment.is_some() { ", augmented" } else { "" }
    );
    let model = remeasure_batch_norm(
        mean.model,
        train,
        contract,
        device,
        config.batch,
        augment,
        config.seed,
    );
    let (loss, accuracy) = validate(&model, val, contract, loss_fn, device, config.batch);
    eprintln!(
        "weight average of {count} epoch(s): val loss {loss:.4} acc {:.2}% (becomes the run's model)",
        accuracy * 100.0
    );
    save_model_atomically(&model, &run.best_model())?;
    write_json(
        &run.average_summary(),
        &AverageSummary {
            snapshots: count,
            from_epoch: config.average_from.unwrap_or(1),
            valid_loss: loss,
            valid_accuracy: accuracy,
        },
    )
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The loss: cross-entropy on logits, with inverse-frequency class weights if asked.
fn loss(train_counts: &[usize], weighted: bool, device: &Device) -> CrossEntropyLoss {
    let weights = weighted.then(|| class_weights(train_counts));
    CrossEntropyLossConfig::new()
        .with_weights(weights)
        .init(device)
}

/// The batch's mean loss and how many predictions were right.
fn loss_and_correct(
    loss: &burn::tensor::Tensor<1>,
    logits: &burn::tensor::Tensor<2>,
    labels: &[i64],
) -> (f64, usize) {
    let l = loss
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 loss")[0] as f64;
    let predicted = logits
        .clone()
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("integer argmax");
    let correct = predicted.iter().zip(labels).filter(|(p, t)| p == t).count();
    (l, correct)
}

/// Validation loss and accuracy with the model in inference mode.
fn validate(
    model: &Classifier,
    val: &LabeledImages,
    contract: &ModelContract,
    loss_fn: &CrossEntropyLoss,
    device: &Device,
    batch: usize,
) -> (f64, f64) {
    let inference = model.valid();
    let inner = device.clone().inner();
    let loss_fn = loss_fn.valid();
    let (mut loss_sum, mut correct) = (0.0, 0);
    let order: Vec<usize> = (0..val.len()).collect();
    for b in stream(val.clone(), order, batch, contract.clone(), None, 0, 0) {
        let (x, y, labels) = b.into_tensors(contract, &inner);
        let logits = inference.forward(x);
        let loss = loss_fn.forward(logits.clone(), y);
        let (l, c) = loss_and_correct(&loss, &logits, &labels);
        loss_sum += l * labels.len() as f64;
        correct += c;
    }
    let n = val.len().max(1) as f64;
    (loss_sum / n, correct as f64 / n)
}

/// Writes the model's weights to `path`, whole or not at all even across a power cut.
fn save_model_atomically(model: &Classifier, path: &Path) -> Result<()> {
    write_record(path, model.clone().into_record().into_bytes())
}

/// Writes a burn record serialized in memory (burnpack bytes) with
/// [`durable::write_atomic`]: burn's own file writer does not fsync.
fn write_record<E: std::fmt::Display>(
    path: &Path,
    bytes: std::result::Result<burn_pack::Bytes, E>,
) -> Result<()> {
    let bytes = bytes.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    durable::write_atomic(path, &bytes)?;
    Ok(())
}

/// Writes `checkpoint.tmp/`, then swaps it in for `checkpoint/`: a power cut leaves either the
/// old or the new checkpoint whole (`checkpoint.old/` is the fallback during the swap). Every
/// file is fsynced before the swap, and the run folder after it, before the old one is removed.
fn save_checkpoint(
    run: &RunDir,
    model: &Classifier,
    average: Option<&Classifier>,
    optim: &ModuleOptimizer,
    scheduler: &ModuleLrScheduler,
    state: &TrainState,
    history: &[EpochRecord],
) -> Result<()> {
    let dir = run.checkpoint();
    let tmp = run.0.join("checkpoint.tmp");
    let old = run.0.join("checkpoint.old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    durable::create_dir_all(&tmp)?;
    write_record(
        &tmp.join("model.bpk"),
        model.clone().into_record().into_bytes(),
    )?;
    if let Some(mean) = average {
        write_record(
            &tmp.join("average.bpk"),
            mean.clone().into_record().into_bytes(),
        )?;
    }
    write_record(&tmp.join("optimizer.bpk"), optim.into_bytes())?;
    write_record(
        &tmp.join("scheduler.bpk"),
        scheduler.to_record().into_bytes(),
    )?;
    write_json(&tmp.join("state.json"), state)?;
    write_json(&tmp.join("history.json"), &history)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
    }
    if dir.exists() {
        std::fs::rename(&dir, &old)
            .with_context(|| format!("cannot rename {} to {}", dir.display(), old.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    // Both renames must be on disk before the fallback goes.
    durable::sync_dir(&run.0)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
    }
    write_json(&run.history(), &history)
}

/// The newest complete checkpoint folder, if any.
fn latest_checkpoint(run: &RunDir) -> Option<std::path::PathBuf> {
    [run.checkpoint(), run.0.join("checkpoint.old")]
        .into_iter()
        .find(|d| d.join("state.json").exists())
}

type Restored = (
    Classifier,
    ModuleOptimizer,
    ModuleLrScheduler,
    TrainState,
    Vec<EpochRecord>,
);

fn load_checkpoint(
    dir: &Path,
    model: Classifier,
    optim: ModuleOptimizer,
    scheduler: ModuleLrScheduler,
) -> Result<Restored> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        anyhow::anyhow!("{}: cannot load {what}: {e}", dir.display())
    };
    let model = model
        .try_load_file(dir.join("model.bpk"))
        .map_err(|e| bad("model", &e))?;
    let optim = optim
        .load(dir.join("optimizer.bpk"))
        .map_err(|e| bad("optimizer", &e))?;
    let record =
        LrSchedulerRecord::load(dir.join("scheduler.bpk")).map_err(|e| bad("scheduler", &e))?;
    let scheduler = scheduler.load_record(record);
    let state: TrainState = read_json(&dir.join("state.json"))?;
    let history: Vec<EpochRecord> = read_json(&dir.join("history.json"))?;
    Ok((model, optim, scheduler, state, history))
}

/// Loads the best weights of the run in `dir` into `model`, after checking it is the same
/// architecture and label list, and the same input size unless it is MobileNetV2.
fn init_from_run(
    model: Classifier,
    dir: &Path,
    config: &RunConfig,
    labels: &[String],
) -> Result<Classifier> {
    let earlier = RunDir(dir.to_path_buf());
    let file = earlier
        .load_run()
        .map_err(|e| anyhow::anyhow!("--init-from {}: {e}", dir.display()))?;
    let contract = earlier.load_contract()?;
    // MobileNetV2's and EfficientNet's weights fit any input size (global average pool); the
    // CNN's dense layer does not.
    let size_ok = file.config.size == config.size
        || !matches!(config.model, crate::model::ModelSpec::Cnn { .. });
    if file.config.model != config.model || !size_ok {
        bail!(
            "--init-from {}: that run trained {:?} at {} px, this one {:?} at {} px",
            dir.display(),
            file.config.model,
            file.config.size,
            config.model,
            config.size
        );
    }
    if contract.labels != labels {
        bail!(
            "--init-from {}: its labels {:?} differ from this dataset's {:?}",
            dir.display(),
            contract.labels,
            labels
        );
    }
    let path = earlier.best_model();
    let model = model
        .try_load_file(&path)
        .map_err(|e| anyhow::anyhow!("--init-from {}: cannot load weights: {e}", path.display()))?;
    eprintln!("init-from: started from {}", path.display());
    Ok(model)
}
