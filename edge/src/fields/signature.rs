//! A frame's signature (downscaled, high-passed, normalized luma) and how two signatures line up
//! (phase correlation, then the correlation of their overlap).

use std::sync::Arc;

use image::RgbImage;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

/// The long side of a frame's signature, in pixels.
pub const SIGNATURE_SIDE: u32 = 64;

/// A frame reduced for comparison: zero-mean, unit-energy, high-passed luma.
#[derive(Debug, Clone)]
pub struct Signature {
    width: usize,
    height: usize,
    values: Vec<f32>,
}

impl Signature {
    /// Whether the signature holds nothing (an empty frame): it matches nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The signature of a frame (an empty frame gives an empty signature, which matches nothing).
    pub fn of(image: &RgbImage) -> Signature {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Signature {
                width: 0,
                height: 0,
                values: Vec::new(),
            };
        }
        let scale = f64::from(SIGNATURE_SIDE) / f64::from(w.max(h));
        let sw = ((f64::from(w) * scale).round() as usize).clamp(1, SIGNATURE_SIDE as usize);
        let sh = ((f64::from(h) * scale).round() as usize).clamp(1, SIGNATURE_SIDE as usize);
        let mut sum = vec![0f32; sw * sh];
        let mut count = vec![0u32; sw * sh];
        let raw = image.as_raw();
        for y in 0..h as usize {
            let sy = y * sh / h as usize;
            let row = &raw[y * w as usize * 3..(y + 1) * w as usize * 3];
            for (x, px) in row.chunks_exact(3).enumerate() {
                let sx = x * sw / w as usize;
                let luma =
                    0.299 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.114 * f32::from(px[2]);
                sum[sy * sw + sx] += luma;
                count[sy * sw + sx] += 1;
            }
        }
        let luma: Vec<f32> = sum
            .iter()
            .zip(&count)
            .map(|(s, &n)| s / n.max(1) as f32)
            .collect();
        let mut values = high_pass(&luma, sw, sh, 3);
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        values.iter_mut().for_each(|v| *v -= mean);
        let energy = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        if energy > 1e-3 {
            values.iter_mut().for_each(|v| *v /= energy);
        } else {
            values.iter_mut().for_each(|v| *v = 0.0);
        }
        Signature {
            width: sw,
            height: sh,
            values,
        }
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        self.values[y * self.width + x]
    }
}

/// `values` minus their mean over a (2r+1)² box (clamped at the borders).
fn high_pass(values: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
            let mut s = 0.0;
            for yy in y0..y1 {
                s += values[yy * w + x0..yy * w + x1].iter().sum::<f32>();
            }
            let n = ((y1 - y0) * (x1 - x0)) as f32;
            out[y * w + x] = values[y * w + x] - s / n;
        }
    }
    out
}

/// How two signatures line up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// The translation of the second relative to the first, in signature pixels.
    pub shift: (i32, i32),
    /// Share of the frame the two have in common at that translation (0..1).
    pub overlap: f32,
    /// Normalized correlation of the overlapping parts (-1..1).
    pub correlation: f32,
}

impl Match {
    /// The translation's length as a share of the signature's long side.
    pub fn shift_share(&self) -> f32 {
        let (dx, dy) = self.shift;
        ((dx * dx + dy * dy) as f32).sqrt() / SIGNATURE_SIDE as f32
    }
}

/// A signature with its spectrum, computed once however often it is compared.
#[derive(Clone)]
pub(super) struct Analysed {
    pub(super) signature: Signature,
    spectrum: Vec<Complex32>,
}

/// Phase correlation of signatures of one size (FFT plans kept between frames).
pub(super) struct Correlator {
    width: usize,
    height: usize,
    rows: Arc<dyn Fft<f32>>,
    rows_inverse: Arc<dyn Fft<f32>>,
    columns: Arc<dyn Fft<f32>>,
    columns_inverse: Arc<dyn Fft<f32>>,
    column: Vec<Complex32>,
}

impl Correlator {
    /// A correlator for signatures like `signature`.
    pub(super) fn for_signature(signature: &Signature) -> Self {
        Correlator::new(signature.width, signature.height)
    }

    /// Whether `signature` has this correlator's size.
    pub(super) fn fits(&self, signature: &Signature) -> bool {
        (signature.width, signature.height) == (self.width, self.height)
    }

