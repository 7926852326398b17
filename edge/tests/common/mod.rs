//! A tiny hand-made ONNX model and picture helpers shared by the edge integration tests.

#![allow(dead_code)]

use std::path::Path;

use leukoscope_model::contract::ModelContract;
use leukoscope_model::onnx::graph::{GraphBuilder, attr_int, value_info};
use prost::Message;

/// image → GlobalAveragePool → Flatten → Gemm(3 → 2) → Softmax = probabilities: the first
/// label for reddish pictures, the second for bluish ones, `gain` sets how sharply.
pub fn write_model_with(path: &Path, labels: [&str; 2], gain: f32, with_contract: bool) {
    let mut g = GraphBuilder::new();
    let pooled = g.node("GlobalAveragePool", &["image"], vec![], None);
    let flat = g.flatten(&pooled);
    let w = vec![gain, -gain, 0.0, 0.0, -gain, gain];
    let logits = g.linear(&flat, (3, 2, w), vec![0.0, 0.0], Some("logits"));
    g.node(
        "Softmax",
        &[&logits],
        vec![attr_int("axis", 1)],
        Some("probabilities"),
    );
    let mut metadata = vec![];
    if with_contract {
        let mut c = ModelContract::new(labels.map(String::from).to_vec(), 8);
        c.mean = [0.5; 3];
        c.std = [0.5; 3];
        metadata = c.to_metadata();
    }
    let model = g.finish(
        value_info("image", &[None, Some(3), Some(8), Some(8)]),
        vec![value_info("probabilities", &[None, Some(2)])],
        metadata,
        "edge-tests",
    );
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

/// The classify tests' model: "red" and "blue", gain 2.
pub fn write_model(path: &Path, with_contract: bool) {
    write_model_with(path, ["red", "blue"], 2.0, with_contract);
}

/// A seeded synthetic smear field as JPEG (quality 90), its red channel shifted by `red_shift`
/// and its blue channel by the opposite (so the tiny model calls it the first label when
/// positive, the second when negative).
pub fn smear_jpeg(width: u32, height: u32, seed: u64, red_shift: i16) -> Vec<u8> {
    let mut img = edge::quality::synthetic_smear(width, height, seed);
    for px in img.pixels_mut() {
        px[0] = (i16::from(px[0]) + red_shift).clamp(0, 255) as u8;
        px[2] = (i16::from(px[2]) - red_shift).clamp(0, 255) as u8;
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// Like [`write_model_with`] (gain 60, with a contract), plus `1e-6 × sqrt(brightness − dim)`
/// added to the logits, where brightness is the mean of the normalized input (−1..1): a picture
/// darker than `dim` gives NaN outputs, an inference failure; brighter ones classify as with the
/// tiny model.
pub fn write_fragile_model(path: &Path, labels: [&str; 2], dim: f32) {
    let mut g = GraphBuilder::new();
    let pooled = g.node("GlobalAveragePool", &["image"], vec![], None);
    let flat = g.flatten(&pooled);
    let gain = 60.0;
    let w = vec![gain, -gain, 0.0, 0.0, -gain, gain];
    let logits = g.linear(&flat, (3, 2, w), vec![0.0, 0.0], Some("logits"));
    let third = 1.0 / 3.0;
    let brightness = g.linear(&flat, (3, 1, vec![third; 3]), vec![-dim], None);
    let guard = g.node("Sqrt", &[&brightness], vec![], None);
    // Not 0: a product with a constant zero would be folded away.
    let tiny = g.constant("tiny", &[1], vec![1e-6]);
    let nothing = g.node("Mul", &[&guard, &tiny], vec![], None);
    let guarded = g.node("Add", &[&logits, &nothing], vec![], None);
    g.node(
        "Softmax",
        &[&guarded],
        vec![attr_int("axis", 1)],
        Some("probabilities"),
    );
    let mut c = ModelContract::new(labels.map(String::from).to_vec(), 8);
    c.mean = [0.5; 3];
    c.std = [0.5; 3];
    let model = g.finish(
        value_info("image", &[None, Some(3), Some(8), Some(8)]),
        vec![value_info("probabilities", &[None, Some(2)])],
        c.to_metadata(),
        "edge-tests",
    );
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

/// The mean of a JPEG's pixels as the fragile model sees it (normalized to −1..1).
pub fn normalized_brightness(jpeg: &[u8]) -> f32 {
    let img = image::load_from_memory(jpeg).unwrap().into_rgb8();
    let sum: f64 = img.as_raw().iter().map(|&v| f64::from(v)).sum();
    (sum / img.as_raw().len() as f64 / 127.5 - 1.0) as f32
}

/// `jpeg` with every pixel scaled by `gain`.
pub fn scaled(jpeg: &[u8], gain: f32) -> Vec<u8> {
    let mut img = image::load_from_memory(jpeg).unwrap().into_rgb8();
    for v in img.iter_mut() {
        *v = (f32::from(*v) * gain).clamp(0.0, 255.0) as u8;
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// `frames` camera frames (320×240 JPEGs) of one synthetic smear field held under the
/// objective: each moved by up to ±2 px (jitter), with sensor noise of ±8 grey levels and a gain
/// of up to ±5 % (exposure flicker). `red_shift` as in [`smear_jpeg`]; `noise_seed` varies the
/// noise between holds of the same field.
pub fn held_field(seed: u64, red_shift: i16, frames: usize, noise_seed: u64) -> Vec<Vec<u8>> {
    held_tinted_field(seed, red_shift, 0, frames, noise_seed)
}

/// [`held_field`] with the green channel shifted by `green_shift` as well: with a large shift,
/// a colour the familiarity model was never fitted on (an unfamiliar picture), which the tiny
/// model still classifies confidently by its red–blue difference.
pub fn held_tinted_field(
    seed: u64,
    red_shift: i16,
    green_shift: i16,
    frames: usize,
    noise_seed: u64,
) -> Vec<Vec<u8>> {
    let scene = edge::quality::synthetic_smear(324, 244, seed);
    let mut rng = leukoscope_model::seeded::SplitMix64::new(noise_seed ^ (seed << 20));
    (0..frames)
        .map(|_| {
            let (dx, dy) = (rng.below(5) as u32, rng.below(5) as u32);
            let gain = 0.95 + rng.unit() * 0.1;
            let img = image::RgbImage::from_fn(320, 240, |x, y| {
                let p = scene.get_pixel(x + dx, y + dy);
                let mut px = [0u8; 3];
                for (c, out) in px.iter_mut().enumerate() {
                    let shift = match c {
                        0 => f32::from(red_shift),
                        2 => -f32::from(red_shift),
                        _ => f32::from(green_shift),
                    };
                    let v = (f32::from(p[c]) + shift) * gain + (rng.unit() - 0.5) * 16.0;
                    *out = v.clamp(0.0, 255.0) as u8;
                }
                image::Rgb(px)
            });
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&img)
                .unwrap();
            out
        })
        .collect()
}

/// The green shift that makes [`held_tinted_field`] pictures unfamiliar to
/// [`write_familiar_model`]'s score.
pub const UNFAMILIAR_GREEN: i16 = -70;

/// The pooled features (mean normalized colour) the tiny model's graph computes for `jpeg`.
fn pooled(jpeg: &[u8], contract: &ModelContract) -> Vec<f32> {
    let img = image::load_from_memory(jpeg).unwrap().into_rgb8();
    let input = leukoscope_model::preprocess::image_to_input(&img, contract).unwrap();
    let plane = input.len() / 3;
    (0..3)
        .map(|c| input[c * plane..(c + 1) * plane].iter().sum::<f32>() / plane as f32)
        .collect()
}

/// [`write_model_with`] (with a contract) plus an unfamiliarity score in the graph, fitted on
/// [`held_field`] frames of both colour families (red shift +20 and −20, the first label and
/// the second): such pictures are familiar, [`held_tinted_field`] ones with
/// [`UNFAMILIAR_GREEN`] are not. The threshold is twice the largest score of the fitted
/// frames. Returns the threshold.
pub fn write_familiar_model(path: &Path, labels: [&str; 2], gain: f32) -> f32 {
    use leukoscope_model::familiarity::{MahalanobisFit, Unfamiliarity, pooled_features};
    let mut contract = ModelContract::new(labels.map(String::from).to_vec(), 8);
    contract.mean = [0.5; 3];
    contract.std = [0.5; 3];
    let (mut features, mut classes) = (Vec::new(), Vec::new());
    for seed in 0..12u64 {
        for (class, shift) in [(0, 20), (1, -20)] {
            for jpeg in held_field(500 + seed, shift, 3, seed) {
                features.push(pooled(&jpeg, &contract));
                classes.push(class);
            }
        }
    }
    let fit = MahalanobisFit::fit(&features, &classes, 2, 0.1).unwrap();
    let largest = features.iter().map(|f| fit.score(f)).fold(0.0f32, f32::max);
    let threshold = 2.0 * largest;
    let unfamiliar = pooled(
        &held_tinted_field(9, 20, UNFAMILIAR_GREEN, 1, 0)[0],
        &contract,
    );
    assert!(
        fit.score(&unfamiliar) > 2.0 * threshold,
        "the tinted picture must be clearly unfamiliar: {} vs {threshold}",
        fit.score(&unfamiliar)
    );

    let mut g = GraphBuilder::new();
    let pooled = g.node("GlobalAveragePool", &["image"], vec![], None);
    let flat = g.flatten(&pooled);
    let w = vec![gain, -gain, 0.0, 0.0, -gain, gain];
    let logits = g.linear(&flat, (3, 2, w), vec![0.0, 0.0], Some("logits"));
    g.node(
        "Softmax",
        &[&logits],
        vec![attr_int("axis", 1)],
        Some("probabilities"),
    );
    contract.unfamiliarity = Some(Unfamiliarity {
        output: leukoscope_model::familiarity::OUTPUT.into(),
        method: "mahalanobis".into(),
        features: String::new(),
        dims: 3,
        threshold,
        validation_rejected: 0.0,
        shrinkage: 0.1,
    });
    let mut model = g.finish(
        value_info("image", &[None, Some(3), Some(8), Some(8)]),
        vec![value_info("probabilities", &[None, Some(2)])],
        vec![],
        "edge-tests",
    );
    let graph = model.graph.as_mut().unwrap();
    let features = pooled_features(graph).expect("the pooled features");
    fit.append_to_graph(graph, &features).unwrap();
    if let Some(u) = contract.unfamiliarity.as_mut() {
        u.features = features;
    }
    // The metadata entries as the builder writes them (the contract now names the features).
    model.metadata_props = GraphBuilder::new()
        .finish(
            value_info("image", &[None]),
            vec![],
            contract.to_metadata(),
            "edge-tests",
        )
        .metadata_props;
    std::fs::write(path, model.encode_to_vec()).unwrap();
    threshold
}

/// The tiny model ([`write_model_with`], gain 60) with an input of `size` px and, when given,
/// the pixel size `um_per_px` (`leukoscope.um_per_px`) in its contract.
pub fn write_model_at_scale(path: &Path, labels: [&str; 2], size: u32, um_per_px: Option<f64>) {
    let mut g = GraphBuilder::new();
    let pooled = g.node("GlobalAveragePool", &["image"], vec![], None);
    let flat = g.flatten(&pooled);
    let gain = 60.0;
    let w = vec![gain, -gain, 0.0, 0.0, -gain, gain];
    let logits = g.linear(&flat, (3, 2, w), vec![0.0, 0.0], Some("logits"));
    g.node(
        "Softmax",
        &[&logits],
        vec![attr_int("axis", 1)],
        Some("probabilities"),
    );
    let mut c = ModelContract::new(labels.map(String::from).to_vec(), size);
    c.mean = [0.5; 3];
    c.std = [0.5; 3];
    c.um_per_px = um_per_px;
    let side = Some(i64::from(size));
    let model = g.finish(
        value_info("image", &[None, Some(3), side, side]),
        vec![value_info("probabilities", &[None, Some(2)])],
        c.to_metadata(),
        "edge-tests",
    );
    std::fs::write(path, model.encode_to_vec()).unwrap();
}
