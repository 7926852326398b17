//! A tiny hand-made ONNX model and picture helpers shared by the edge integration tests.

#![allow(dead_code)]

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

fn tensor(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute,
        ..Default::default()
    }
}

/// image → GlobalAveragePool → Flatten → Gemm(3 → 2) → Softmax = probabilities: the first
/// label for reddish pictures, the second for bluish ones, `gain` sets how sharply.
pub fn write_model_with(path: &Path, labels: [&str; 2], gain: f32, with_contract: bool) {
    let axis = pb::AttributeProto {
        name: "axis".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "tiny".into(),
        node: vec![
            node("GlobalAveragePool", &["image"], "pooled", vec![]),
            node("Flatten", &["pooled"], "flat", vec![axis.clone()]),
            node("Gemm", &["flat", "w", "b"], "logits", vec![]),
            node("Softmax", &["logits"], "probabilities", vec![axis]),
        ],
        initializer: vec![
            tensor("w", &[3, 2], &[gain, -gain, 0.0, 0.0, -gain, gain]),
            tensor("b", &[2], &[0.0, 0.0]),
        ],
        input: vec![pb::ValueInfoProto {
            name: "image".into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }],
        output: vec![pb::ValueInfoProto {
            name: "probabilities".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut metadata = vec![];
    if with_contract {
        let mut c = edge::contract::ModelContract::new(labels.map(String::from).to_vec(), 8);
        c.mean = [0.5; 3];
        c.std = [0.5; 3];
        metadata = c
            .to_metadata()
            .into_iter()
            .map(|(key, value)| pb::StringStringEntryProto { key, value })
            .collect();
    }
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        metadata_props: metadata,
        ..Default::default()
    };
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
