//! Classification metrics from true classes and predicted class probabilities.
//!
//! One function, [`evaluate`], turns labels, true class indices and per-sample probabilities
//! (softmax outputs) into a [`ClassificationReport`]: accuracy, per-class precision, recall
//! (sensitivity), specificity, F1, F2 and one-vs-rest ROC AUC, their macro and support-weighted
//! averages, Cohen's kappa, the multiclass Matthews correlation and the confusion matrix. The
//! trainer and the device both call it, so a model's numbers are computed the same way
//! everywhere.
//!
//! Conventions, stated once:
//! - The prediction for a sample is the index of its highest probability; ties go to the lowest
//!   index.
//! - A ratio whose denominator is zero is 0, like scikit-learn's `zero_division=0`: the precision
//!   of a class that is never predicted, the recall of a class with no samples, the specificity
//!   when every sample belongs to the class, an F-score whose precision and recall are both 0,
//!   and Cohen's kappa and the MCC when truth or predictions hold a single class.
//! - ROC AUC is one-vs-rest per class, computed exactly with the trapezoid rule over the ROC
//!   curve, where samples with equal scores form a single step. This equals the Mann–Whitney
//!   statistic with ties counted as one half. It is undefined (`None`) for a class with no
//!   positive or no negative samples.

pub use leukoscope_screening::argmax;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Inputs that metrics cannot be computed from.
#[derive(Debug, Error, PartialEq)]
pub enum MetricsError {
    /// There are no samples, or no labels.
    #[error("cannot compute metrics: {0}")]
    Empty(&'static str),
    /// `truth` and `probabilities` hold different numbers of samples.
    #[error("{truth} true classes but {probabilities} probability rows: one of each per sample")]
    LengthMismatch {
        /// Number of true classes.
        truth: usize,
        /// Number of probability rows.
        probabilities: usize,
    },
    /// A true class index is not a valid label index.
    #[error("sample {sample}: true class {class} is out of range ({num_classes} labels)")]
    TruthOutOfRange {
        /// Index of the sample.
        sample: usize,
        /// The offending class index.
        class: usize,
        /// Number of labels.
        num_classes: usize,
    },
    /// `truth` and the predicted classes hold different numbers of samples.
    #[error("{truth} true classes but {predicted} predictions: one of each per sample")]
    PredictionCount {
        /// Number of true classes.
        truth: usize,
        /// Number of predictions.
        predicted: usize,
    },
    /// A predicted class index is not a valid label index.
    #[error("sample {sample}: predicted class {class} is out of range ({num_classes} labels)")]
    PredictionOutOfRange {
        /// Index of the sample.
        sample: usize,
        /// The offending class index.
        class: usize,
        /// Number of labels.
        num_classes: usize,
    },
    /// A probability row does not have one value per label.
    #[error("sample {sample}: {got} probabilities, expected one per label ({expected})")]
    RowLength {
        /// Index of the sample.
        sample: usize,
        /// Number of labels.
        expected: usize,
        /// Number of values in the row.
        got: usize,
    },
    /// A probability is NaN or infinite.
    #[error("sample {sample}: probability for class {class} is {value}, not a finite number")]
    NotFinite {
        /// Index of the sample.
        sample: usize,
        /// Index of the class.
        class: usize,
        /// The value.
        value: f32,
    },
}

/// Counts of (true class, predicted class) pairs: rows are true classes, columns predictions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// An all-zero matrix for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        ConfusionMatrix {
            counts: vec![vec![0; num_classes]; num_classes],
        }
    }

    /// Counts true and predicted class indices, sample by sample.
    pub fn from_predictions(
        num_classes: usize,
        truth: &[usize],
        predicted: &[usize],
    ) -> Result<Self, MetricsError> {
        if truth.len() != predicted.len() {
            return Err(MetricsError::PredictionCount {
                truth: truth.len(),
                predicted: predicted.len(),
            });
        }
        let mut m = ConfusionMatrix::new(num_classes);
        for (sample, (&t, &p)) in truth.iter().zip(predicted).enumerate() {
            if t >= num_classes {
                return Err(MetricsError::TruthOutOfRange {
                    sample,
                    class: t,
                    num_classes,
                });
            }
            if p >= num_classes {
                return Err(MetricsError::PredictionOutOfRange {
                    sample,
                    class: p,
                    num_classes,
                });
            }
            m.counts[t][p] += 1;
        }
        Ok(m)
    }

    /// Number of classes (rows and columns).
    pub fn num_classes(&self) -> usize {
        self.counts.len()
    }

    /// The counts, `counts()[true][predicted]`.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Number of samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Samples whose true class is `class` (the class's support).
    pub fn row_sum(&self, class: usize) -> u64 {
        self.counts[class].iter().sum()
    }

    /// Samples predicted as `class`.
    pub fn column_sum(&self, class: usize) -> u64 {
        self.counts.iter().map(|row| row[class]).sum()
    }

    /// True positives, false positives, false negatives and true negatives of `class`
    /// (one-vs-rest).
    pub fn one_vs_rest(&self, class: usize) -> BinaryCounts {
        let tp = self.counts[class][class];
        let fp = self.column_sum(class) - tp;
        let fn_ = self.row_sum(class) - tp;
        let tn = self.total() - tp - fp - fn_;
        BinaryCounts { tp, fp, fn_, tn }
    }

    /// Fraction of samples on the diagonal; 0 for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        let trace: u64 = (0..self.num_classes()).map(|k| self.counts[k][k]).sum();
        ratio(trace as f64, self.total() as f64)
    }

    /// Cohen's kappa: `(p_o - p_e) / (1 - p_e)` with `p_o` the observed agreement (accuracy) and
    /// `p_e = Σ_k row_k · col_k / n²` the agreement expected by chance. 0 when `p_e = 1` (truth
    /// and predictions all in one class).
    pub fn cohen_kappa(&self) -> f64 {
        let n = self.total() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let p_o = self.accuracy();
        let p_e: f64 = (0..self.num_classes())
            .map(|k| self.row_sum(k) as f64 * self.column_sum(k) as f64)
            .sum::<f64>()
            / (n * n);
        ratio(p_o - p_e, 1.0 - p_e)
    }

    /// Multiclass Matthews correlation coefficient (Gorodkin's R_K, as in scikit-learn):
    /// `(c·s − Σ t_k p_k) / √((s² − Σ p_k²)(s² − Σ t_k²))` with `c` the trace, `s` the total,
    /// `t_k` the row sums and `p_k` the column sums. For two classes this is the usual binary
    /// MCC. 0 when the denominator is 0.
    pub fn mcc(&self) -> f64 {
        let k = self.num_classes();
        let s = self.total() as f64;
        let c: f64 = (0..k).map(|i| self.counts[i][i] as f64).sum();
        let t: Vec<f64> = (0..k).map(|i| self.row_sum(i) as f64).collect();
        let p: Vec<f64> = (0..k).map(|i| self.column_sum(i) as f64).collect();
        let tp: f64 = t.iter().zip(&p).map(|(a, b)| a * b).sum();
        let pp: f64 = p.iter().map(|x| x * x).sum();
        let tt: f64 = t.iter().map(|x| x * x).sum();
        let denominator = ((s * s - pp) * (s * s - tt)).sqrt();
        ratio(c * s - tp, denominator)
    }
}

