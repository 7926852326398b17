//! Knowing when it does not know: an unfamiliarity score computed by the model file itself, and
//! temperature-scaled probabilities.
//!
//! **Unfamiliarity** is the Mahalanobis distance of a picture's pooled features (the input of the
//! classifier head) to the nearest class of the training split, with one covariance shared by
//! the classes (Lee et al. 2018), shrunk towards its mean variance so that 1,280 dimensions fitted
//! on ~2,000 pictures stay well conditioned. [`MahalanobisFit::append_to_graph`] writes it into the
//! ONNX graph as the output `unfamiliarity` (standard `MatMul`, `Mul`, `Gemm`, `Add`, `Relu`,
//! `ReduceMin`, `Sqrt`), so tract and onnxruntime compute the same number from the same file.
//! Its threshold is set on the validation split (at most 1 % of validation pictures above it)
//! and recorded in the contract ([`Unfamiliarity`], key `leukoscope.unfamiliarity`).
//!
//! **Temperature** (Guo et al. 2017): the `probabilities` output becomes `softmax(logits / T)`
//! with `T` fitted on the validation split by minimizing the negative log-likelihood
//! ([`fit_temperature`], [`apply_temperature`]); `T` is recorded under `leukoscope.temperature`.
//! The `logits` output stays the network's own.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tract_onnx::pb;

use crate::onnx::graph::{attr_int, attr_ints, f32_tensor, node_proto, value_info};

/// The name of the graph output holding the unfamiliarity score.
pub const OUTPUT: &str = "unfamiliarity";

/// Node and tensor names of what [`MahalanobisFit::append_to_graph`] and [`apply_temperature`]
/// add begin with one of these: a quantizer leaves them in f32 (a distance of whitened
/// 1,280-dimensional features is a difference of large sums that int8 weights would swamp).
pub const NODE_PREFIXES: [&str; 2] = ["unfamiliarity/", "temperature/"];

/// Whether a node belongs to the score or the temperature ([`NODE_PREFIXES`]).
pub fn is_uncertainty_node(name: &str) -> bool {
    NODE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The share of validation pictures the threshold may reject.
pub const VALIDATION_REJECTION: f64 = 0.01;

/// The default shrinkage of the shared covariance towards `mean variance × I`.
pub const DEFAULT_SHRINKAGE: f64 = 0.1;

/// The unfamiliarity score a model file computes and the threshold above which a picture is
/// unfamiliar (ONNX metadata key `leukoscope.unfamiliarity`, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unfamiliarity {
    /// The graph output holding the score (`unfamiliarity`).
    pub output: String,
    /// What the score is: `mahalanobis` (distance of the pooled features to the nearest
    /// training class, shared shrunk covariance).
    pub method: String,
    /// The graph tensor whose values are the features.
    pub features: String,
    /// Number of feature dimensions.
    pub dims: usize,
    /// Scores above this are unfamiliar.
    pub threshold: f32,
    /// The share of the validation split above the threshold when it was set.
    pub validation_rejected: f32,
    /// The covariance shrinkage used.
    pub shrinkage: f32,
}

impl Unfamiliarity {
    /// Whether `score` is above the threshold (a non-finite score is unfamiliar).
    pub fn is_unfamiliar(&self, score: f32) -> bool {
        !score.is_finite() || score > self.threshold
    }
}

/// Fitting or writing the score failed.
#[derive(Debug, Error)]
pub enum FamiliarityError {
    /// The features cannot be fitted.
    #[error("cannot fit the unfamiliarity score: {0}")]
    Fit(String),
    /// The graph does not have the expected shape.
    #[error("cannot add to the graph: {0}")]
    Graph(String),
}

/// Class means and the whitening of a shared covariance, fitted on training features.
#[derive(Clone, Debug)]
pub struct MahalanobisFit {
    dims: usize,
    /// Class means, `k × dims`.
    means: Vec<Vec<f64>>,
    /// `W` (row-major `dims × dims`): `z = f · W` has identity covariance, so the distance is
    /// `‖f·W − μ·W‖`.
    whitening: Vec<f64>,
    shrinkage: f64,
}

