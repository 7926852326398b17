//! The run folder: everything a training run writes, enough to resume, evaluate and export it.
//!
//! ```text
//! RUN_DIR/
//!   run.json          settings of the run (RunConfig) and facts about its data (RunInfo)
//!   contract.json     the model contract (leukoscope_model::contract::ModelContract)
//!   manifest.csv      the split: file,sha256,class,split
//!   history.json      one EpochRecord per finished epoch
//!   checkpoint/       the last finished epoch: model.bpk, optimizer.bpk, scheduler.bpk, state.json
//!                     (and average.bpk, the weight average so far, with --average-from)
//!   model-best.bpk    weights with the lowest validation loss so far; with --average-from, once
//!                     training ends, the weight average, described in average.json (and
//!                     model-best-epoch.bpk the best single epoch)
//!   report/           the test-split evaluation report (JSON, Markdown, PNG)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use leukoscope_model::contract::ModelContract;
use leukoscope_model::evaluation_report::EpochRecord;
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::data::augment::AugmentConfig;
use crate::data::balance::Sampling;
use crate::data::split::SplitFractions;
use crate::model::ModelSpec;
use crate::optim::{OptimizerKind, Schedule};

/// Settings of a training run (what `trainer fit` was asked to do).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// Dataset folder (one subfolder per class).
    pub data: PathBuf,
    /// Architecture.
    pub model: ModelSpec,
    /// Square input side in pixels.
    pub size: u32,
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Images per batch.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Weight decay (L2 for Adam/Adamax, decoupled for AdamW).
    pub weight_decay: f32,
    /// Early stopping: epochs without a lower validation loss before stopping (0 = never).
    pub patience: usize,
    /// Seed for the split, sampling, augmentation, initialisation and dropout.
    pub seed: u64,
    /// Validation and test fractions.
    pub fractions: SplitFractions,
    /// Test split by whole groups (patients, subjects): the regex whose first capture on a file
    /// name is its group (`--test-group`); `None` splits per image.
    #[serde(default)]
    pub test_group: Option<String>,
    /// How training images are drawn.
    pub sampling: Sampling,
    /// Inverse-frequency class weights in the loss.
    pub class_weights: bool,
    /// Training augmentation.
    pub augment: AugmentConfig,
    /// Refuse unreadable files instead of skipping them.
    pub strict: bool,
    /// torchvision weights (MobileNetV2 or EfficientNet) the backbone started from, if any.
    pub pretrained: Option<PathBuf>,
    /// The earlier run whose best weights this run started from, if any (fine-tuning).
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Stochastic weight averaging: the 1-based epoch from which the end-of-epoch weights are
    /// averaged into the run's model (`None`: the best epoch by validation loss is the model).
    #[serde(default)]
    pub average_from: Option<usize>,
    /// Compute backend.
    pub backend: BackendKind,
    /// Colour normalization written into the model's contract (`--colour`); runs made before it
    /// existed had none.
    #[serde(default)]
    pub colour: ColourMethod,
}

/// The colour normalization a run trains with (`leukoscope_model::colour`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ColourMethod {
    /// Pictures as they are.
    #[default]
    None,
    /// Each picture's background made the training split's median background colour.
    BackgroundWhite,
}

/// Facts established when the run started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// Run id: the folder name and the start time.
    pub id: String,
    /// Start time (RFC 3339).
    pub created: String,
    /// leukoscope version that trained it.
    pub version: String,
    /// Class names in model output order.
    pub classes: Vec<String>,
    /// Images per class in train, val and test.
    pub split_counts: Vec<[usize; 3]>,
    /// Synthetic (SMOTE) training images added per class.
    pub synthetic: Vec<usize>,
    /// Files that could not be read, with the reason.
    pub skipped: Vec<(String, String)>,
    /// sha256 of manifest.csv.
    pub manifest_sha256: String,
    /// Model parameters.
    pub parameters: u64,
    /// What the pretrained-weight load matched and missed, if one was asked for.
    pub pretrained_report: Option<String>,
}

/// `run.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunFile {
    /// Settings.
    pub config: RunConfig,
    /// Facts.
    pub info: RunInfo,
}

/// Progress of the run at the end of the last finished epoch (`checkpoint/state.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished (the next epoch to run, counting from 0).
    pub epochs_done: usize,
    /// Lowest validation loss so far.
    pub best_val_loss: Option<f64>,
    /// Epoch (1-based) that reached it.
    pub best_epoch: usize,
    /// Epochs since the validation loss last improved.
    pub stale_epochs: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// End-of-epoch snapshots in the weight average (`checkpoint/average.bpk`), with
    /// `--average-from`.
    #[serde(default)]
    pub averaged: usize,
}

/// `average.json`: present when `model-best.bpk` holds the weight average (`--average-from`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AverageSummary {
    /// End-of-epoch snapshots averaged.
    pub snapshots: usize,
    /// The first of them (1-based epoch).
    pub from_epoch: usize,
    /// Validation loss of the average (BatchNorm re-measured).
    pub valid_loss: f64,
    /// Validation accuracy of the average.
    pub valid_accuracy: f64,
}

/// Paths inside a run folder.
#[derive(Clone, Debug)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    /// `run.json`.
    pub fn run_file(&self) -> PathBuf {
        self.0.join("run.json")
    }
    /// `contract.json`.
    pub fn contract(&self) -> PathBuf {
        self.0.join("contract.json")
    }
    /// `manifest.csv`.
    pub fn manifest(&self) -> PathBuf {
        self.0.join("manifest.csv")
    }
    /// `history.json`.
    pub fn history(&self) -> PathBuf {
        self.0.join("history.json")
    }
    /// `checkpoint/`.
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint")
    }
    /// `model-best.bpk`.
    pub fn best_model(&self) -> PathBuf {
        self.0.join("model-best.bpk")
    }
    /// `model-best-epoch.bpk`: with `--average-from`, the best single epoch's weights (the
    /// average replaces them as `model-best.bpk` when training ends).
    pub fn best_epoch_model(&self) -> PathBuf {
        self.0.join("model-best-epoch.bpk")
    }
    /// `average.json`.
    pub fn average_summary(&self) -> PathBuf {
        self.0.join("average.json")
    }
    /// `report/`.
    pub fn report(&self) -> PathBuf {
        self.0.join("report")
    }

    /// Reads `run.json`.
    pub fn load_run(&self) -> Result<RunFile> {
        read_json(&self.run_file())
    }

    /// Reads `contract.json`.
    pub fn load_contract(&self) -> Result<ModelContract> {
        read_json(&self.contract())
    }

    /// Reads `history.json` (empty when missing).
    pub fn load_history(&self) -> Result<Vec<EpochRecord>> {
        if self.history().exists() {
            read_json(&self.history())
        } else {
            Ok(Vec::new())
        }
    }
}

/// Reads a JSON file, naming it in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Writes a JSON file whole or not at all, even across a power cut
/// ([`leukoscope_model::durable::write_atomic`]), naming it in any error.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .with_context(|| format!("cannot write {}", path.display()))?;
    leukoscope_model::durable::write_atomic(path, text.as_bytes())?;
    Ok(())
}