/// One-vs-rest counts for one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryCounts {
    /// Samples of the class predicted as the class.
    pub tp: u64,
    /// Samples of other classes predicted as the class.
    pub fp: u64,
    /// Samples of the class predicted as another class.
    pub fn_: u64,
    /// Samples of other classes predicted as another class.
    pub tn: u64,
}

impl BinaryCounts {
    /// `tp / (tp + fp)`; 0 when the class is never predicted.
    pub fn precision(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fp) as f64)
    }

    /// `tp / (tp + fn)` (sensitivity); 0 when the class has no samples.
    pub fn recall(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fn_) as f64)
    }

    /// `tn / (tn + fp)`; 0 when every sample belongs to the class.
    pub fn specificity(&self) -> f64 {
        ratio(self.tn as f64, (self.tn + self.fp) as f64)
    }

    /// F-beta score `(1 + β²)·P·R / (β²·P + R)`; 0 when precision and recall are both 0.
    pub fn f_beta(&self, beta: f64) -> f64 {
        f_beta(self.precision(), self.recall(), beta)
    }
}

/// Per-class metrics, one-vs-rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The class name.
    pub label: String,
    /// Of the samples predicted as this class, the fraction that are (0 if never predicted).
    pub precision: f64,
    /// Of the samples of this class, the fraction predicted as it: the sensitivity.
    pub recall: f64,
    /// Of the samples of other classes, the fraction not predicted as this class.
    pub specificity: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// F-beta with β = 2, weighting recall above precision: `5·P·R / (4·P + R)`.
    pub f2: f64,
    /// Number of samples of this class.
    pub support: u64,
    /// One-vs-rest ROC AUC; `None` when the class has no positive or no negative samples.
    pub auc: Option<f64>,
}

/// Averages of per-class metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AveragedMetrics {
    /// Averaged precision.
    pub precision: f64,
    /// Averaged recall (sensitivity).
    pub recall: f64,
    /// Averaged specificity.
    pub specificity: f64,
    /// Averaged F1.
    pub f1: f64,
    /// Averaged F2.
    pub f2: f64,
}

/// A one-vs-rest ROC curve for one class.
///
/// Point `k` is (`fpr[k]`, `tpr[k]`) for calling a sample positive when its score is at least
/// `thresholds[k]`. The curve starts at (0, 0), whose threshold is the highest score plus 1 (no
/// sample is called positive), and ends at (1, 1). Samples with equal scores enter together, so
/// there is one point per distinct score. A class with no positive or no negative samples has no
/// curve: empty vectors and `auc: None`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RocCurve {
    /// The class name.
    pub label: String,
    /// False positive rates, non-decreasing from 0 to 1.
    pub fpr: Vec<f64>,
    /// True positive rates, non-decreasing from 0 to 1.
    pub tpr: Vec<f64>,
    /// Score thresholds, decreasing.
    pub thresholds: Vec<f64>,
    /// Area under the curve.
    pub auc: Option<f64>,
}

