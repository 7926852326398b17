//! The pixel size from a picture of a stage micrometer: a ruler of equally spaced lines (usually
//! 10 µm apart) photographed through the same objective and camera.
//!
//! # Method
//!
//! 1. The luma is averaged along each column (a profile over x) and along each row (a profile
//!    over y): lines across the picture become a periodic profile in one of the two, whatever
//!    part of the picture the ruler fills.
//! 2. Each profile loses its mean and linear trend (an uneven lamp), and its autocorrelation
//!    (normalized, unbiased) is computed for lags up to half its length.
//! 3. The period is the first local maximum of the autocorrelation that reaches at least half
//!    of the highest one (longer ticks every 5 or 10 divisions make later peaks higher, but the
//!    division is the first repetition) and at least [`MIN_CORRELATION`]. The profile whose
//!    period correlates better gives the ruler's direction.
//! 4. The peaks at every multiple of that period are located to a fraction of a pixel (a
//!    parabola through each peak and its neighbours), and the spacing is the least-squares slope
//!    of peak position over multiple: over a dozen divisions that is good to a few hundredths
//!    of a pixel, where one peak alone gives ±0.5 px.
//!
//! The ruler must lie roughly along the rows or the columns (within a few degrees: a tilt
//! smears the lines across the average); a tilt θ lengthens the spacing by 1/cos θ (0.4 % at
//! 5°). At least three divisions must be visible.

use image::RgbImage;

use super::{ScaleError, ScaleEstimate, ScaleMethod, check_um_per_px, quantile};

/// The least autocorrelation at the ruler's period: below it the picture shows no periodic
/// lines.
pub const MIN_CORRELATION: f64 = 0.3;

/// The shortest period looked for, pixels.
const MIN_PERIOD_PX: usize = 3;

/// The pixel size from a stage-micrometer picture whose divisions are `division_um` apart.
pub fn estimate_from_micrometer(
    img: &RgbImage,
    division_um: f64,
) -> Result<ScaleEstimate, ScaleError> {
    if !(division_um.is_finite() && division_um > 0.0) {
        return Err(ScaleError::NoRuler(format!(
            "the division must be a positive length in µm, got {division_um}"
        )));
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 4 * MIN_PERIOD_PX || h < 4 * MIN_PERIOD_PX {
        return Err(ScaleError::NoRuler(format!(
            "the picture ({w}x{h}) is too small"
        )));
    }
    let luma: Vec<f64> = img
        .pixels()
        .map(|p| 0.299 * p.0[0] as f64 + 0.587 * p.0[1] as f64 + 0.114 * p.0[2] as f64)
        .collect();
    let mut columns = vec![0.0; w];
    let mut rows = vec![0.0; h];
    for y in 0..h {
        for x in 0..w {
            columns[x] += luma[y * w + x] / h as f64;
            rows[y] += luma[y * w + x] / w as f64;
        }
    }
    let best = [columns, rows]
        .iter()
        .filter_map(|p| periodicity(p))
        .max_by(|a, b| a.correlation.total_cmp(&b.correlation));
    let Some(p) = best else {
        return Err(ScaleError::NoRuler(
            "neither the rows nor the columns repeat (no autocorrelation peak)".into(),
        ));
    };
    if p.correlation < MIN_CORRELATION {
        return Err(ScaleError::NoRuler(format!(
            "the strongest repetition ({:.1} px) correlates only {:.2} (at least \
             {MIN_CORRELATION} needed): is the ruler in focus and along the rows or columns?",
            p.period, p.correlation
        )));
    }
    if p.divisions < 2 {
        return Err(ScaleError::NoRuler(format!(
            "only one division ({:.1} px) fits in half the picture: at least three must be \
             visible",
            p.period
        )));
    }
    let um_per_px = division_um / p.period;
    check_um_per_px("the micrometer's pixel size", um_per_px)?;
    let mut singles = p.singles.clone();
    singles.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile(&singles, 0.25), quantile(&singles, 0.75));
    Ok(ScaleEstimate {
        um_per_px,
        method: ScaleMethod::Micrometer,
        length_px: p.period,
        iqr_px: (q1, q3),
        iqr_um_per_px: (division_um / q3, division_um / q1),
        count: p.divisions,
        pictures: 1,
        pixel_aspect: 1.0,
    })
}

/// A profile's period.
struct Period {
    /// Pixels per division (fitted over every multiple).
    period: f64,
    /// The autocorrelation at the first peak.
    correlation: f64,
    /// Multiples of the period the fit used.
    divisions: usize,
    /// Spacing between consecutive located peaks.
    singles: Vec<f64>,
}

