//! Small seeded MobileNetV2-like ONNX graphs and labeled picture folders for the tests, built
//! directly with tract's protobuf types (no trainer, no burn).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use leukoscope_model::contract::{ModelContract, metadata_keys as keys};
use leukoscope_model::onnx::graph::{GraphBuilder, value_info};
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tract_onnx::pb;

pub const SIZE: u32 = 24;
pub const LABELS: [&str; 4] = ["Benign", "Early", "Pre", "Pro"];

pub fn contract() -> ModelContract {
    ModelContract::new(LABELS.map(String::from).to_vec(), SIZE)
}

/// Seeded random weights: a conv's `[out, in/groups, k, k]` weight (He-like scale) and bias.
fn conv_weights(
    rng: &mut StdRng,
    cin: usize,
    cout: usize,
    k: usize,
    group: usize,
) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    let fan_in = (cin / group * k * k) as f32;
    let std = (2.0 / fan_in).sqrt();
    let w: Vec<f32> = (0..cout * cin / group * k * k)
        .map(|_| rng.random_range(-1.7f32..1.7) * std)
        .collect();
    let b: Vec<f32> = (0..cout).map(|_| rng.random_range(-0.1f32..0.1)).collect();
    (vec![cout, cin / group, k, k], w, b)
}

/// A seeded MobileNetV2-like classifier at [`SIZE`]: stem conv + ReLU6, an inverted residual
/// block (expand, depthwise, project, residual Add), a 1×1 conv + ReLU, global average pool,
/// dense (with large weights, so classes are well separated) and softmax; contract metadata.
pub fn tiny_mobilenet(seed: u64) -> pb::ModelProto {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = GraphBuilder::new();
    let mut conv = |g: &mut GraphBuilder, x: &str, cin, cout, k, stride, group| {
        let (dims, w, b) = conv_weights(&mut rng, cin, cout, k, group);
        g.conv(x, (&dims, w), b, stride, k / 2, group)
    };
    let x = conv(&mut g, "image", 3, 8, 3, 2, 1);
    let x = g.clip(&x, 0.0, 6.0);
    let e = conv(&mut g, &x, 8, 24, 1, 1, 1);
    let e = g.clip(&e, 0.0, 6.0);
    let d = conv(&mut g, &e, 24, 24, 3, 1, 24);
    let d = g.clip(&d, 0.0, 6.0);
    let p = conv(&mut g, &d, 24, 8, 1, 1, 1);
    let r = g.node("Add", &[&p, &x], vec![], None);
    let h = conv(&mut g, &r, 8, 32, 1, 1, 1);
    let h = g.node("Relu", &[&h], vec![], None);
    let pooled = g.node("GlobalAveragePool", &[&h], vec![], None);
    let flat = g.flatten(&pooled);
    let w: Vec<f32> = (0..32 * 4)
        .map(|_| rng.random_range(-1.0f32..1.0) * 3.0)
        .collect();
    let logits = g.linear(&flat, (32, 4, w), vec![0.0; 4], Some("logits"));
    g.softmax(&logits, "probabilities");
    let s = Some(i64::from(SIZE));
    let mut metadata = contract().to_metadata();
    metadata.push((keys::RUN_ID.to_string(), "test-run".to_string()));
    metadata.push((keys::MODEL_FAMILY.to_string(), "mobilenetv2".to_string()));
    g.finish(
        value_info("image", &[None, Some(3), s, s]),
        vec![
            value_info("probabilities", &[None, Some(4)]),
            value_info("logits", &[None, Some(4)]),
        ],
        metadata,
        "quantize-tests",
    )
}

/// Writes [`tiny_mobilenet`] to `dir/name`.
pub fn write_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, tiny_mobilenet(seed).encode_to_vec()).unwrap();
    p
}

/// A seeded smear-like picture: pale background, a few purple blobs whose size and hue depend on
/// the class, so the classes look different.
pub fn picture(class: usize, i: u64) -> image::RgbImage {
    let mut rng = StdRng::seed_from_u64(1000 * class as u64 + i);
    let (w, h) = (40 + (i % 7) as u32, 36);
    let blobs: Vec<(f32, f32, f32)> = (0..3)
        .map(|_| {
            (
                rng.random_range(5.0..35.0),
                rng.random_range(5.0..31.0),
                4.0 + 2.0 * class as f32 + rng.random_range(0.0..2.0),
            )
        })
        .collect();
    let tint = 40 * class as u8;
    image::RgbImage::from_fn(w, h, |x, y| {
        let inside = blobs.iter().any(|(bx, by, r)| {
            let (dx, dy) = (x as f32 - bx, y as f32 - by);
            dx * dx + dy * dy < r * r
        });
        if inside {
            image::Rgb([110 + tint / 2, 50, 150 - tint / 3])
        } else {
            image::Rgb([235, 205 + ((x + y) % 20) as u8, 215])
        }
    })
}

/// A labeled folder with `per_class` PNG pictures per label.
pub fn labeled_folder(dir: &Path, per_class: u64) -> PathBuf {
    for (c, label) in LABELS.iter().enumerate() {
        let d = dir.join(label);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            picture(c, i).save(d.join(format!("{i:03}.png"))).unwrap();
        }
    }
    dir.to_path_buf()
}