/// Every metric of a classifier on a labeled sample set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Class names in model output order.
    pub labels: Vec<String>,
    /// Number of samples.
    pub samples: u64,
    /// Fraction of samples whose prediction is the true class.
    pub accuracy: f64,
    /// Per-class metrics in label order.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean over classes.
    pub macro_avg: AveragedMetrics,
    /// Mean over classes weighted by support.
    pub weighted_avg: AveragedMetrics,
    /// Cohen's kappa (agreement beyond chance).
    pub cohen_kappa: f64,
    /// Multiclass Matthews correlation coefficient (Gorodkin's R_K).
    pub mcc: f64,
    /// Mean of the defined per-class AUCs; `None` if none is defined.
    pub macro_auc: Option<f64>,
    /// Confusion matrix, `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    /// One-vs-rest ROC curve per class, in label order.
    pub roc: Vec<RocCurve>,
}

/// Computes every metric from ground truth and per-sample class probabilities.
///
/// `labels` are the class names in model output order, `truth[i]` the true class index of sample
/// `i`, and `probabilities[i]` its `labels.len()` class probabilities (softmax outputs; any
/// scores whose order matters work, since only argmax and ranking are used). See the module
/// documentation for the conventions on ties and zero denominators.
pub fn evaluate(
    labels: &[String],
    truth: &[usize],
    probabilities: &[Vec<f32>],
) -> Result<ClassificationReport, MetricsError> {
    let k = labels.len();
    if k == 0 {
        return Err(MetricsError::Empty("no class labels"));
    }
    if truth.is_empty() && probabilities.is_empty() {
        return Err(MetricsError::Empty("no samples"));
    }
    if truth.len() != probabilities.len() {
        return Err(MetricsError::LengthMismatch {
            truth: truth.len(),
            probabilities: probabilities.len(),
        });
    }
    for (sample, (&t, row)) in truth.iter().zip(probabilities).enumerate() {
        if t >= k {
            return Err(MetricsError::TruthOutOfRange {
                sample,
                class: t,
                num_classes: k,
            });
        }
        if row.len() != k {
            return Err(MetricsError::RowLength {
                sample,
                expected: k,
                got: row.len(),
            });
        }
        if let Some((class, &value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(MetricsError::NotFinite {
                sample,
                class,
                value,
            });
        }
    }

    let predicted: Vec<usize> = probabilities.iter().map(|row| argmax(row)).collect();
    let cm = ConfusionMatrix::from_predictions(k, truth, &predicted)?;
    let n = cm.total();

    let mut per_class = Vec::with_capacity(k);
    let mut roc = Vec::with_capacity(k);
    for (class, label) in labels.iter().enumerate() {
        let scores: Vec<f64> = probabilities.iter().map(|r| f64::from(r[class])).collect();
        let positive: Vec<bool> = truth.iter().map(|&t| t == class).collect();
        let curve = roc_curve(label, &scores, &positive);
        let b = cm.one_vs_rest(class);
        per_class.push(ClassMetrics {
            label: label.clone(),
            precision: b.precision(),
            recall: b.recall(),
            specificity: b.specificity(),
            f1: b.f_beta(1.0),
            f2: b.f_beta(2.0),
            support: cm.row_sum(class),
            auc: curve.auc,
        });
        roc.push(curve);
    }

    let macro_avg = average(&per_class, |_| 1.0);
    let weighted_avg = average(&per_class, |c| c.support as f64);
    let aucs: Vec<f64> = per_class.iter().filter_map(|c| c.auc).collect();
    let macro_auc = (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64);

    Ok(ClassificationReport {
        labels: labels.to_vec(),
        samples: n,
        accuracy: cm.accuracy(),
        per_class,
        macro_avg,
        weighted_avg,
        cohen_kappa: cm.cohen_kappa(),
        mcc: cm.mcc(),
        macro_auc,
        confusion: cm.counts,
        roc,
    })
}

/// Fraction of samples on which two predictions agree (e.g. an int8 model against its f32
/// original).
///
/// The slices should have equal lengths; if they do not, samples beyond the shorter one count as
/// disagreements, so a mismatch can only lower the result. Two empty slices give 0, so a
/// threshold check on an empty comparison fails rather than passes.
pub fn top1_agreement(a: &[usize], b: &[usize]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    ratio(same as f64, a.len().max(b.len()) as f64)
}

/// One-vs-rest ROC AUC of `scores` for the samples marked `positive`, exactly, with tied scores
/// counted as one half (the Mann–Whitney statistic). `None` when there are no positive or no
/// negative samples, when the lengths differ, or when a score is NaN.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    if scores.len() != positive.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    roc_curve("", scores, positive).auc
}

