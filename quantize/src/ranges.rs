//! From observed activations to quantization ranges: histograms and the three calibration
//! methods (min/max, percentile, entropy), then scale and zero point for u8 or i8.

use serde::{Deserialize, Serialize};

/// Bins of the activation histograms (over `[-absmax, absmax]`).
pub const BINS: usize = 4096;

/// How an activation range is chosen from the calibration data.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "method", content = "value")]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax,
    /// The given percentile of the values at each end (e.g. 99.99 keeps 99.99 % inside).
    Percentile(f64),
    /// The clipping threshold that minimizes the KL divergence between the histogram of |x| and
    /// its 8-bit quantized version (TensorRT's calibrator, as onnxruntime does it).
    Entropy,
}

impl Method {
    /// The name used on the command line and in the recipe.
    pub fn name(&self) -> &'static str {
        match self {
            Method::MinMax => "minmax",
            Method::Percentile(_) => "percentile",
            Method::Entropy => "entropy",
        }
    }
}

/// Integer type of quantized activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActivationType {
    /// Unsigned 8-bit (0..=255): what onnxruntime's x86 kernels prefer.
    #[default]
    U8,
    /// Signed 8-bit (-128..=127).
    I8,
}

impl ActivationType {
    /// Smallest and largest integer.
    pub fn bounds(self) -> (i32, i32) {
        match self {
            ActivationType::U8 => (0, 255),
            ActivationType::I8 => (-128, 127),
        }
    }

    /// `u8` or `i8`.
    pub fn name(self) -> &'static str {
        match self {
            ActivationType::U8 => "u8",
            ActivationType::I8 => "i8",
        }
    }
}

/// A float range `[min, max]` (always containing 0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Lower end.
    pub min: f32,
    /// Upper end.
    pub max: f32,
}

/// Affine quantization parameters: `x ≈ (q - zero_point) · scale`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    /// Step between two integers.
    pub scale: f32,
    /// The integer that stands for 0.0.
    pub zero_point: i32,
}

impl QParams {
    /// Asymmetric parameters for `range` in `ty`; 0.0 is exactly representable. A degenerate
    /// range (all zeros) gets scale 1.
    pub fn for_range(range: Range, ty: ActivationType) -> QParams {
        let (qmin, qmax) = ty.bounds();
        let min = range.min.min(0.0) as f64;
        let max = range.max.max(0.0) as f64;
        if max - min <= f64::EPSILON {
            return QParams {
                scale: 1.0,
                zero_point: if qmin < 0 { 0 } else { qmin },
            };
        }
        let scale = (max - min) / (qmax - qmin) as f64;
        let zero_point = (qmin as f64 - min / scale).round() as i32;
        QParams {
            scale: scale as f32,
            zero_point: zero_point.clamp(qmin, qmax),
        }
    }

    /// `x` quantized (rounded half to even like ONNX QuantizeLinear, saturated).
    pub fn quantize(&self, x: f32, ty: ActivationType) -> i32 {
        let (qmin, qmax) = ty.bounds();
        ((x / self.scale).round_ties_even() as i32 + self.zero_point).clamp(qmin, qmax)
    }

    /// `q` back to float.
    pub fn dequantize(&self, q: i32) -> f32 {
        (q - self.zero_point) as f32 * self.scale
    }
}

/// What was seen of one tensor over the calibration pictures.
#[derive(Clone, Debug)]
pub struct TensorStats {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
    /// Counts over [`BINS`] equal bins spanning `[-absmax, absmax]` (filled in the second pass).
    pub hist: Vec<u64>,
}

