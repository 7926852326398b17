//! Small seeded MobileNetV2-like ONNX graphs and labeled picture folders for the tests, built
//! directly with tract's protobuf types (no trainer, no burn).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use edge::contract::ModelContract;
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tract_onnx::pb;

pub const SIZE: u32 = 24;
pub const LABELS: [&str; 4] = ["Benign", "Early", "Pre", "Pro"];

pub fn contract() -> ModelContract {
    ModelContract::new(LABELS.map(String::from).to_vec(), SIZE)
}

struct G {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    count: usize,
    rng: StdRng,
}

fn attr_i(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_is(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v),
                                None => Value::DimParam("batch".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl G {
    fn fresh(&mut self, stem: &str) -> String {
        self.count += 1;
        format!("{stem}_{}", self.count)
    }
    fn constant(&mut self, stem: &str, dims: &[i64], v: Vec<f32>) -> String {
        let name = self.fresh(stem);
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
        out: Option<&str>,
    ) -> String {
        let o = out.map_or_else(|| self.fresh(&op.to_lowercase()), String::from);
        let name = self.fresh(op);
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name,
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![o.clone()],
            attribute: attrs,
            ..Default::default()
        });
        o
    }
    fn conv(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: i64,
        group: usize,
    ) -> String {
        let fan_in = (cin / group * k * k) as f32;
        let std = (2.0 / fan_in).sqrt();
        let w: Vec<f32> = (0..cout * cin / group * k * k)
            .map(|_| self.rng.random_range(-1.7f32..1.7) * std)
            .collect();
        let b: Vec<f32> = (0..cout)
            .map(|_| self.rng.random_range(-0.1f32..0.1))
            .collect();
        let w = self.constant(
            "conv_w",
            &[cout as i64, (cin / group) as i64, k as i64, k as i64],
            w,
        );
        let b = self.constant("conv_b", &[cout as i64], b);
        let p = (k / 2) as i64;
        self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                attr_is("kernel_shape", &[k as i64, k as i64]),
                attr_is("strides", &[stride, stride]),
                attr_is("pads", &[p, p, p, p]),
                attr_i("group", group as i64),
            ],
            None,
        )
    }
    fn relu6(&mut self, x: &str) -> String {
        let lo = self.constant("clip_min", &[], vec![0.0]);
        let hi = self.constant("clip_max", &[], vec![6.0]);
        self.node("Clip", &[x, &lo, &hi], vec![], None)
    }
}

/// A seeded MobileNetV2-like classifier at [`SIZE`]: stem conv + ReLU6, an inverted residual
/// block (expand, depthwise, project, residual Add), a 1×1 conv + ReLU, global average pool,
/// dense (with large weights, so classes are well separated) and softmax; contract metadata.
pub fn tiny_mobilenet(seed: u64) -> pb::ModelProto {
    let mut g = G {
        nodes: vec![],
        inits: vec![],
        count: 0,
        rng: StdRng::seed_from_u64(seed),
    };
    let x = g.conv("image", 3, 8, 3, 2, 1);
    let x = g.relu6(&x);
    let e = g.conv(&x, 8, 24, 1, 1, 1);
    let e = g.relu6(&e);
    let d = g.conv(&e, 24, 24, 3, 1, 24);
    let d = g.relu6(&d);
    let p = g.conv(&d, 24, 8, 1, 1, 1);
    let r = g.node("Add", &[&p, &x], vec![], None);
    let h = g.conv(&r, 8, 32, 1, 1, 1);
    let h = g.node("Relu", &[&h], vec![], None);
    let pooled = g.node("GlobalAveragePool", &[&h], vec![], None);
    let flat = g.node("Flatten", &[&pooled], vec![attr_i("axis", 1)], None);
    let w: Vec<f32> = (0..32 * 4)
        .map(|_| g.rng.random_range(-1.0f32..1.0) * 3.0)
        .collect();
    let w = g.constant("gemm_w", &[32, 4], w);
    let b = g.constant("gemm_b", &[4], vec![0.0; 4]);
    g.node("Gemm", &[&flat, &w, &b], vec![], Some("logits"));
    g.node(
        "Softmax",
        &["logits"],
        vec![attr_i("axis", 1)],
        Some("probabilities"),
    );
    let s = SIZE as i64;
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "leukoscope-tests".into(),
        graph: Some(pb::GraphProto {
            name: "tiny_mobilenet".into(),
            node: g.nodes,
            initializer: g.inits,
            input: vec![value_info("image", &[None, Some(3), Some(s), Some(s)])],
            output: vec![
                value_info("probabilities", &[None, Some(4)]),
                value_info("logits", &[None, Some(4)]),
            ],
            ..Default::default()
        }),
        metadata_props: contract()
            .to_metadata()
            .into_iter()
            .chain([
                ("leukoscope.run_id".to_string(), "test-run".to_string()),
                (
                    "leukoscope.model_family".to_string(),
                    "mobilenetv2".to_string(),
                ),
            ])
            .map(|(key, value)| pb::StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    }
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