/// Builds the ROC curve and its area. Scores must not be NaN and lengths must match.
fn roc_curve(label: &str, scores: &[f64], positive: &[bool]) -> RocCurve {
    let p = positive.iter().filter(|&&x| x).count() as u64;
    let n = positive.len() as u64 - p;
    let mut curve = RocCurve {
        label: label.to_string(),
        fpr: Vec::new(),
        tpr: Vec::new(),
        thresholds: Vec::new(),
        auc: None,
    };
    if p == 0 || n == 0 {
        return curve;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    curve.fpr.push(0.0);
    curve.tpr.push(0.0);
    curve.thresholds.push(scores[order[0]] + 1.0);
    // Twice the area times p·n, accumulated exactly in integers: each step adds
    // Δfp · (tp_before + tp_after).
    let mut doubled_area: u128 = 0;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut i = 0;
    while i < order.len() {
        let threshold = scores[order[i]];
        let (tp_before, fp_before) = (tp, fp);
        while i < order.len() && scores[order[i]] == threshold {
            if positive[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        doubled_area += u128::from(fp - fp_before) * u128::from(tp_before + tp);
        curve.fpr.push(fp as f64 / n as f64);
        curve.tpr.push(tp as f64 / p as f64);
        curve.thresholds.push(threshold);
    }
    curve.auc = Some(doubled_area as f64 / (2.0 * p as f64 * n as f64));
    curve
}

/// `(1 + β²)·P·R / (β²·P + R)`, 0 when the denominator is 0.
fn f_beta(precision: f64, recall: f64, beta: f64) -> f64 {
    let b2 = beta * beta;
    ratio((1.0 + b2) * precision * recall, b2 * precision + recall)
}

/// Weighted mean of per-class metrics; zero total weight gives zeros.
fn average(classes: &[ClassMetrics], weight: impl Fn(&ClassMetrics) -> f64) -> AveragedMetrics {
    let total: f64 = classes.iter().map(&weight).sum();
    let mean =
        |f: fn(&ClassMetrics) -> f64| ratio(classes.iter().map(|c| weight(c) * f(c)).sum(), total);
    AveragedMetrics {
        precision: mean(|c| c.precision),
        recall: mean(|c| c.recall),
        specificity: mean(|c| c.specificity),
        f1: mean(|c| c.f1),
        f2: mean(|c| c.f2),
    }
}

/// The normal quantile for a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval `(low, high)` for `successes` out of `n` at normal quantile `z`
/// (e.g. [`Z_95`]): `(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`. Unlike p̂ ± z·SE it
/// stays within 0..1 and is not empty at 0 or n successes. `n = 0` gives `(0, 1)`: nothing is
/// known. `successes` above `n` are taken as `n`.
pub fn wilson_interval(successes: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let s = successes.min(n);
    let n_f = n as f64;
    let p = s as f64 / n_f;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    // At 0 and n successes the bound is exactly 0 or 1; rounding must not move it.
    let low = if s == 0 { 0.0 } else { centre - half };
    let high = if s == n { 1.0 } else { centre + half };
    (low.clamp(0.0, 1.0), high.clamp(0.0, 1.0))
}

/// A proportion of a report with its Wilson 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    /// The counted successes.
    pub successes: u64,
    /// Out of this many.
    pub n: u64,
    /// `successes / n`; `None` when `n` is 0.
    pub value: Option<f64>,
    /// Lower bound of the Wilson 95 % interval.
    pub low: f64,
    /// Upper bound of the Wilson 95 % interval.
    pub high: f64,
}

impl Proportion {
    /// `successes` out of `n`, with its Wilson 95 % interval ([`Z_95`]).
    pub fn new(successes: u64, n: u64) -> Self {
        let (low, high) = wilson_interval(successes, n, Z_95);
        Proportion {
            successes: successes.min(n),
            n,
            value: (n > 0).then(|| successes.min(n) as f64 / n as f64),
            low,
            high,
        }
    }
}

/// The per-class proportions of a report with their intervals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassIntervals {
    /// The class name.
    pub label: String,
    /// Precision: correct among the pictures predicted as the class.
    pub precision: Proportion,
    /// Recall (sensitivity): predicted as the class among its pictures.
    pub recall: Proportion,
}

/// Wilson 95 % intervals on the proportions of a [`ClassificationReport`] (`report.json` key
/// `intervals`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportIntervals {
    /// The normal quantile used ([`Z_95`]).
    pub z: f64,
    /// Accuracy: correct among all pictures.
    pub accuracy: Proportion,
    /// Per class, in label order.
    pub per_class: Vec<ClassIntervals>,
}

impl ReportIntervals {
    /// The intervals of `report`, from its confusion matrix.
    pub fn of(report: &ClassificationReport) -> Self {
        let cm = &report.confusion;
        let correct: u64 = (0..cm.len()).map(|k| cm[k][k]).sum();
        let total: u64 = cm.iter().flatten().sum();
        let per_class = report
            .labels
            .iter()
            .enumerate()
            .map(|(k, label)| ClassIntervals {
                label: label.clone(),
                precision: Proportion::new(cm[k][k], cm.iter().map(|r| r[k]).sum()),
                recall: Proportion::new(cm[k][k], cm[k].iter().sum()),
            })
            .collect();
        ReportIntervals {
            z: Z_95,
            accuracy: Proportion::new(correct, total),
            per_class,
        }
    }
}