impl MahalanobisFit {
    /// Fits class means and the shared covariance of `features` (one vector per picture,
    /// `classes[i]` its class in `0..k`), shrunk by `shrinkage` towards its mean variance.
    pub fn fit(
        features: &[Vec<f32>],
        classes: &[usize],
        k: usize,
        shrinkage: f64,
    ) -> Result<Self, FamiliarityError> {
        let fail = |m: String| FamiliarityError::Fit(m);
        let dims = features.first().map_or(0, Vec::len);
        if dims == 0 || features.len() != classes.len() {
            return Err(fail(format!(
                "{} feature vectors for {} classes",
                features.len(),
                classes.len()
            )));
        }
        if !(0.0..=1.0).contains(&shrinkage) {
            return Err(fail(format!("shrinkage {shrinkage} is not in 0..1")));
        }
        let mut means = vec![vec![0.0f64; dims]; k];
        let mut counts = vec![0usize; k];
        for (f, &c) in features.iter().zip(classes) {
            if f.len() != dims || c >= k {
                return Err(fail(format!(
                    "a feature vector of {} values or class {c}",
                    f.len()
                )));
            }
            counts[c] += 1;
            for (m, &v) in means[c].iter_mut().zip(f) {
                *m += f64::from(v);
            }
        }
        if let Some(c) = counts.iter().position(|&n| n < 2) {
            return Err(fail(format!(
                "class {c} has {} pictures, at least 2 needed",
                counts[c]
            )));
        }
        for (m, &n) in means.iter_mut().zip(&counts) {
            m.iter_mut().for_each(|v| *v /= n as f64);
        }
        // Shared (pooled within-class) covariance, lower triangle accumulated then mirrored.
        let mut cov = vec![0.0f64; dims * dims];
        let mut centred = vec![0.0f64; dims];
        for (f, &c) in features.iter().zip(classes) {
            for (d, x) in centred.iter_mut().enumerate() {
                *x = f64::from(f[d]) - means[c][d];
            }
            for i in 0..dims {
                let xi = centred[i];
                let row = &mut cov[i * dims..i * dims + i + 1];
                for (r, &xj) in row.iter_mut().zip(&centred[..=i]) {
                    *r += xi * xj;
                }
            }
        }
        let n = (features.len() - k).max(1) as f64;
        for i in 0..dims {
            for j in 0..=i {
                let v = cov[i * dims + j] / n;
                cov[i * dims + j] = v;
                cov[j * dims + i] = v;
            }
        }
        let mean_variance = (0..dims).map(|i| cov[i * dims + i]).sum::<f64>() / dims as f64;
        let floor = mean_variance.max(1e-12);
        for i in 0..dims {
            for j in 0..dims {
                let identity = if i == j { floor } else { 0.0 };
                cov[i * dims + j] = (1.0 - shrinkage) * cov[i * dims + j] + shrinkage * identity;
            }
        }
        let chol = cholesky(&cov, dims).ok_or_else(|| {
            fail("the covariance is not positive definite (use more shrinkage)".into())
        })?;
        // Σ = C Cᵀ, Σ⁻¹ = C⁻ᵀ C⁻¹: z = C⁻¹ f, i.e. z (row) = f · C⁻ᵀ, so W = (C⁻¹)ᵀ.
        let inv = invert_lower(&chol, dims);
        let mut whitening = vec![0.0f64; dims * dims];
        for i in 0..dims {
            for j in 0..dims {
                whitening[i * dims + j] = inv[j * dims + i];
            }
        }
        Ok(MahalanobisFit {
            dims,
            means,
            whitening,
            shrinkage,
        })
    }

    /// Number of feature dimensions.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The covariance shrinkage the fit used.
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    fn whiten(&self, v: &[f64]) -> Vec<f64> {
        let d = self.dims;
        let mut z = vec![0.0; d];
        for (i, &x) in v.iter().enumerate() {
            if x != 0.0 {
                for (zj, w) in z.iter_mut().zip(&self.whitening[i * d..(i + 1) * d]) {
                    *zj += x * w;
                }
            }
        }
        z
    }