    fn new(width: usize, height: usize) -> Self {
        let mut planner = FftPlanner::new();
        Correlator {
            width,
            height,
            rows: planner.plan_fft_forward(width),
            rows_inverse: planner.plan_fft_inverse(width),
            columns: planner.plan_fft_forward(height),
            columns_inverse: planner.plan_fft_inverse(height),
            column: vec![Complex32::default(); height],
        }
    }

    fn transform(&mut self, data: &mut [Complex32], inverse: bool) {
        let (w, h) = (self.width, self.height);
        let (rows, columns) = if inverse {
            (&self.rows_inverse, &self.columns_inverse)
        } else {
            (&self.rows, &self.columns)
        };
        rows.process(data);
        for x in 0..w {
            for y in 0..h {
                self.column[y] = data[y * w + x];
            }
            columns.process(&mut self.column);
            for y in 0..h {
                data[y * w + x] = self.column[y];
            }
        }
    }

    /// The signature with its spectrum, ready to be compared (its size must be this
    /// correlator's).
    pub(super) fn analyse(&mut self, signature: Signature) -> Analysed {
        let mut spectrum: Vec<Complex32> = signature
            .values
            .iter()
            .map(|&v| Complex32::new(v, 0.0))
            .collect();
        self.transform(&mut spectrum, false);
        Analysed {
            signature,
            spectrum,
        }
    }

    /// How `b` lines up with `a` (both of this correlator's size): the phase-correlation peak,
    /// then the correlation over the overlap.
    pub(super) fn compare(&mut self, a: &Analysed, b: &Analysed) -> Match {
        let (w, h) = (self.width, self.height);
        let (fa, fb) = (&a.spectrum, &b.spectrum);
        let mut cross: Vec<Complex32> = fa
            .iter()
            .zip(fb)
            .map(|(x, y)| {
                let c = x.conj() * y;
                let n = c.norm();
                if n > 1e-12 {
                    c / n
                } else {
                    Complex32::default()
                }
            })
            .collect();
        self.transform(&mut cross, true);
        let peak = (0..cross.len())
            .max_by(|&i, &j| cross[i].re.total_cmp(&cross[j].re))
            .unwrap_or(0);
        let wrap = |v: usize, n: usize| {
            if v > n / 2 {
                v as i32 - n as i32
            } else {
                v as i32
            }
        };
        let shift = (wrap(peak % w, w), wrap(peak / w, h));
        overlap_correlation(&a.signature, &b.signature, shift)
    }
}

/// The correlation of `a` and `b` where they overlap when `b` is moved by `shift`.
fn overlap_correlation(a: &Signature, b: &Signature, shift: (i32, i32)) -> Match {
    let (w, h) = (a.width as i32, a.height as i32);
    let (dx, dy) = shift;
    let (ox, oy) = (w - dx.abs(), h - dy.abs());
    if ox <= 0 || oy <= 0 {
        return Match {
            shift,
            overlap: 0.0,
            correlation: 0.0,
        };
    }
    let (mut ab, mut aa, mut bb, mut sa, mut sb) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for y in 0..oy {
        let (ya, yb) = if dy >= 0 { (y, y + dy) } else { (y - dy, y) };
        for x in 0..ox {
            let (xa, xb) = if dx >= 0 { (x, x + dx) } else { (x - dx, x) };
            let va = f64::from(a.at(xa as usize, ya as usize));
            let vb = f64::from(b.at(xb as usize, yb as usize));
            ab += va * vb;
            aa += va * va;
            bb += vb * vb;
            sa += va;
            sb += vb;
        }
    }
    let n = f64::from(ox * oy);
    let cov = ab - sa * sb / n;
    let var = (aa - sa * sa / n) * (bb - sb * sb / n);
    let correlation = if var > 1e-18 {
        (cov / var.sqrt()) as f32
    } else {
        0.0
    };
    Match {
        shift,
        overlap: (ox * oy) as f32 / (w * h) as f32,
        correlation,
    }
}

impl Signature {
    /// Whether `other` can be compared with this one: same size, not empty.
    pub(super) fn comparable(&self, other: &Signature) -> bool {
        self.width == other.width && self.height == other.height && !self.is_empty()
    }
}

/// Compares two frames' signatures (`None` when their sizes differ or one is empty).
pub fn compare(a: &Signature, b: &Signature) -> Option<Match> {
    if !a.comparable(b) {
        return None;
    }
    let mut correlator = Correlator::new(a.width, a.height);
    let (a, b) = (correlator.analyse(a.clone()), correlator.analyse(b.clone()));
    Some(correlator.compare(&a, &b))
}