impl TensorStats {
    /// Empty statistics (first pass not run yet).
    pub fn new() -> Self {
        TensorStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: Vec::new(),
        }
    }

    /// First pass: widens min/max over `values` (non-finite values are ignored).
    pub fn observe_range(&mut self, values: &[f32]) {
        for &v in values.iter().filter(|v| v.is_finite()) {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    /// Largest |value| seen (0 before any value).
    pub fn absmax(&self) -> f32 {
        if self.min > self.max {
            0.0
        } else {
            self.min.abs().max(self.max.abs())
        }
    }

    /// Second pass: adds `values` to the histogram over `[-absmax, absmax]`.
    pub fn observe_histogram(&mut self, values: &[f32]) {
        if self.hist.is_empty() {
            self.hist = vec![0; BINS];
        }
        let a = self.absmax();
        if a == 0.0 {
            self.hist[BINS / 2] += values.len() as u64;
            return;
        }
        let per = BINS as f32 / (2.0 * a);
        for &v in values.iter().filter(|v| v.is_finite()) {
            let i = ((v + a) * per) as usize;
            self.hist[i.min(BINS - 1)] += 1;
        }
    }

    /// The range `method` picks (always containing 0).
    pub fn range(&self, method: Method) -> Range {
        let (min, max) = if self.min > self.max {
            (0.0, 0.0)
        } else {
            (self.min, self.max)
        };
        let total: u64 = self.hist.iter().sum();
        let r = match method {
            _ if total == 0 || self.absmax() == 0.0 => Range { min, max },
            Method::MinMax => Range { min, max },
            Method::Percentile(p) => {
                let a = self.absmax();
                let width = 2.0 * a / BINS as f32;
                let tail = ((100.0 - p.clamp(50.0, 100.0)) / 100.0 * total as f64) as u64;
                // Lowest bin whose cumulative count from below exceeds the tail, and the same
                // from above.
                let mut acc = 0;
                let mut lo = 0;
                for (i, c) in self.hist.iter().enumerate() {
                    acc += c;
                    if acc > tail {
                        lo = i;
                        break;
                    }
                }
                acc = 0;
                let mut hi = BINS - 1;
                for (i, c) in self.hist.iter().enumerate().rev() {
                    acc += c;
                    if acc > tail {
                        hi = i;
                        break;
                    }
                }
                Range {
                    min: (-a + lo as f32 * width).max(min),
                    max: (-a + (hi + 1) as f32 * width).min(max),
                }
            }
            Method::Entropy => {
                let levels = if min >= 0.0 { 255 } else { 128 };
                let t = self.entropy_threshold(levels);
                Range {
                    min: min.max(-t),
                    max: max.min(t),
                }
            }
        };
        Range {
            min: r.min.min(0.0),
            max: r.max.max(0.0),
        }
    }

    /// The |x| threshold minimizing KL(P‖Q), P the histogram of |x| clipped at the threshold and
    /// Q its quantization into `levels` levels.
    fn entropy_threshold(&self, levels: usize) -> f32 {
        let half = BINS / 2;
        // Fold the symmetric histogram into one of |x| with `half` bins.
        let mut abs: Vec<f64> = (0..half)
            .map(|i| (self.hist[half + i] + self.hist[half - 1 - i]) as f64)
            .collect();
        // The bin holding 0 is dominated by exact zeros (ReLU outputs, padding), which every
        // range represents exactly: leaving them in pulls the threshold towards 0.
        abs[0] = 0.0;
        let width = self.absmax() / half as f32;
        let mut best = (f64::INFINITY, half);
        let start = levels.min(half);
        // Candidate thresholds every 8 bins keep this fast (512 candidates at most).
        for i in (start..=half).step_by(8) {
            let mut p: Vec<f64> = abs[..i].to_vec();
            p[i - 1] += abs[i..].iter().sum::<f64>();
            let q = quantize_distribution(&abs[..i], levels);
            let kl = kl_divergence(&p, &q);
            if kl < best.0 {
                best = (kl, i);
            }
        }
        (best.1 as f32 + 0.5) * width
    }
}

impl Default for TensorStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Merges `bins` into `levels` groups and spreads each group's mass back evenly over its
/// non-empty bins.
fn quantize_distribution(bins: &[f64], levels: usize) -> Vec<f64> {
    let n = bins.len();
    let mut q = vec![0.0; n];
    for l in 0..levels {
        let start = l * n / levels;
        let end = ((l + 1) * n / levels).max(start + 1).min(n);
        if start >= n {
            break;
        }
        let mass: f64 = bins[start..end].iter().sum();
        let nonzero = bins[start..end].iter().filter(|&&b| b > 0.0).count();
        if nonzero > 0 {
            for j in start..end {
                if bins[j] > 0.0 {
                    q[j] = mass / nonzero as f64;
                }
            }
        }
    }
    q
}

/// KL(P‖Q) of two unnormalized distributions; bins where Q is 0 but P is not are smoothed.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let ps: f64 = p.iter().sum();
    let qs: f64 = q.iter().sum();
    if ps == 0.0 || qs == 0.0 {
        return f64::INFINITY;
    }
    let eps = 1e-10;
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| {
            let a = a / ps;
            let b = (b / qs).max(eps);
            a * (a / b).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn stats(values: &[f32]) -> TensorStats {
        let mut s = TensorStats::new();
        s.observe_range(values);
        s.observe_histogram(values);
        s
    }

    #[test]
    fn qparams_represent_zero_exactly_and_cover_the_range() {
        for ty in [ActivationType::U8, ActivationType::I8] {
            let q = QParams::for_range(
                Range {
                    min: -1.0,
                    max: 3.0,
                },
                ty,
            );
            assert_eq!(q.dequantize(q.quantize(0.0, ty)), 0.0);
            assert!((q.dequantize(q.quantize(3.0, ty)) - 3.0).abs() <= q.scale);
            assert!((q.dequantize(q.quantize(-1.0, ty)) + 1.0).abs() <= q.scale);
            // Out of range saturates.
            assert_eq!(q.quantize(100.0, ty), ty.bounds().1);
        }
        // A non-negative range puts zero at the lowest integer: a ReLU folds into saturation.
        let q = QParams::for_range(Range { min: 0.0, max: 6.0 }, ActivationType::I8);
        assert_eq!(q.zero_point, -128);
        assert_eq!(q.quantize(-2.0, ActivationType::I8), -128);
    }

    #[test]
    fn minmax_is_the_observed_range_and_percentile_clips_outliers() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut v: Vec<f32> = (0..100_000).map(|_| rng.random_range(-1.0..1.0)).collect();
        v.push(50.0);
        let s = stats(&v);
        let mm = s.range(Method::MinMax);
        assert_eq!(mm.max, 50.0);
        assert!(mm.min < -0.99);
        let p = s.range(Method::Percentile(99.9));
        assert!(p.max < 1.1 && p.max > 0.9, "{p:?}");
        assert!(p.min > -1.1 && p.min < -0.9, "{p:?}");
    }

    #[test]
    fn entropy_clips_a_long_tail_but_keeps_the_bulk() {
        let mut rng = StdRng::seed_from_u64(2);
        // Laplace-like bulk with rare far outliers.
        let mut v: Vec<f32> = (0..200_000)
            .map(|_| {
                let u: f32 = rng.random_range(1e-6..1.0);
                -u.ln() * if rng.random_bool(0.5) { 1.0 } else { -1.0 }
            })
            .collect();
        v.extend([80.0, -80.0]);
        let s = stats(&v);
        let e = s.range(Method::Entropy);
        assert!(e.max < 40.0 && e.max > 4.0, "{e:?}");
        assert!(e.min > -40.0 && e.min < -4.0, "{e:?}");
    }

    #[test]
    fn degenerate_tensors_get_a_usable_range() {
        let s = stats(&[0.0; 10]);
        for m in [Method::MinMax, Method::Percentile(99.0), Method::Entropy] {
            let r = s.range(m);
            assert_eq!((r.min, r.max), (0.0, 0.0));
            let q = QParams::for_range(r, ActivationType::U8);
            assert_eq!(q.scale, 1.0);
        }
    }
}