    /// The score of one feature vector: the distance to the nearest class mean (what the graph
    /// computes, in f64).
    pub fn score(&self, features: &[f32]) -> f32 {
        let f: Vec<f64> = features.iter().map(|&v| f64::from(v)).collect();
        let z = self.whiten(&f);
        self.means
            .iter()
            .map(|m| {
                let zm = self.whiten(m);
                z.iter()
                    .zip(&zm)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
            })
            .fold(f64::INFINITY, f64::min)
            .sqrt() as f32
    }

    /// Adds the score to `graph` as the output [`OUTPUT`], computed from the tensor
    /// `features` (`[batch, dims]`): `z = f·W`, `d²_c = ‖z‖² − 2 z·m_c + ‖m_c‖²`,
    /// `unfamiliarity = sqrt(min_c relu(d²_c))`.
    pub fn append_to_graph(
        &self,
        graph: &mut pb::GraphProto,
        features: &str,
    ) -> Result<(), FamiliarityError> {
        if graph.output.iter().any(|o| o.name == OUTPUT) {
            return Err(FamiliarityError::Graph(format!(
                "the graph already has an output '{OUTPUT}'"
            )));
        }
        if !graph
            .node
            .iter()
            .any(|n| n.output.iter().any(|o| o == features))
        {
            return Err(FamiliarityError::Graph(format!(
                "no node computes the features tensor '{features}'"
            )));
        }
        let d = self.dims;
        let k = self.means.len();
        let class_points: Vec<Vec<f64>> = self.means.iter().map(|m| self.whiten(m)).collect();
        let name = |s: &str| format!("unfamiliarity/{s}");
        let w: Vec<f32> = self.whitening.iter().map(|&v| v as f32).collect();
        let m: Vec<f32> = class_points.iter().flatten().map(|&v| v as f32).collect();
        let mm: Vec<f32> = class_points
            .iter()
            .map(|p| p.iter().map(|v| v * v).sum::<f64>() as f32)
            .collect();
        graph.initializer.extend([
            f32_tensor(&name("whitening"), &[d as i64, d as i64], &w),
            f32_tensor(&name("class_points"), &[k as i64, d as i64], &m),
            f32_tensor(&name("class_norms"), &[k as i64], &mm),
            f32_tensor(&name("ones"), &[d as i64, 1], &vec![1.0; d]),
        ]);
        let node = |op: &str, inputs: &[String], output: String, attrs| {
            node_proto(
                op,
                name(&format!("{op}_{output}")),
                inputs.to_vec(),
                vec![output],
                attrs,
            )
        };
        let attr_float = |n: &str, f: f32| pb::AttributeProto {
            name: n.into(),
            r#type: pb::attribute_proto::AttributeType::Float as i32,
            f,
            ..Default::default()
        };
        graph.node.extend([
            node(
                "MatMul",
                &[features.into(), name("whitening")],
                name("z"),
                vec![],
            ),
            node("Mul", &[name("z"), name("z")], name("z2"), vec![]),
            node("MatMul", &[name("z2"), name("ones")], name("zz"), vec![]),
            node(
                "Gemm",
                &[name("z"), name("class_points"), name("class_norms")],
                name("cross"),
                vec![attr_float("alpha", -2.0), attr_int("transB", 1)],
            ),
            node("Add", &[name("cross"), name("zz")], name("d2"), vec![]),
            node("Relu", &[name("d2")], name("d2_pos"), vec![]),
            node(
                "ReduceMin",
                &[name("d2_pos")],
                name("d2_min"),
                vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
            ),
            node("Sqrt", &[name("d2_min")], OUTPUT.into(), vec![]),
        ]);
        graph.output.push(value_info(OUTPUT, &[None]));
        Ok(())
    }
}

