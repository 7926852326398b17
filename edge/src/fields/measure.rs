//! How well the field tracker tells fields apart on real pictures (`edge fields PICTURES…`): the
//! measurement behind [`FieldConfig`]'s defaults, and a check a deployer can run on pictures of
//! their own microscope.
//!
//! From each picture a square window (70 % of its short side) is the reference **field**; the
//! frames compared with it are:
//! * **the same field** as a camera shows it again: the window moved by up to ±2 px (jitter),
//!   uniform sensor noise of ±10 grey levels, a gain change of up to ±8 % (exposure flicker), and
//!   JPEG compression at quality 80;
//! * **a moved view**: the window shifted by 10–40 % of its side (the same cells re-centred,
//!   or mostly new cells), with the same noise;
//! * **another field**: the window of another picture, with the same noise;
//! * **another field under the same uneven lamp**: both windows darkened by 30 % towards their
//!   corners (vignetting, which every frame of one microscope shares).

use image::{Rgb, RgbImage};
use leukoscope_model::seeded::SplitMix64;
use serde::Serialize;

use super::FieldConfig;
use super::signature::{Signature, compare};

/// What one kind of frame looks like to the tracker, over all pictures.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionFigures {
    /// The kind of frame compared with the reference field.
    pub condition: String,
    /// Comparisons made.
    pub n: usize,
    /// Correlation of the overlap: 1st, 50th and 99th percentile.
    pub correlation: [f32; 3],
    /// Share of the frame overlapping the reference: median.
    pub overlap: f32,
    /// Share of frames the tracker takes for the reference field (same-field test).
    pub same_field: f32,
    /// Share of frames that would count as still after the reference (still test).
    pub still: f32,
}

/// The measurement over a set of pictures.
#[derive(Debug, Clone, Serialize)]
pub struct FieldMeasurement {
    /// Pictures used.
    pub pictures: usize,
    /// The settings judged.
    pub config: FieldConfig,
    /// One row per condition.
    pub conditions: Vec<ConditionFigures>,
}

impl std::fmt::Display for FieldMeasurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} pictures; same field: correlation >= {} over >= {:.0} % overlap; still: \
             correlation >= {} and shift <= {:.0} % of the frame",
            self.pictures,
            self.config.same_threshold,
            self.config.min_overlap * 100.0,
            self.config.still_threshold,
            self.config.still_max_shift * 100.0
        )?;
        writeln!(
            f,
            "{:<34} {:>5} {:>7} {:>7} {:>7} {:>8} {:>10} {:>7}",
            "frame", "n", "corr p1", "p50", "p99", "overlap", "same field", "still"
        )?;
        for c in &self.conditions {
            writeln!(
                f,
                "{:<34} {:>5} {:>7.3} {:>7.3} {:>7.3} {:>7.0}% {:>9.1}% {:>6.1}%",
                c.condition,
                c.n,
                c.correlation[0],
                c.correlation[1],
                c.correlation[2],
                c.overlap * 100.0,
                c.same_field * 100.0,
                c.still * 100.0
            )?;
        }
        Ok(())
    }
}

/// A camera's view of `picture`: the `side`² window at (`x`, `y`), with sensor noise, a gain
/// and JPEG compression at quality 80.
fn view(
    picture: &RgbImage,
    x: u32,
    y: u32,
    side: u32,
    gain: f32,
    rng: &mut SplitMix64,
) -> RgbImage {
    let window = RgbImage::from_fn(side, side, |i, j| {
        let p = picture.get_pixel(x + i, y + j);
        let mut noisy =
            |v: u8| (f32::from(v) * gain + (rng.unit() - 0.5) * 20.0).clamp(0.0, 255.0) as u8;
        Rgb([noisy(p[0]), noisy(p[1]), noisy(p[2])])
    });
    let mut jpeg = Vec::new();
    let encoded = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&window)
        .is_ok();
    match encoded
        .then(|| image::load_from_memory(&jpeg).ok())
        .flatten()
    {
        Some(decoded) => decoded.into_rgb8(),
        None => window,
    }
}

/// `image` darkened by up to 30 % towards its corners.
fn vignetted(mut image: RgbImage) -> RgbImage {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let r2 = (w * w + h * h) / 4.0;
    for (x, y, p) in image.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 - w / 2.0, y as f32 - h / 2.0);
        let k = 1.0 - 0.3 * (dx * dx + dy * dy) / r2;
        for c in p.0.iter_mut() {
            *c = (f32::from(*c) * k) as u8;
        }
    }
    image
}

fn percentile(sorted: &[f32], q: f32) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    let i = ((sorted.len() - 1) as f32 * q).round() as usize;
    sorted[i]
}

