//! `trainer bench`: training throughput (images/s) of one architecture on random data, for
//! comparing backends, thread counts and PyTorch (`bench/pytorch_train_bench.py`).

use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use serde::Serialize;

use crate::backend::{BackendKind, current_threads, training_device};
use crate::model::ModelSpec;

/// What to measure.
pub struct BenchRequest {
    /// Architecture.
    pub model: ModelSpec,
    /// Square input side.
    pub size: usize,
    /// Images per batch.
    pub batch: usize,
    /// Classes.
    pub classes: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Backend.
    pub backend: BackendKind,
}

/// The measurement (`--format json` prints it).
#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// Model family and width.
    pub model: String,
    /// Input side.
    pub size: usize,
    /// Batch size.
    pub batch: usize,
    /// Parameters.
    pub parameters: usize,
    /// CPU threads burn-flex used.
    pub threads: usize,
    /// Backend.
    pub backend: BackendKind,
    /// Median time of one training step (forward, backward, Adam update).
    pub step_ms_p50: f64,
    /// Slowest timed step.
    pub step_ms_max: f64,
    /// Training images per second at the median step time.
    pub images_per_s: f64,
}

/// Runs `warmup + steps` training steps on random images and reports the timed ones.
pub fn run(req: &BenchRequest) -> Result<BenchResult> {
    let mut results = run_interleaved(req, &[])?;
    Ok(results.remove(0))
}

/// Times `req.model` and each of `others` (same size, batch, classes and backend) in
/// interleaved training steps — one step of each model in turn, after each model's warm-up — so
/// the machine's changing load hits them alike and their ratios are comparable. Results are in
/// the order `req.model`, then `others`.
pub fn run_interleaved(req: &BenchRequest, others: &[ModelSpec]) -> Result<Vec<BenchResult>> {
    let device = training_device(req.backend)?;
    device.seed(0);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let labels: Vec<i64> = (0..req.batch).map(|i| (i % req.classes) as i64).collect();
    let specs: Vec<&ModelSpec> = std::iter::once(&req.model).chain(others).collect();
    let mut models: Vec<_> = specs
        .iter()
        .map(|spec| {
            let model = spec.init(req.classes, req.size, &device);
            (
                model,
                AdamConfig::new().init(),
                Vec::with_capacity(req.steps),
            )
        })
        .collect();
    for step in 0..req.warmup + req.steps {
        // Each model is moved through its optimizer step (not cloned), as in a training run.
        models = models
            .into_iter()
            .map(|(model, mut optim, mut times)| -> Result<_> {
                let x = Tensor::<4>::random(
                    [req.batch, 3, req.size, req.size],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let y = Tensor::<1, Int>::from_data(
                    TensorData::new(labels.clone(), [req.batch]),
                    &device,
                );
                let started = Instant::now();
                let loss = loss_fn.forward(model.forward(x), y);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let model = optim.step(1e-4, model, grads);
                // Reading one weight back forces the lazy backend to finish the step.
                let _ = model.num_params();
                device
                    .sync()
                    .map_err(|e| anyhow::anyhow!("backend: {e:?}"))?;
                if step >= req.warmup {
                    times.push(started.elapsed().as_secs_f64() * 1e3);
                }
                Ok((model, optim, times))
            })
            .collect::<Result<_>>()?;
    }
    Ok(specs
        .into_iter()
        .zip(models)
        .map(|(spec, (model, _, mut times))| {
            times.sort_by(f64::total_cmp);
            let p50 = times[times.len() / 2];
            BenchResult {
                model: spec.describe(),
                size: req.size,
                batch: req.batch,
                parameters: model.num_params(),
                threads: current_threads(),
                backend: req.backend,
                step_ms_p50: p50,
                step_ms_max: *times.last().unwrap_or(&p50),
                images_per_s: req.batch as f64 / (p50 / 1e3),
            }
        })
        .collect())
}