/// The threshold that rejects at most `share` of `scores` (the validation split's): a
/// thousandth above the highest score kept (never reaching the lowest one rejected), so that no
/// validation picture sits on the threshold itself, where the last bits of another engine's
/// arithmetic would decide it (tract on the written graph differs from the fit by ~1e-5), and
/// the threshold stays as tight as the split allows.
pub fn threshold_for(scores: &[f32], share: f64) -> Option<f32> {
    if scores.is_empty() {
        return None;
    }
    let mut sorted: Vec<f32> = scores.to_vec();
    sorted.sort_by(f32::total_cmp);
    let allowed = ((share * sorted.len() as f64).floor() as usize).min(sorted.len() - 1);
    let kept = sorted[sorted.len() - 1 - allowed];
    let above = kept + kept.abs().max(f32::MIN_POSITIVE) * 1e-3;
    Some(match sorted.get(sorted.len() - allowed) {
        Some(&rejected) if allowed > 0 => above.min(kept + (rejected - kept) / 2.0),
        _ => above,
    })
}

/// The temperature `T` in `[0.05, 20]` minimizing the mean negative log-likelihood of
/// `softmax(logits / T)` for the true classes (golden-section search on `ln T`).
pub fn fit_temperature(logits: &[Vec<f32>], truth: &[usize]) -> f32 {
    let nll = |t: f64| -> f64 {
        logits
            .iter()
            .zip(truth)
            .map(|(l, &y)| {
                let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let sum: f64 = l.iter().map(|&v| ((v as f64 - max) / t).exp()).sum();
                -((l[y] as f64 - max) / t - sum.ln())
            })
            .sum::<f64>()
            / logits.len().max(1) as f64
    };
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    for _ in 0..60 {
        if nll(c.exp()) < nll(d.exp()) {
            b = d;
        } else {
            a = c;
        }
        c = b - g * (b - a);
        d = a + g * (b - a);
    }
    ((a + b) / 2.0).exp() as f32
}

/// Makes the graph's `probabilities` output `softmax(logits / t)`: a `Mul` by `1 / t` is put
/// before the `Softmax` that computes it.
pub fn apply_temperature(graph: &mut pb::GraphProto, t: f32) -> Result<(), FamiliarityError> {
    if !(t.is_finite() && t > 0.0) {
        return Err(FamiliarityError::Graph(format!(
            "temperature {t} is not positive"
        )));
    }
    let softmax = graph
        .node
        .iter()
        .position(|n| n.op_type == "Softmax" && n.output.iter().any(|o| o == "probabilities"))
        .ok_or_else(|| {
            FamiliarityError::Graph("no Softmax node computes 'probabilities'".into())
        })?;
    let logits = graph.node[softmax].input[0].clone();
    let scaled = "temperature/scaled_logits".to_string();
    let inv = "temperature/inverse".to_string();
    graph.initializer.push(f32_tensor(&inv, &[], &[1.0 / t]));
    graph.node.insert(
        softmax,
        node_proto(
            "Mul",
            "temperature/Mul".into(),
            vec![logits, inv],
            vec![scaled.clone()],
            vec![],
        ),
    );
    graph.node[softmax + 1].input[0] = scaled;
    Ok(())
}

/// The tensor of pooled features: the output of the last `Flatten` (or, without one, the last
/// `GlobalAveragePool`) node — the input of the classifier head in leukoscope's exports.
pub fn pooled_features(graph: &pb::GraphProto) -> Option<String> {
    ["Flatten", "GlobalAveragePool"].iter().find_map(|op| {
        graph
            .node
            .iter()
            .rev()
            .find(|n| n.op_type == *op)
            .and_then(|n| n.output.first().cloned())
    })
}