/// `num / den`, or 0 when `den` is 0 or not finite.
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 || !den.is_finite() {
        0.0
    } else {
        num / den
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const EPS: f64 = 1e-9;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < EPS, "{a} != {b}");
    }

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A probability row of `k` classes whose argmax is `predicted`.
    fn row(k: usize, predicted: usize) -> Vec<f32> {
        let mut r = vec![0.1; k];
        r[predicted] = 0.8;
        r
    }

    /// Samples realising a confusion matrix, with probabilities that predict the column.
    fn samples_from_confusion(cm: &[Vec<u64>]) -> (Vec<usize>, Vec<Vec<f32>>) {
        let k = cm.len();
        let mut truth = Vec::new();
        let mut probs = Vec::new();
        for (t, r) in cm.iter().enumerate() {
            for (p, &count) in r.iter().enumerate() {
                for _ in 0..count {
                    truth.push(t);
                    probs.push(row(k, p));
                }
            }
        }
        (truth, probs)
    }

    /// The 3-class case used in several tests (rows true, columns predicted):
    ///
    /// ```text
    ///        A  B  C   row
    ///   A    5  1  0    6
    ///   B    2  3  1    6
    ///   C    0  1  4    5
    ///  col   7  5  5   n = 17, trace = 12
    /// ```
    fn three_class() -> ClassificationReport {
        let cm = vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 1, 4]];
        let (truth, probs) = samples_from_confusion(&cm);
        evaluate(&labels(&["A", "B", "C"]), &truth, &probs).unwrap()
    }

    #[test]
    fn three_class_per_class_metrics_match_hand_computation() {
        let r = three_class();
        assert_eq!(r.samples, 17);
        assert_eq!(
            r.confusion,
            vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 1, 4]]
        );
        // accuracy = trace / n = 12/17
        close(r.accuracy, 12.0 / 17.0);

        // A: tp 5, fp 7-5 = 2, fn 6-5 = 1, tn 17-5-2-1 = 9
        //    P = 5/7, R = 5/6, spec = 9/11, F1 = 2tp/(2tp+fp+fn) = 10/13,
        //    F2 = 5tp/(5tp+4fn+fp) = 25/31
        let a = &r.per_class[0];
        close(a.precision, 5.0 / 7.0);
        close(a.recall, 5.0 / 6.0);
        close(a.specificity, 9.0 / 11.0);
        close(a.f1, 10.0 / 13.0);
        close(a.f2, 25.0 / 31.0);
        assert_eq!(a.support, 6);
        // B: tp 3, fp 5-3 = 2, fn 6-3 = 3, tn 17-3-2-3 = 9
        //    P = 3/5, R = 3/6, spec = 9/11, F1 = 6/11, F2 = 15/29
        let b = &r.per_class[1];
        close(b.precision, 0.6);
        close(b.recall, 0.5);
        close(b.specificity, 9.0 / 11.0);
        close(b.f1, 6.0 / 11.0);
        close(b.f2, 15.0 / 29.0);
        assert_eq!(b.support, 6);
        // C: tp 4, fp 5-4 = 1, fn 5-4 = 1, tn 17-4-1-1 = 11
        //    P = 4/5, R = 4/5, spec = 11/12, F1 = 8/10, F2 = 20/25
        let c = &r.per_class[2];
        close(c.precision, 0.8);
        close(c.recall, 0.8);
        close(c.specificity, 11.0 / 12.0);
        close(c.f1, 0.8);
        close(c.f2, 0.8);
        assert_eq!(c.support, 5);
        // The F2 formula (1+4)PR/(4P+R) agrees with the count form for A:
        // 5·(5/7)(5/6) = 125/42 and 4·(5/7) + 5/6 = 120/42 + 35/42 = 155/42, so 125/155 = 25/31.
        close(f_beta(5.0 / 7.0, 5.0 / 6.0, 2.0), 25.0 / 31.0);
    }

    #[test]
    fn three_class_averages_kappa_and_mcc_match_hand_computation() {
        let r = three_class();
        // macro P = (5/7 + 3/5 + 4/5) / 3 = 0.704761904...
        close(r.macro_avg.precision, (5.0 / 7.0 + 0.6 + 0.8) / 3.0);
        assert!((r.macro_avg.precision - 0.704_761_904_8).abs() < 1e-9);
        // macro R = (5/6 + 1/2 + 4/5) / 3 = 0.711111...
        close(r.macro_avg.recall, 0.711_111_111_111_111_1);
        // macro F1 = (10/13 + 6/11 + 4/5) / 3 = 0.704895104...
        assert!((r.macro_avg.f1 - 0.704_895_104_9).abs() < 1e-9);
        // macro F2 = (25/31 + 15/29 + 4/5) / 3 = 0.707897664...
        assert!((r.macro_avg.f2 - 0.707_897_664_3).abs() < 1e-9);
        // weighted P = (6·5/7 + 6·3/5 + 5·4/5) / 17 = 11.885714.../17 = 0.699159663...
        assert!((r.weighted_avg.precision - 0.699_159_663_9).abs() < 1e-9);
        // weighted R is always the accuracy: (5 + 3 + 4) / 17
        close(r.weighted_avg.recall, 12.0 / 17.0);
        // weighted F1 = (6·10/13 + 6·6/11 + 5·4/5) / 17 = 11.888111.../17 = 0.699300699...
        assert!((r.weighted_avg.f1 - 0.699_300_699_3).abs() < 1e-9);
        // weighted specificity = (6·9/11 + 6·9/11 + 5·11/12) / 17
        close(
            r.weighted_avg.specificity,
            (6.0 * 9.0 / 11.0 + 6.0 * 9.0 / 11.0 + 5.0 * 11.0 / 12.0) / 17.0,
        );

        // kappa: p_o = 12/17 = 204/289, p_e = (6·7 + 6·5 + 5·5)/17² = 97/289,
        //        (204 - 97) / (289 - 97) = 107/192 = 0.557291666...
        close(r.cohen_kappa, 107.0 / 192.0);
        // MCC: c·s - Σ t_k p_k = 12·17 - 97 = 107,
        //      s² - Σ p_k² = 289 - (49+25+25) = 190, s² - Σ t_k² = 289 - (36+36+25) = 192,
        //      107 / √(190·192) = 107 / √36480 = 0.560217...
        close(r.mcc, 107.0 / 36480f64.sqrt());
        assert!((r.mcc - 0.560_217).abs() < 1e-6);
    }

    #[test]
    fn binary_mcc_equals_the_textbook_formula() {
        // Positive class = index 1. TP 6, FN 2, FP 1, TN 11.
        let cm = vec![vec![11, 1], vec![2, 6]];
        let (truth, probs) = samples_from_confusion(&cm);
        let r = evaluate(&labels(&["neg", "pos"]), &truth, &probs).unwrap();
        // (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (66 − 2) / √(7·8·12·13)
        //   = 64 / √8736 = 0.684737...
        close(r.mcc, 64.0 / 8736f64.sqrt());
        assert!((r.mcc - 0.684_737).abs() < 1e-6);
        // Binary kappa: p_o = 17/20, p_e = (12·13 + 8·7)/400 = 212/400,
        //   (340 − 212)/(400 − 212) = 128/188
        close(r.cohen_kappa, 128.0 / 188.0);
        let pos = &r.per_class[1];
        close(pos.precision, 6.0 / 7.0);
        close(pos.recall, 6.0 / 8.0);
        close(pos.specificity, 11.0 / 12.0);
    }

    #[test]
    fn auc_without_ties() {
        // Positives score {0.35, 0.8}, negatives {0.1, 0.4}: of the 4 pairs, 0.35 > 0.1,
        // 0.35 < 0.4, 0.8 > 0.1, 0.8 > 0.4, so AUC = 3/4.
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        close(auc.unwrap(), 0.75);
    }

    #[test]
    fn tied_scores_form_one_step_and_count_one_half() {
        // Positives {0.5, 0.9}, negatives {0.2, 0.5}: pairs 0.5>0.2 (1), 0.5=0.5 (1/2),
        // 0.9>0.2 (1), 0.9>0.5 (1): AUC = 3.5/4 = 0.875. Splitting the tie would give 0.75 or 1.
        let scores = [0.2f32, 0.5, 0.5, 0.9];
        let truth = [0usize, 1, 0, 1];
        let probs: Vec<Vec<f32>> = scores.iter().map(|&s| vec![1.0 - s, s]).collect();
        let r = evaluate(&labels(&["neg", "pos"]), &truth, &probs).unwrap();
        let roc = &r.roc[1];
        // Points: start (0,0); ≥0.9: tp 1, fp 0; ≥0.5: tp 2, fp 1 (the tie, one step); ≥0.2: all.
        assert_eq!(roc.fpr, vec![0.0, 0.0, 0.5, 1.0]);
        assert_eq!(roc.tpr, vec![0.0, 0.5, 1.0, 1.0]);
        let t: Vec<f64> = roc
            .thresholds
            .iter()
            .map(|&x| (x * 1e6).round() / 1e6)
            .collect();
        assert_eq!(t, vec![1.9, 0.9, 0.5, 0.2]);
        // Trapezoids: 0·(0+.5)/2 + .5·(.5+1)/2 + .5·(1+1)/2 = .375 + .5 = .875
        close(roc.auc.unwrap(), 0.875);
        // The negative class sees the mirrored scores; its AUC is the same.
        close(r.roc[0].auc.unwrap(), 0.875);
        close(r.macro_auc.unwrap(), 0.875);
        // All samples tied: AUC exactly 1/2.
        close(
            roc_auc(&[0.3; 4], &[true, false, true, false]).unwrap(),
            0.5,
        );
    }

    #[test]
    fn auc_equals_brute_force_mann_whitney() {
        // A small deterministic pseudo-random set with many ties (scores on a 0.1 grid).
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let scores: Vec<f64> = (0..200).map(|_| f64::from(next() % 11) / 10.0).collect();
        let positive: Vec<bool> = scores
            .iter()
            .map(|&s| (next() % 100) as f64 / 100.0 < s)
            .collect();
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for (i, &pi) in positive.iter().enumerate() {
            for (j, &pj) in positive.iter().enumerate() {
                if pi && !pj {
                    pairs += 1.0;
                    wins += match scores[i].total_cmp(&scores[j]) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
        }
        close(roc_auc(&scores, &positive).unwrap(), wins / pairs);
    }

    #[test]
    fn perfect_classifier_scores_one_everywhere() {
        let truth = vec![0, 1, 2, 0, 1, 2, 2];
        let probs: Vec<Vec<f32>> = truth.iter().map(|&t| row(3, t)).collect();
        let r = evaluate(&labels(&["x", "y", "z"]), &truth, &probs).unwrap();
        close(r.accuracy, 1.0);
        close(r.cohen_kappa, 1.0);
        close(r.mcc, 1.0);
        close(r.macro_auc.unwrap(), 1.0);
        close(r.macro_avg.f1, 1.0);
        close(r.weighted_avg.f2, 1.0);
        for c in &r.per_class {
            close(c.auc.unwrap(), 1.0);
            close(c.specificity, 1.0);
        }
    }

    #[test]
    fn never_predicted_and_absent_classes() {
        // Class "c" has no samples and is never predicted; "b" has samples but is never predicted.
        let truth = vec![0, 0, 1, 1];
        let probs = vec![row(3, 0), row(3, 0), row(3, 0), vec![0.6, 0.3, 0.1]];
        let r = evaluate(&labels(&["a", "b", "c"]), &truth, &probs).unwrap();
        let b = &r.per_class[1];
        assert_eq!(
            b.precision, 0.0,
            "never predicted: precision 0 (zero_division=0)"
        );
        assert_eq!(b.recall, 0.0);
        assert_eq!(b.f1, 0.0);
        let c = &r.per_class[2];
        assert_eq!(c.support, 0);
        assert_eq!(c.auc, None, "no positives: AUC undefined");
        assert!(r.roc[2].fpr.is_empty());
        close(c.specificity, 1.0);
        // a: scores {0.8, 0.8} vs b's {0.8, 0.6}: pairs 0.8=0.8 (½) ×2, 0.8>0.6 ×2 → 3/4.
        close(r.per_class[0].auc.unwrap(), 0.75);
        // b: scores {0.1, 0.3} vs a's {0.1, 0.1}: 0.1=0.1 ½ ×2, 0.3>0.1 ×2 → 3/4.
        close(r.per_class[1].auc.unwrap(), 0.75);
        // macro AUC averages only the defined AUCs.
        close(r.macro_auc.unwrap(), 0.75);
        // Everything is predicted "a": kappa 0 (p_o = p_e = 1/2) and MCC 0 (denominator 0).
        close(r.cohen_kappa, 0.0);
        close(r.mcc, 0.0);
    }

    #[test]
    fn confusion_matrix_from_predictions() {
        let m = ConfusionMatrix::from_predictions(2, &[0, 0, 1, 1, 1], &[0, 1, 1, 1, 0]).unwrap();
        assert_eq!(m.counts(), &[vec![1, 1], vec![1, 2]]);
        // Class 1: tp 2, fp 1, fn 1, tn 1.
        assert_eq!(
            m.one_vs_rest(1),
            BinaryCounts {
                tp: 2,
                fp: 1,
                fn_: 1,
                tn: 1
            }
        );
        close(m.accuracy(), 0.6);
        assert_eq!(
            ConfusionMatrix::from_predictions(2, &[0], &[2]),
            Err(MetricsError::PredictionOutOfRange {
                sample: 0,
                class: 2,
                num_classes: 2
            })
        );
        assert_eq!(
            ConfusionMatrix::from_predictions(2, &[0, 1], &[0]),
            Err(MetricsError::PredictionCount {
                truth: 2,
                predicted: 1
            })
        );
    }

    #[test]
    fn top1_agreement_counts_matches() {
        close(top1_agreement(&[0, 1, 2, 2], &[0, 1, 1, 2]), 0.75);
        close(top1_agreement(&[0, 1], &[0, 1, 1, 1]), 0.5);
        close(top1_agreement(&[], &[]), 0.0);
    }

    /// Asserts that two values serialize to the same JSON, numbers equal within a relative
    /// 1e-12. serde_json (without its `float_roundtrip` feature) may parse a float 1 ulp off.
    pub(crate) fn assert_json_close<A: Serialize, B: Serialize>(a: &A, b: &B) {
        fn walk(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
            use serde_json::Value as V;
            match (a, b) {
                (V::Number(x), V::Number(y)) => {
                    let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                    assert!(
                        (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                        "{at}: {x} != {y}"
                    );
                }
                (V::Array(x), V::Array(y)) => {
                    assert_eq!(x.len(), y.len(), "{at}: lengths differ");
                    for (i, (x, y)) in x.iter().zip(y).enumerate() {
                        walk(x, y, &format!("{at}[{i}]"));
                    }
                }
                (V::Object(x), V::Object(y)) => {
                    let kx: Vec<_> = x.keys().collect();
                    let ky: Vec<_> = y.keys().collect();
                    assert_eq!(kx, ky, "{at}: keys differ");
                    for (k, v) in x {
                        walk(v, &y[k], &format!("{at}.{k}"));
                    }
                }
                _ => assert_eq!(a, b, "{at}"),
            }
        }
        walk(
            &serde_json::to_value(a).unwrap(),
            &serde_json::to_value(b).unwrap(),
            "$",
        );
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = three_class();
        let json = serde_json::to_string(&r).unwrap();
        let back: ClassificationReport = serde_json::from_str(&json).unwrap();
        assert_json_close(&back, &r);
        assert_eq!(back.confusion, r.confusion);
        assert_eq!(back.labels, r.labels);
        // The checker itself must notice a real difference.
        let mut other = r.clone();
        other.per_class[1].f1 += 1e-9;
        let caught = std::panic::catch_unwind(|| assert_json_close(&other, &r));
        assert!(caught.is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let l = labels(&["a", "b"]);
        assert_eq!(
            evaluate(&l, &[], &[]),
            Err(MetricsError::Empty("no samples"))
        );
        assert_eq!(
            evaluate(&[], &[0], &[vec![]]),
            Err(MetricsError::Empty("no class labels"))
        );
        assert_eq!(
            evaluate(&l, &[0, 1], &[row(2, 0)]),
            Err(MetricsError::LengthMismatch {
                truth: 2,
                probabilities: 1
            })
        );
        assert_eq!(
            evaluate(&l, &[0, 2], &[row(2, 0), row(2, 1)]),
            Err(MetricsError::TruthOutOfRange {
                sample: 1,
                class: 2,
                num_classes: 2
            })
        );
        assert_eq!(
            evaluate(&l, &[0, 1], &[row(2, 0), row(3, 1)]),
            Err(MetricsError::RowLength {
                sample: 1,
                expected: 2,
                got: 3
            })
        );
        let err = evaluate(&l, &[0, 1], &[row(2, 0), vec![0.5, f32::NAN]]).unwrap_err();
        assert!(matches!(
            err,
            MetricsError::NotFinite {
                sample: 1,
                class: 1,
                ..
            }
        ));
        assert!(err.to_string().contains("NaN"), "{err}");
        let msg = evaluate(&l, &[0, 5], &[row(2, 0), row(2, 1)])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("sample 1") && msg.contains("class 5"), "{msg}");
    }

    #[test]
    fn wilson_intervals_match_known_values() {
        let near = |(lo, hi): (f64, f64), (a, b): (f64, f64)| {
            assert!(
                (lo - a).abs() < 5e-4 && (hi - b).abs() < 5e-4,
                "({lo}, {hi})"
            );
        };
        // Published values (e.g. Newcombe 1998, Brown, Cai & DasGupta 2001) at z = 1.96.
        near(wilson_interval(8, 10, 1.96), (0.4902, 0.9433));
        near(wilson_interval(0, 10, 1.96), (0.0, 0.2775));
        near(wilson_interval(10, 10, 1.96), (0.7225, 1.0));
        near(wilson_interval(81, 263, 1.96), (0.2553, 0.3662));
        near(wilson_interval(15, 148, 1.96), (0.0624, 0.1605));
        assert_eq!(wilson_interval(0, 10, Z_95).0, 0.0);
        assert_eq!(wilson_interval(10, 10, Z_95).1, 1.0);
        // Nothing counted: nothing known.
        assert_eq!(wilson_interval(0, 0, Z_95), (0.0, 1.0));
        // More successes than trials are clamped, not a panic or a bound above 1.
        assert_eq!(wilson_interval(12, 10, Z_95), wilson_interval(10, 10, Z_95));
        // Wider at 99 % than at 95 %, and narrower with more samples at the same share.
        let (a, b) = wilson_interval(8, 10, 2.576);
        assert!(a < 0.4902 && b > 0.9433);
        let (c, d) = wilson_interval(800, 1000, Z_95);
        assert!(c > 0.77 && d < 0.83);

        let p = Proportion::new(8, 10);
        assert_eq!((p.successes, p.n, p.value), (8, 10, Some(0.8)));
        assert_eq!(Proportion::new(0, 0).value, None);
    }

    #[test]
    fn report_intervals_come_from_the_confusion_matrix() {
        let r = three_class();
        let i = ReportIntervals::of(&r);
        assert_eq!((i.accuracy.successes, i.accuracy.n), (12, 17));
        close(i.accuracy.value.unwrap(), r.accuracy);
        // A: tp 5 of 7 predicted (precision), of 6 true (recall).
        let a = &i.per_class[0];
        assert_eq!((a.precision.successes, a.precision.n), (5, 7));
        assert_eq!((a.recall.successes, a.recall.n), (5, 6));
        for (c, m) in i.per_class.iter().zip(&r.per_class) {
            close(c.precision.value.unwrap(), m.precision);
            close(c.recall.value.unwrap(), m.recall);
            assert!(c.recall.low < m.recall && m.recall < c.recall.high);
        }
    }
}