fn periodicity(profile: &[f64]) -> Option<Period> {
    let n = profile.len();
    // Remove the mean and the linear trend.
    let nf = n as f64;
    let mean_x = (nf - 1.0) / 2.0;
    let mean_y = profile.iter().sum::<f64>() / nf;
    let sxy: f64 = profile
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64 - mean_x) * (v - mean_y))
        .sum();
    let sxx: f64 = (0..n).map(|i| (i as f64 - mean_x).powi(2)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let x: Vec<f64> = profile
        .iter()
        .enumerate()
        .map(|(i, v)| v - mean_y - slope * (i as f64 - mean_x))
        .collect();
    let var = x.iter().map(|v| v * v).sum::<f64>() / nf;
    if var <= 1e-9 {
        return None;
    }
    let max_lag = n / 2;
    let r: Vec<f64> = (0..=max_lag)
        .map(|k| {
            let s: f64 = (0..n - k).map(|i| x[i] * x[i + k]).sum();
            s / (n - k) as f64 / var
        })
        .collect();
    let peaks: Vec<usize> = (MIN_PERIOD_PX..max_lag)
        .filter(|&k| r[k] > r[k - 1] && r[k] >= r[k + 1] && r[k] > 0.0)
        .collect();
    let highest = peaks.iter().map(|&k| r[k]).fold(f64::MIN, f64::max);
    let first = *peaks.iter().find(|&&k| r[k] >= 0.5 * highest)?;
    let correlation = r[first];
    // Locate every multiple's peak to a fraction of a pixel, each search around the position
    // the fit so far predicts.
    let mut period = refine(&r, first)?;
    let mut located = vec![(1.0, period)];
    let mut m = 2usize;
    loop {
        let predicted = period * m as f64;
        let half = (period / 4.0).max(1.0);
        let lo = (predicted - half).floor().max(1.0) as usize;
        let hi = (predicted + half).ceil() as usize;
        if hi >= max_lag {
            break;
        }
        let k = (lo..=hi).max_by(|&a, &b| r[a].total_cmp(&r[b]))?;
        if k == lo || k == hi || r[k] < 0.5 * correlation {
            break;
        }
        located.push((m as f64, refine(&r, k)?));
        let (smm, sml) = located
            .iter()
            .fold((0.0, 0.0), |(a, b), &(mm, l)| (a + mm * mm, b + mm * l));
        period = sml / smm;
        m += 1;
    }
    let singles = std::iter::once(located[0].1)
        .chain(located.windows(2).map(|p| p[1].1 - p[0].1))
        .collect();
    Some(Period {
        period,
        correlation,
        divisions: located.len(),
        singles,
    })
}

/// The position of a peak of `r` at `k`, refined by a parabola through `k − 1`, `k`, `k + 1`.
fn refine(r: &[f64], k: usize) -> Option<f64> {
    let (a, b, c) = (*r.get(k - 1)?, r[k], *r.get(k + 1)?);
    let denom = a - 2.0 * b + c;
    let shift = if denom.abs() > 1e-12 {
        (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    Some(k as f64 + shift)
}

/// A synthetic stage-micrometer picture for tests: dark lines `period` pixels apart across a
/// bright field (vertical lines when `vertical`), every fifth one longer, blurred, with noise
/// and an uneven lamp.
pub fn synthetic_ruler(
    width: u32,
    height: u32,
    period: f64,
    vertical: bool,
    seed: u64,
) -> RgbImage {
    let mut rng = crate::seeded::SplitMix64::new(seed);
    let along = if vertical { width } else { height } as f64;
    let across = if vertical { height } else { width } as f64;
    let offset = rng.unit() as f64 * period;
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = if vertical {
            (x as f64 + 0.5, y as f64 + 0.5)
        } else {
            (y as f64 + 0.5, x as f64 + 0.5)
        };
        // Distance to the nearest line centre and that line's number.
        let k = ((u - offset) / period).round();
        let d = (u - offset - k * period).abs();
        let long = (k as i64).rem_euclid(5) == 0;
        let (v0, v1) = if long {
            (0.2 * across, 0.8 * across)
        } else {
            (0.35 * across, 0.65 * across)
        };
        let in_band = v >= v0 && v <= v1;
        // A 2 px wide line with a 1 px soft edge.
        let ink = if in_band {
            (1.0 - (d - 1.0).max(0.0)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let lamp = 230.0 - 25.0 * (u / along);
        let noise = (rng.unit() as f64 - 0.5) * 10.0;
        let value = lamp * (1.0 - 0.7 * ink) + noise;
        let g = value.clamp(0.0, 255.0) as u8;
        image::Rgb([g, g, g.saturating_add(6)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spacing_of_a_synthetic_ruler_is_recovered() {
        for (w, h, period, vertical) in [
            (640, 480, 23.7, true),
            (640, 480, 41.3, false),
            (1280, 720, 9.35, true),
            (800, 600, 75.0, true),
        ] {
            let img = synthetic_ruler(w, h, period, vertical, 7);
            let e = estimate_from_micrometer(&img, 10.0).unwrap();
            let rel = (e.length_px - period).abs() / period;
            assert!(rel < 0.01, "period {period}: {e}");
            assert!((e.um_per_px - 10.0 / period).abs() / (10.0 / period) < 0.01);
            assert!(e.count >= 2, "{e}");
        }
    }

    #[test]
    fn pictures_without_a_ruler_are_refused() {
        let blank = RgbImage::from_pixel(320, 240, image::Rgb([220, 220, 225]));
        let e = estimate_from_micrometer(&blank, 10.0).unwrap_err();
        assert!(matches!(e, ScaleError::NoRuler(_)), "{e}");
        let smear = super::super::synthetic::SyntheticField::new(20.0, 1).draw();
        let e = estimate_from_micrometer(&smear, 10.0).unwrap_err();
        assert!(e.to_string().contains("micrometer"), "{e}");
        let ruler = synthetic_ruler(320, 240, 20.0, true, 1);
        assert!(estimate_from_micrometer(&ruler, 0.0).is_err());
        assert!(estimate_from_micrometer(&ruler, f64::NAN).is_err());
        // Two divisions in the whole picture: too few.
        let coarse = synthetic_ruler(320, 240, 150.0, true, 1);
        assert!(estimate_from_micrometer(&coarse, 10.0).is_err());
    }
}
