//! The one ONNX graph builder, over tract's protobuf types (`tract_onnx::pb`, prost messages):
//! [`GraphBuilder`] writes a graph node by node (trainer export, test fixtures); the free
//! functions make and read single nodes, attributes and tensors (quantize's rewrite of an
//! existing graph).

use tract_onnx::pb;

/// ONNX IR version written (IR 8 = ONNX 1.10+, understood by onnxruntime and tract).
const IR_VERSION: i64 = 8;
/// Default-domain opset written.
pub const OPSET: i64 = 13;

/// Builds one ONNX graph: nodes in order, weights as initializers, unique value names.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    count: usize,
}

/// An integer attribute.
pub fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

/// A tensor initializer holding `raw` little-endian bytes of `data_type`.
pub fn tensor(
    name: &str,
    dims: &[i64],
    data_type: pb::tensor_proto::DataType,
    raw: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// An f32 tensor initializer.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    tensor(
        name,
        dims,
        pb::tensor_proto::DataType::Float,
        values.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// The values of an f32 tensor (raw little-endian bytes or `float_data`); `None` if it is not f32.
pub fn f32_values(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    if t.raw_data.is_empty() {
        return Some(t.float_data.clone());
    }
    Some(
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// One node.
pub fn node_proto(
    op: &str,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attributes: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name,
        input: inputs,
        output: outputs,
        attribute: attributes,
        ..Default::default()
    }
}

/// A float tensor value type with the given dims (`None` = symbolic `batch`).
fn float_type(dims: &[Option<i64>]) -> pb::TypeProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: pb::tensor_proto::DataType::Float as i32,
            shape: Some(pb::TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| Dimension {
                        value: Some(match d {
                            Some(n) => Value::DimValue(*n),
                            None => Value::DimParam("batch".into()),
                        }),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    }
}

/// A named graph input or output.
pub fn value_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(float_type(dims)),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.count += 1;
        format!("{stem}_{}", self.count)
    }

    /// Adds a float initializer and returns its name.
    pub fn constant(&mut self, stem: &str, dims: &[usize], data: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(stem);
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        self.initializers.push(f32_tensor(&name, &dims, &data));
        name
    }

    /// Adds a node and returns its (single) output name; `output` names it, else a fresh name.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<pb::AttributeProto>,
        output: Option<&str>,
    ) -> String {
        let out = output.map_or_else(|| self.fresh(&op.to_ascii_lowercase()), str::to_string);
        let name = self.fresh(op);
        let inputs = inputs.iter().map(|s| s.to_string()).collect();
        self.nodes
            .push(node_proto(op, name, inputs, vec![out.clone()], attributes));
        out
    }

    /// `Conv` with a `[out, in/groups, k, k]` weight, bias, square stride and symmetric padding.
    pub fn conv(
        &mut self,
        x: &str,
        weight: (&[usize], Vec<f32>),
        bias: Vec<f32>,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> String {
        let (dims, w) = weight;
        let w = self.constant("conv_w", dims, w);
        let b = self.constant("conv_b", &[dims[0]], bias);
        let (k, s, p) = (dims[2] as i64, stride as i64, pad as i64);
        self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                attr_ints("kernel_shape", &[k, dims[3] as i64]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", groups as i64),
            ],
            None,
        )
    }

    /// `Clip(x, lo, hi)` (opset 11+: bounds as inputs).
    pub fn clip(&mut self, x: &str, lo: f32, hi: f32) -> String {
        let lo = self.constant("clip_min", &[], vec![lo]);
        let hi = self.constant("clip_max", &[], vec![hi]);
        self.node("Clip", &[x, &lo, &hi], vec![], None)
    }

    /// `Gemm(x, W, b)` for a burn `Linear` (weight `[in, out]`, so no transpose).
    pub fn linear(
        &mut self,
        x: &str,
        weight: (usize, usize, Vec<f32>),
        bias: Vec<f32>,
        output: Option<&str>,
    ) -> String {
        let (d_in, d_out, w) = weight;
        let w = self.constant("gemm_w", &[d_in, d_out], w);
        let b = self.constant("gemm_b", &[d_out], bias);
        self.node("Gemm", &[x, &w, &b], vec![], output)
    }

    /// `MaxPool` with a square kernel and stride.
    pub fn max_pool(&mut self, x: &str, k: usize) -> String {
        let k = k as i64;
        self.node(
            "MaxPool",
            &[x],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[k, k]),
            ],
            None,
        )
    }

    /// `Flatten` from axis 1.
    pub fn flatten(&mut self, x: &str) -> String {
        self.node("Flatten", &[x], vec![attr_int("axis", 1)], None)
    }

    /// `Softmax` over axis 1.
    pub fn softmax(&mut self, x: &str, output: &str) -> String {
        self.node("Softmax", &[x], vec![attr_int("axis", 1)], Some(output))
    }

    /// The finished model with one input, the given outputs and metadata.
    pub fn finish(
        self,
        input: pb::ValueInfoProto,
        outputs: Vec<pb::ValueInfoProto>,
        metadata: Vec<(String, String)>,
        producer_version: &str,
    ) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "leukoscope".into(),
            producer_version: producer_version.into(),
            graph: Some(pb::GraphProto {
                node: self.nodes,
                name: "leukoscope".into(),
                initializer: self.initializers,
                input: vec![input],
                output: outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| pb::StringStringEntryProto { key, value })
                .collect(),
            ..Default::default()
        }
    }
}
