//! Calibration: does a top-class probability of 0.9 mean right nine times in ten?
//!
//! [`reliability`] sorts the pictures into equal-width bins of their top-class probability (the
//! confidence the device compares with its threshold) and gives each bin's accuracy, mean
//! confidence and count — the reliability diagram — and the expected calibration error
//! `ECE = Σ_b (n_b / n) · |accuracy_b − confidence_b|` (Guo et al. 2017, equal-width bins).

use serde::{Deserialize, Serialize};

use crate::metrics::{Proportion, argmax};

/// One confidence bin of a reliability diagram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower bound of the top-class probability (inclusive).
    pub lower: f64,
    /// Upper bound (exclusive; the last bin includes 1).
    pub upper: f64,
    /// Pictures in the bin.
    pub count: u64,
    /// Mean top-class probability of its pictures; `None` for an empty bin.
    pub mean_confidence: Option<f64>,
    /// Its pictures whose top class is the true class, with the Wilson 95 % interval.
    pub accuracy: Proportion,
}

/// A reliability diagram and its expected calibration error (`report.json` key `calibration`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Pictures counted.
    pub samples: u64,
    /// Equal-width bins over 0..1, lowest first.
    pub bins: Vec<ReliabilityBin>,
    /// Expected calibration error: the count-weighted mean |accuracy − confidence| of the bins.
    pub ece: f64,
    /// The largest |accuracy − confidence| of a non-empty bin (maximum calibration error).
    pub mce: f64,
}

/// Default number of bins.
pub const DEFAULT_BINS: usize = 10;

/// The reliability diagram of `probabilities` against `truth` in `bins` equal-width bins (at
/// least one). Rows and truth are paired by index; extra rows on either side are ignored, and a
/// non-finite confidence counts in the lowest bin.
pub fn reliability(truth: &[usize], probabilities: &[Vec<f32>], bins: usize) -> Calibration {
    let bins = bins.max(1);
    let mut count = vec![0u64; bins];
    let mut correct = vec![0u64; bins];
    let mut confidence = vec![0.0f64; bins];
    let mut samples = 0u64;
    for (&t, row) in truth.iter().zip(probabilities) {
        if row.is_empty() {
            continue;
        }
        let top = argmax(row);
        let c = f64::from(row[top]);
        let c = if c.is_finite() {
            c.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let b = ((c * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        correct[b] += u64::from(top == t);
        confidence[b] += c;
        samples += 1;
    }
    let mut ece = 0.0;
    let mut mce = 0.0f64;
    let bins: Vec<ReliabilityBin> = (0..bins)
        .map(|b| {
            let mean_confidence = (count[b] > 0).then(|| confidence[b] / count[b] as f64);
            let accuracy = Proportion::new(correct[b], count[b]);
            if let (Some(conf), Some(acc)) = (mean_confidence, accuracy.value) {
                let gap = (acc - conf).abs();
                ece += count[b] as f64 / samples as f64 * gap;
                mce = mce.max(gap);
            }
            ReliabilityBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count: count[b],
                mean_confidence,
                accuracy,
            }
        })
        .collect();
    Calibration {
        samples,
        bins,
        ece,
        mce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_of_a_known_set() {
        // Two at 0.95 (one right), two at 0.55 (both right), one at exactly 1.0 (right).
        let truth = [0, 0, 1, 1, 0];
        let probs = vec![
            vec![0.95, 0.05],
            vec![0.05, 0.95],
            vec![0.45, 0.55],
            vec![0.45, 0.55],
            vec![1.0, 0.0],
        ];
        let c = reliability(&truth, &probs, 10);
        assert_eq!(c.samples, 5);
        assert_eq!(c.bins.len(), 10);
        let counts: Vec<u64> = c.bins.iter().map(|b| b.count).collect();
        assert_eq!(counts, [0, 0, 0, 0, 0, 2, 0, 0, 0, 3]);
        // Bin 5: accuracy 1, confidence 0.55 (gap 0.45); bin 9: 2/3 right at (0.95+0.95+1)/3.
        let top = &c.bins[9];
        assert_eq!((top.accuracy.successes, top.accuracy.n), (2, 3));
        let conf9 = (0.95f32 as f64 * 2.0 + 1.0) / 3.0;
        assert!((top.mean_confidence.unwrap() - conf9).abs() < 1e-9);
        let expected = 2.0 / 5.0 * (1.0 - 0.55f32 as f64) + 3.0 / 5.0 * (conf9 - 2.0 / 3.0);
        assert!((c.ece - expected).abs() < 1e-9, "{} vs {expected}", c.ece);
        assert!((c.mce - (1.0 - 0.55f32 as f64)).abs() < 1e-9);
        assert_eq!(c.bins[0].mean_confidence, None);
        assert_eq!((c.bins[3].lower, c.bins[3].upper), (0.3, 0.4));
    }

    #[test]
    fn a_calibrated_set_has_no_error_and_an_empty_one_no_bins_filled() {
        // Ten pictures at 0.8, eight right: accuracy equals confidence.
        let truth: Vec<usize> = (0..10).map(|i| usize::from(i >= 8)).collect();
        let probs = vec![vec![0.8, 0.2]; 10];
        let c = reliability(&truth, &probs, 5);
        assert!(c.ece.abs() < 1e-6, "{}", c.ece);
        let empty = reliability(&[], &[], 0);
        assert_eq!((empty.samples, empty.bins.len(), empty.ece), (0, 1, 0.0));
    }
}
