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