/// Cholesky factor (lower triangular, row-major) of a symmetric positive-definite matrix.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = l[i * n..i * n + j]
                .iter()
                .zip(&l[j * n..j * n + j])
                .map(|(x, y)| x * y)
                .sum();
            let v = a[i * n + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of a lower-triangular matrix (row-major), itself lower triangular.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0f64; n * n];
    for col in 0..n {
        // Forward substitution for column `col` of the inverse: L x = e_col.
        for i in col..n {
            let mut v = if i == col { 1.0 } else { 0.0 };
            for j in col..i {
                v -= l[i * n + j] * inv[j * n + col];
            }
            inv[i * n + col] = v / l[i * n + i];
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded::SplitMix64;

    /// Two classes in 3 dimensions with correlated noise; class 0 around (0,0,0), class 1 around
    /// (4,0,0).
    fn data(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = SplitMix64::new(seed);
        let mut gauss = move || {
            let (u, v) = (f64::from(rng.unit().max(1e-12)), f64::from(rng.unit()));
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        };
        let mut f = Vec::new();
        let mut c = Vec::new();
        for i in 0..n {
            let class = i % 2;
            let (a, b, e) = (gauss(), gauss(), gauss());
            f.push(vec![4.0 * class as f32 + a, a + 0.3 * b, 0.5 * e]);
            c.push(class);
        }
        (f, c)
    }

    #[test]
    fn the_distance_follows_the_covariance_not_the_axes() {
        let (f, c) = data(4000, 7);
        let fit = MahalanobisFit::fit(&f, &c, 2, 0.0).unwrap();
        // Along the correlated direction (1, 1, 0) a step is ordinary; across it (1, −1, 0) the
        // same Euclidean step is far less likely.
        let along = fit.score(&[1.0, 1.0, 0.0]);
        let across = fit.score(&[1.0, -1.0, 0.0]);
        assert!(across > 3.0 * along, "along {along}, across {across}");
        // Near a class mean: small; far from both: large.
        assert!(fit.score(&[4.0, 0.0, 0.0]) < 0.3);
        assert!(fit.score(&[2.0, 0.0, 5.0]) > 8.0);
    }

    #[test]
    fn squared_distances_match_the_inverse_covariance() {
        // Σ = [[4, 2], [2, 3]]: fit one class whose sample covariance is exactly Σ.
        let pts = [[2.0f32, 0.0], [-2.0, 0.0], [1.0, 1.5], [-1.0, -1.5]];
        let mut f: Vec<Vec<f32>> = Vec::new();
        for p in pts {
            f.push(p.to_vec());
        }
        // Sample covariance (n − k = 3): [[10/3, 1], [1, 1.5]].
        let fit = MahalanobisFit::fit(&f, &[0, 0, 0, 0], 1, 0.0).unwrap();
        let (a, b, d) = (10.0 / 3.0, 1.0, 1.5);
        let det = a * d - b * b;
        let x = [1.0f64, 2.0];
        let expected = (d * x[0] * x[0] - 2.0 * b * x[0] * x[1] + a * x[1] * x[1]) / det;
        let got = fit.score(&[1.0, 2.0]) as f64;
        assert!((got * got - expected).abs() < 1e-4, "{got}² vs {expected}");
    }

    /// A tiny classifier graph: image → GlobalAveragePool → Flatten (the features, 3 values) →
    /// Gemm (logits) → Softmax (probabilities).
    fn tiny_model() -> pb::ModelProto {
        use crate::contract::ModelContract;
        use crate::onnx::graph::GraphBuilder;
        let mut g = GraphBuilder::new();
        let pooled = g.node("GlobalAveragePool", &["image"], vec![], None);
        let flat = g.flatten(&pooled);
        let logits = g.linear(
            &flat,
            (3, 2, vec![1.0, -1.0, 0.5, 0.5, -1.0, 1.0]),
            vec![0.0, 0.1],
            Some("logits"),
        );
        g.softmax(&logits, "probabilities");
        let contract = ModelContract::new(vec!["a".into(), "b".into()], 4);
        let input = value_info("image", &[None, Some(3), Some(4), Some(4)]);
        let outputs = vec![
            value_info("probabilities", &[None, Some(2)]),
            value_info("logits", &[None, Some(2)]),
        ];
        g.finish(input, outputs, contract.to_metadata(), "test")
    }

    #[test]
    fn the_graph_computes_the_same_score_and_tempered_probabilities() {
        use crate::onnx::OnnxFile;
        use tract_onnx::prelude::*;
        let (f, c) = data(400, 11);
        let fit = MahalanobisFit::fit(&f, &c, 2, 0.05).unwrap();
        let mut model = tiny_model();
        let graph = model.graph.as_mut().unwrap();
        let features = pooled_features(graph).unwrap();
        fit.append_to_graph(graph, &features).unwrap();
        apply_temperature(graph, 2.0).unwrap();
        assert!(
            fit.append_to_graph(graph, &features).is_err(),
            "added twice"
        );
        let file = OnnxFile::from_proto(std::path::Path::new("tiny.onnx"), model).unwrap();
        let plan = file
            .plan(&["probabilities", "logits", OUTPUT, features.as_str()])
            .unwrap();
        let mut rng = SplitMix64::new(5);
        for _ in 0..5 {
            let x: Vec<f32> = (0..48).map(|_| rng.unit() * 6.0 - 2.0).collect();
            let out = plan
                .run(tvec!(Tensor::from_shape(&[1, 3, 4, 4], &x).unwrap().into()))
                .unwrap();
            let v = |i: usize| {
                out[i]
                    .to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect::<Vec<f32>>()
            };
            let (p, l, u, feat) = (v(0), v(1), v(2), v(3));
            let expected = fit.score(&feat);
            assert!(
                (u[0] - expected).abs() < 1e-3 * expected.max(1.0),
                "{u:?} vs {expected}"
            );
            let e: Vec<f32> = l.iter().map(|z| (z / 2.0).exp()).collect();
            let p1 = e[1] / (e[0] + e[1]);
            assert!((p[1] - p1).abs() < 1e-5, "{p:?} vs softmax(logits / 2)");
        }
    }

    #[test]
    fn fitting_refuses_what_it_cannot_fit() {
        let (f, c) = data(10, 1);
        assert!(MahalanobisFit::fit(&f, &c[..9], 2, 0.1).is_err());
        assert!(
            MahalanobisFit::fit(&f, &c, 3, 0.1).is_err(),
            "class 2 is empty"
        );
        assert!(MahalanobisFit::fit(&f, &c, 2, 1.5).is_err());
        // Two identical points per class: a singular covariance, rescued by shrinkage only
        // when there is some variance at all.
        let same = vec![vec![1.0f32, 2.0]; 4];
        assert!(MahalanobisFit::fit(&same, &[0, 0, 1, 1], 2, 0.0).is_err());
    }

    #[test]
    fn the_threshold_rejects_at_most_the_share() {
        let scores: Vec<f32> = (0..274).map(|i| i as f32).collect();
        // floor(2.74) = 2 above the threshold, which sits just above the highest score kept.
        let t = threshold_for(&scores, 0.01).unwrap();
        assert!(t > 271.0 && t < 271.3, "{t}");
        assert_eq!(scores.iter().filter(|&&s| s > t).count(), 2);
        // Close scores: never as far as the next one.
        let close = [1.0, 2.0, 3.0, 3.0001];
        let t = threshold_for(&close, 0.25).unwrap();
        assert!(t > 3.0 && t < 3.0001, "{t}");
        // Nothing may be rejected: just above the highest score.
        let t = threshold_for(&scores[..50], 0.01).unwrap();
        assert!(t > 49.0 && t < 49.1, "{t}");
        assert_eq!(threshold_for(&[], 0.01), None);
        // Ties with the first rejected score keep all of them.
        let tied = [1.0, 2.0, 3.0, 3.0];
        assert_eq!(threshold_for(&tied, 0.25), Some(3.0));
    }

    #[test]
    fn temperature_recovers_an_overconfident_model() {
        // True probabilities softmax(z); the model reports 3·z: T ≈ 3 undoes it.
        let mut rng = SplitMix64::new(3);
        let (mut logits, mut truth) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let z = [rng.unit() * 4.0, rng.unit() * 4.0];
            let p1 = 1.0 / (1.0 + (z[0] - z[1]).exp());
            truth.push(usize::from(rng.unit() < p1));
            logits.push(vec![3.0 * z[0], 3.0 * z[1]]);
        }
        let t = fit_temperature(&logits, &truth);
        assert!((2.6..3.4).contains(&t), "T = {t}");
    }
}
