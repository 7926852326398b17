//! Where tract spends its time: per-operator wall time of an optimized plan, the evidence behind
//! the choice of int8 representation (see the README's quantize section).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

use crate::QuantizeError;
use leukoscope_model::onnx::OnnxFile;

/// Time spent in one kind of operator of the optimized plan, per inference.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpTime {
    /// tract's operator name after optimization (e.g. `OptMatMul`, `DepthWise`, `Im2col`).
    pub op: String,
    /// Nodes of this kind in the plan.
    pub nodes: usize,
    /// Median-of-runs milliseconds per inference, summed over the nodes.
    pub ms: f64,
}

/// Runs `file` `runs` times on a zero input (batch 1, the contract's size) and returns the time
/// per operator kind, most expensive first.
pub fn profile(file: &OnnxFile, runs: usize) -> Result<Vec<OpTime>, QuantizeError> {
    let plan = crate::model_file::plan_exposing(file, &[])?;
    let (h, w) = file.input_hw();
    let engine = |e: TractError| QuantizeError::Engine {
        path: file.path().to_path_buf(),
        reason: format!("{e:#}"),
    };
    let input: TValue = Tensor::zero::<f32>(&[1, 3, h, w]).map_err(engine)?.into();
    let mut per_node: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan).map_err(engine)?;
    for run in 0..runs.max(1) + 2 {
        let mut times: Vec<(usize, f64)> = Vec::new();
        state
            .run_plan_with_eval(tvec!(input.clone()), |ctx, op_state, node, inputs| {
                let t = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                times.push((node.id, t.elapsed().as_secs_f64() * 1e3));
                out
            })
            .map_err(engine)?;
        // The first two runs warm caches and lazily packed weights up.
        if run >= 2 {
            for (id, ms) in times {
                per_node.entry(id).or_default().push(ms);
            }
        }
    }
    let model = plan.model();
    let mut by_op: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for (id, mut times) in per_node {
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let e = by_op
            .entry(model.node(id).op().name().to_string())
            .or_default();
        e.0 += 1;
        e.1 += median;
    }
    let mut out: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, (nodes, ms))| OpTime { op, nodes, ms })
        .collect();
    out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(out)
}

/// Convenience: [`profile`] of a model file.
pub fn profile_path(path: &Path, runs: usize) -> Result<Vec<OpTime>, QuantizeError> {
    profile(&OnnxFile::read(path)?, runs)
}
