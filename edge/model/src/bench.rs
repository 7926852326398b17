//! Latency of the three stages a frame goes through — decode, preprocess, inference — measured
//! separately (`edge bench`; the quantizer compares variants with the same harness).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::classifier::OnnxClassifier;
use crate::onnx::ModelError;
use crate::preprocess::{Preprocessor, decode_image_bytes};

/// What `edge bench --format json` prints.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The model file.
    pub model: String,
    /// Input size `HxW`.
    pub input_size: String,
    /// Threads the engine used.
    pub threads: usize,
    /// Timed runs per stage.
    pub runs: usize,
    /// Median decode time of the sample JPEG.
    pub decode_ms_p50: f64,
    /// Median resize + normalize time.
    pub preprocess_ms_p50: f64,
    /// Median inference time.
    pub inference_ms_p50: f64,
    /// 95th percentile inference time.
    pub inference_ms_p95: f64,
    /// Frames per second through all three stages at the medians.
    pub fps: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn time_ms<T>(runs: usize, warmup: usize, mut f: impl FnMut() -> T) -> Vec<f64> {
    for _ in 0..warmup {
        std::hint::black_box(f());
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// A synthetic 640×480 smear-like JPEG, for benchmarking without a sample image.
pub fn sample_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        let (dx, dy) = (x as f32 - 320.0, y as f32 - 240.0);
        if (dx * dx + dy * dy).sqrt() < 90.0 {
            image::Rgb([120, 60, 160])
        } else {
            image::Rgb([235, (200 + (x * 7 + y * 3) % 30) as u8, 215])
        }
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("in-memory JPEG encoding");
    out
}

/// Lets tract's matrix products use `threads` threads (1 = tract's default, single-threaded).
/// Process-wide: call before loading models.
pub fn set_engine_threads(threads: usize) {
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(threads),
        );
    }
}

fn sample_image_error(model: &OnnxClassifier, e: impl std::fmt::Display) -> ModelError {
    ModelError::Engine {
        path: model.path().to_path_buf(),
        reason: format!("sample image: {e}"),
    }
}

/// The report of one model from its sorted stage times (ms).
fn report(
    model: &OnnxClassifier,
    threads: usize,
    [decode, preprocess, inference]: [&[f64]; 3],
) -> BenchReport {
    let (d, p, i) = (
        percentile(decode, 0.5),
        percentile(preprocess, 0.5),
        percentile(inference, 0.5),
    );
    BenchReport {
        model: display(model.path()),
        input_size: model.contract().input_size_string(),
        threads: threads.max(1),
        runs: inference.len(),
        decode_ms_p50: d,
        preprocess_ms_p50: p,
        inference_ms_p50: i,
        inference_ms_p95: percentile(inference, 0.95),
        fps: 1e3 / (d + p + i),
    }
}

/// Times decode, preprocess and inference of `jpeg` (`runs` timed after `warmup`); `threads` is
/// what [`set_engine_threads`] was given, reported as is.
pub fn run(
    model: &OnnxClassifier,
    jpeg: &[u8],
    runs: usize,
    warmup: usize,
    threads: usize,
) -> Result<BenchReport, ModelError> {
    let runs = runs.max(1);
    let decoded = decode_image_bytes(jpeg).map_err(|e| sample_image_error(model, e))?;
    let decode = time_ms(runs, warmup, || decode_image_bytes(jpeg));
    let mut pre = Preprocessor::new(model.contract().clone());
    let mut input = vec![0.0; model.contract().input_len()];
    let preprocess = time_ms(runs, warmup, || pre.run_into(&decoded, &mut input));
    model.probabilities(&input)?;
    let inference = time_ms(runs, warmup, || model.probabilities(&input));
    Ok(report(model, threads, [&decode, &preprocess, &inference]))
}

/// Times several models the way [`run`] times one, in interleaved rounds (all models' decode,
/// preprocess and inference runs for round 1, then round 2, …) so that the machine's changing
/// load hits them alike: their ratios are comparable even when the absolute times drift.
/// Reports are in the order of `models`.
pub fn run_interleaved(
    models: &[&OnnxClassifier],
    jpeg: &[u8],
    runs: usize,
    warmup: usize,
    threads: usize,
) -> Result<Vec<BenchReport>, ModelError> {
    const ROUNDS: usize = 5;
    let per_round = runs.max(ROUNDS).div_ceil(ROUNDS);
    struct Timed<'a> {
        model: &'a OnnxClassifier,
        decoded: image::RgbImage,
        pre: Preprocessor,
        input: Vec<f32>,
        times: [Vec<f64>; 3],
    }
    let mut timed = Vec::with_capacity(models.len());
    for &model in models {
        let decoded = decode_image_bytes(jpeg).map_err(|e| sample_image_error(model, e))?;
        let mut pre = Preprocessor::new(model.contract().clone());
        let mut input = vec![0.0; model.contract().input_len()];
        pre.run_into(&decoded, &mut input)
            .map_err(|e| sample_image_error(model, e))?;
        model.probabilities(&input)?;
        time_ms(0, warmup, || model.probabilities(&input));
        timed.push(Timed {
            model,
            decoded,
            pre,
            input,
            times: Default::default(),
        });
    }
    for _ in 0..ROUNDS {
        for t in &mut timed {
            t.times[0].extend(time_ms(per_round, 1, || decode_image_bytes(jpeg)));
            let (pre, decoded, input) = (&mut t.pre, &t.decoded, &mut t.input);
            t.times[1].extend(time_ms(per_round, 1, || pre.run_into(decoded, input)));
            let (model, input) = (t.model, &t.input);
            t.times[2].extend(time_ms(per_round, 1, || model.probabilities(input)));
        }
    }
    Ok(timed
        .into_iter()
        .map(|mut t| {
            for v in &mut t.times {
                v.sort_by(f64::total_cmp);
            }
            let [d, p, i] = &t.times;
            report(t.model, threads, [d, p, i])
        })
        .collect())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