/// Measures `config` on `pictures` (each at least 64 px on its short side; smaller ones are
/// skipped). The noise is seeded: the same pictures give the same table.
pub fn measure_pictures(
    pictures: &[RgbImage],
    config: &FieldConfig,
    seed: u64,
) -> FieldMeasurement {
    let usable: Vec<&RgbImage> = pictures
        .iter()
        .filter(|p| p.width().min(p.height()) >= 64)
        .collect();
    let mut rng = SplitMix64::new(seed);
    let shifts = [0.1f32, 0.2, 0.3, 0.4];
    let mut names = vec!["same field (noise, jitter, flicker)".to_string()];
    names.extend(
        shifts
            .iter()
            .map(|s| format!("moved {:.0} % of the field", s * 100.0)),
    );
    names.push("another field, same uneven lamp".to_string());
    names.push("another field".to_string());
    let mut matches: Vec<Vec<super::Match>> = vec![Vec::new(); names.len()];
    for (i, picture) in usable.iter().enumerate() {
        let short = picture.width().min(picture.height());
        let side = short * 7 / 10;
        let y = (picture.height() - side) / 2;
        // The reference sits at the left edge (2 px in, for jitter) so that shifts to the right
        // stay inside the picture; shifts that do not fit are left out.
        let reference = Signature::of(&view(picture, 2, y, side, 1.0, &mut rng));
        let compare_with = |k: usize, frame: RgbImage, out: &mut Vec<Vec<_>>| {
            if let Some(m) = compare(&reference, &Signature::of(&frame)) {
                out[k].push(m);
            }
        };
        let jx = 2 + rng.below(3) as u32;
        let jy = (y + rng.below(5) as u32).saturating_sub(2);
        let gain = 0.92 + rng.unit() * 0.16;
        let same = view(
            picture,
            jx - 2 + rng.below(3) as u32,
            jy,
            side,
            gain,
            &mut rng,
        );
        compare_with(0, same, &mut matches);
        for (k, s) in shifts.iter().enumerate() {
            let dx = 2 + (s * side as f32).round() as u32;
            if dx + side <= picture.width() {
                let moved = view(picture, dx, y, side, 1.0, &mut rng);
                compare_with(k + 1, moved, &mut matches);
            }
        }
        let other = usable[(i + 1) % usable.len()];
        if usable.len() > 1 && other.width().min(other.height()) >= side {
            let (ox, oy) = ((other.width() - side) / 2, (other.height() - side) / 2);
            let frame = view(other, ox, oy, side, 1.0, &mut rng);
            compare_with(names.len() - 1, frame, &mut matches);
            let lit = Signature::of(&vignetted(view(picture, 2, y, side, 1.0, &mut rng)));
            let other_lit = vignetted(view(other, ox, oy, side, 1.0, &mut rng));
            if let Some(m) = compare(&lit, &Signature::of(&other_lit)) {
                matches[names.len() - 2].push(m);
            }
        }
    }
    let conditions = names
        .into_iter()
        .zip(matches)
        .map(|(condition, ms)| {
            let mut corr: Vec<f32> = ms.iter().map(|m| m.correlation).collect();
            corr.sort_by(f32::total_cmp);
            let mut overlap: Vec<f32> = ms.iter().map(|m| m.overlap).collect();
            overlap.sort_by(f32::total_cmp);
            let share = |f: &dyn Fn(&super::Match) -> bool| {
                if ms.is_empty() {
                    f32::NAN
                } else {
                    ms.iter().filter(|m| f(m)).count() as f32 / ms.len() as f32
                }
            };
            ConditionFigures {
                condition,
                n: ms.len(),
                correlation: [
                    percentile(&corr, 0.01),
                    percentile(&corr, 0.5),
                    percentile(&corr, 0.99),
                ],
                overlap: percentile(&overlap, 0.5),
                same_field: share(&|m| {
                    m.correlation >= config.same_threshold && m.overlap >= config.min_overlap
                }),
                still: share(&|m| {
                    m.correlation >= config.still_threshold
                        && m.shift_share() <= config.still_max_shift
                }),
            }
        })
        .collect();
    FieldMeasurement {
        pictures: usable.len(),
        config: config.clone(),
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_fields_are_told_apart() {
        let pictures: Vec<RgbImage> = (0..6)
            .map(|seed| crate::quality::synthetic_smear(224, 224, seed))
            .collect();
        let m = measure_pictures(&pictures, &FieldConfig::default(), 1);
        assert_eq!(m.pictures, 6);
        let same = &m.conditions[0];
        let other = m.conditions.last().unwrap();
        let lit = &m.conditions[m.conditions.len() - 2];
        assert_eq!((same.n, other.n, lit.n), (6, 6, 6));
        assert_eq!(same.same_field, 1.0, "{m}");
        assert_eq!(other.same_field, 0.0, "{m}");
        assert_eq!(lit.same_field, 0.0, "{m}");
        assert!(same.correlation[1] > other.correlation[1], "{m}");
        // The table names every condition.
        let table = m.to_string();
        assert!(table.contains("moved 40 % of the field"), "{table}");
    }
}
