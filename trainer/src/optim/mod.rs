//! Optimizers and learning-rate schedules for training.
//!
//! Adam and AdamW come from burn; Adamax (the seed paper's optimizer) is not in burn 0.22 and is
//! implemented here as a burn optimizer, so it checkpoints and resumes like the others.

mod adamax;

pub use adamax::AdamaxConfig;

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::{
    LrSchedulerConfig, constant::ConstantLr, cosine::CosineAnnealingLrSchedulerConfig,
    linear::LinearLrSchedulerConfig, sequential::SequentialLrSchedulerConfig,
};
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};
use serde::{Deserialize, Serialize};

/// Which optimizer a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (the seed paper's default; β = 0.9, 0.999).
    Adam,
    /// Adamax (Adam with the infinity norm).
    Adamax,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// How the learning rate changes over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// Cosine annealing from the rate to 1 % of it over the run.
    Cosine,
    /// One-cycle: linear warm-up from 4 % to the rate over the first 30 % of steps, then cosine
    /// annealing to 0.04 % of it.
    OneCycle,
}

/// Builds the optimizer.
pub fn build_optimizer(kind: OptimizerKind, weight_decay: f32) -> ModuleOptimizer {
    let decay =
        (weight_decay > 0.0).then(|| burn::optim::decay::WeightDecayConfig::new(weight_decay));
    match kind {
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        OptimizerKind::Adamax => AdamaxConfig::new().with_weight_decay(weight_decay).init(),
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(if weight_decay > 0.0 {
                weight_decay
            } else {
                1e-2
            })
            .init(),
    }
}

/// Builds the learning-rate schedule for `total_steps` optimizer steps.
pub fn build_schedule(
    schedule: Schedule,
    lr: f64,
    total_steps: usize,
) -> Result<ModuleLrScheduler, String> {
    let total = total_steps.max(2);
    match schedule {
        Schedule::Constant => Ok(ModuleLrScheduler::new(ConstantLr::from(lr))),
        Schedule::Cosine => CosineAnnealingLrSchedulerConfig::new(lr, total)
            .with_min_lr(lr * 0.01)
            .init(),
        Schedule::OneCycle => {
            let warmup = (total * 3 / 10).max(1);
            let warm: LrSchedulerConfig =
                LinearLrSchedulerConfig::new(lr * 0.04, lr, warmup).into();
            let anneal: LrSchedulerConfig =
                CosineAnnealingLrSchedulerConfig::new(lr, (total - warmup).max(1))
                    .with_min_lr(lr * 4e-4)
                    .into();
            SequentialLrSchedulerConfig::new(vec![warm, anneal], vec![warmup]).init()
        }
    }
}
