//! Evaluated under shift: what another microscope does to the pictures, and what the model
//! then says (`edge evaluate --shift-check`).
//!
//! Each [`Shift`] changes every picture of an evaluation the way another objective, lamp,
//! camera or stain would; [`ShiftCheck::run`] decides each changed picture as the device decides
//! a frame (the confidence threshold, and the model's unfamiliarity score when it has one) and
//! counts **right** (decided, the right label), **abstained** (uncertain: low confidence or
//! unfamiliar) and **confidently wrong** (decided, a wrong label), with Wilson 95 % intervals.
//! A confidently wrong answer is the one that matters: an abstention sends the field to a
//! person, a confident error does not.

use std::path::PathBuf;

use image::RgbImage;
use leukoscope_screening::{
    Decision, DecisionConfig, UncertainReason, decide_frame_with_familiarity, is_normal,
};
use serde::Serialize;

use crate::classifier::OnnxClassifier;
use crate::metrics::Proportion;
use crate::onnx::ModelError;
use crate::preprocess::{Preprocessor, decode_image};
use crate::scale::fields::resample;

/// Sigmas tried, smallest first, for [`Shift::BlurInsideFocusGate`].
pub const BLUR_SIGMAS: [f32; 10] = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0];

/// A change another microscope makes to a picture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "shift", rename_all = "snake_case")]
pub enum Shift {
    /// The picture as it is.
    AsCaptured,
    /// 2× magnification, scale not declared: the centre half of the picture shown at full size.
    Magnified,
    /// 0.5× magnification, scale not declared: the picture shrunk to half its side (cells half
    /// as large) in the middle of a picture of its own size filled with its background.
    Reduced,
    /// A warmer lamp: red ×1.15, blue ×0.85.
    WarmLamp,
    /// JPEG re-encoding at this quality.
    Jpeg {
        /// JPEG quality, 1..100.
        quality: u8,
    },
    /// The strongest Gaussian blur of [`BLUR_SIGMAS`] that still passes the device's focus gate
    /// (per picture; with no gate given, sigma 1).
    BlurInsideFocusGate,
    /// Every picture of another class given the mean colour of class `to` (each channel scaled
    /// by the ratio of the two classes' mean colours over the training split): a model that
    /// reads the class from the colour cast fails here.
    ColourCastOf {
        /// The class whose cast is given to the others (label index).
        to: usize,
    },
    /// 2× magnification with the scale declared: the picture enlarged 2× (twice the camera
    /// pixels per cell) and resampled back to the model's pixel size, as the device does.
    DeclaredMagnified,
    /// 0.5× with the scale declared: the picture shrunk to half (half the pixels per cell) and
    /// resampled back to the model's pixel size.
    DeclaredReduced,
}

impl Shift {
    /// The conditions of `edge evaluate --shift-check` for a model with `classes` labels.
    pub fn all(classes: usize) -> Vec<Shift> {
        let mut v = vec![
            Shift::AsCaptured,
            Shift::Magnified,
            Shift::Reduced,
            Shift::WarmLamp,
            Shift::Jpeg { quality: 30 },
            Shift::BlurInsideFocusGate,
        ];
        v.extend((0..classes).map(|to| Shift::ColourCastOf { to }));
        v.extend([Shift::DeclaredMagnified, Shift::DeclaredReduced]);
        v
    }

    /// A short name for tables.
    pub fn name(&self, labels: &[String]) -> String {
        match self {
            Shift::AsCaptured => "as captured".into(),
            Shift::Magnified => "2x magnification".into(),
            Shift::Reduced => "0.5x magnification".into(),
            Shift::WarmLamp => "warmer lamp (+15 % R, -15 % B)".into(),
            Shift::Jpeg { quality } => format!("JPEG quality {quality}"),
            Shift::BlurInsideFocusGate => "blur just inside the focus gate".into(),
            Shift::ColourCastOf { to } => format!(
                "colour cast of {} on the others",
                labels.get(*to).map_or("?", String::as_str)
            ),
            Shift::DeclaredMagnified => "2x, scale declared".into(),
            Shift::DeclaredReduced => "0.5x, scale declared".into(),
        }
    }
}

/// What a picture truly is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Truth {
    /// One of the model's labels (index).
    Class(usize),
    /// Only normal or blast is known (another dataset's labels, e.g. C-NMC's `hem` / `all`).
    Group(Decision),
}

/// One condition's counts.
#[derive(Debug, Clone, Serialize)]
pub struct ShiftRow {
    /// The condition's name.
    pub condition: String,
    /// Pictures decided.
    pub pictures: u64,
    /// Decided with the right label (or group).
    pub right: Proportion,
    /// Uncertain: below the confidence threshold or unfamiliar.
    pub abstained: Proportion,
    /// Decided with a wrong label (or group).
    pub confidently_wrong: Proportion,
    /// Unfamiliar (part of abstained), for models with a score.
    pub unfamiliar: Proportion,
    /// Pictures that could not be read (not counted).
    pub skipped: u64,
}

/// The settings of a shift check.
pub struct ShiftCheck<'a> {
    /// The model.
    pub model: &'a OnnxClassifier,
    /// The device's frame rule.
    pub decision: &'a DecisionConfig,
    /// Mean colour (R, G, B) of each class's training pictures, for [`Shift::ColourCastOf`].
    pub class_means: Vec<[f32; 3]>,
    /// The device's focus gate on a model-input picture, for [`Shift::BlurInsideFocusGate`].
    pub focus_ok: Option<&'a dyn Fn(&RgbImage) -> bool>,
}

impl ShiftCheck<'_> {
    /// Decides every picture of `files` under `shift` and counts the outcomes.
    pub fn run(&self, files: &[(PathBuf, Truth)], shift: Shift) -> Result<ShiftRow, ModelError> {
        let contract = self.model.contract();
        let labels = &contract.labels;
        let mut pre = Preprocessor::new(contract.clone());
        let mut input = vec![0.0; contract.input_len()];
        let (mut n, mut right, mut abstained, mut wrong, mut unfamiliar, mut skipped) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        for (path, truth) in files {
            if let (Shift::ColourCastOf { to }, Truth::Class(c)) = (shift, truth)
                && *c == to
            {
                continue;
            }
            let Ok(img) = decode_image(path) else {
                skipped += 1;
                continue;
            };
            // The model sees its input size: shifts act on the framed picture.
            let Ok(framed) = pre.fit(&img) else {
                skipped += 1;
                continue;
            };
            let changed = self.apply(shift, &framed, *truth);
            if pre.run_into(&changed, &mut input).is_err() {
                skipped += 1;
                continue;
            }
            let p = self.model.predict(&input)?;
            let d = decide_frame_with_familiarity(
                self.decision,
                labels,
                &p.probabilities,
                p.is_unfamiliar(contract),
            );
            n += 1;
            unfamiliar += u64::from(d.reason == Some(UncertainReason::Unfamiliar));
            if d.kind == Decision::Uncertain {
                abstained += 1;
                continue;
            }
            let ok = match truth {
                Truth::Class(c) => d.class == *c,
                Truth::Group(g) => {
                    let kind = if is_normal(&self.decision.normal_labels, &d.label) {
                        Decision::Normal
                    } else {
                        Decision::Blast
                    };
                    kind == *g
                }
            };
            if ok {
                right += 1;
            } else {
                wrong += 1;
            }
        }
        Ok(ShiftRow {
            condition: shift.name(labels),
            pictures: n,
            right: Proportion::new(right, n),
            abstained: Proportion::new(abstained, n),
            confidently_wrong: Proportion::new(wrong, n),
            unfamiliar: Proportion::new(unfamiliar, n),
            skipped,
        })
    }

    /// `img` (framed to the model input) as `shift` changes it.
    pub fn apply(&self, shift: Shift, img: &RgbImage, truth: Truth) -> RgbImage {
        apply_shift(shift, img, truth, &self.class_means, self.focus_ok)
    }
}

/// `img` (framed to the model input, of class `truth`) as `shift` changes it; `class_means`
/// and `focus_ok` as in [`ShiftCheck`].
pub fn apply_shift(
    shift: Shift,
    img: &RgbImage,
    truth: Truth,
    class_means: &[[f32; 3]],
    focus_ok: Option<&dyn Fn(&RgbImage) -> bool>,
) -> RgbImage {
    let (w, h) = img.dimensions();
    match shift {
        Shift::AsCaptured => img.clone(),
        Shift::Magnified => {
            let crop = image::imageops::crop_imm(img, w / 4, h / 4, w / 2, h / 2).to_image();
            resample(&crop, w, h)
        }
        Shift::Reduced => {
            let small = resample(img, w / 2, h / 2);
            let fill = crate::colour::background(img.as_raw())
                .map_or([255u8; 3], |b| b.map(|v| v.round() as u8));
            let mut out = RgbImage::from_pixel(w, h, image::Rgb(fill));
            image::imageops::overlay(&mut out, &small, i64::from(w / 4), i64::from(h / 4));
            out
        }
        Shift::WarmLamp => gains(img, [1.15, 1.0, 0.85]),
        Shift::Jpeg { quality } => jpeg_round_trip(img, quality),
        Shift::BlurInsideFocusGate => match focus_ok {
            None => image::imageops::blur(img, 1.0),
            Some(ok) => {
                let mut best = img.clone();
                for sigma in BLUR_SIGMAS {
                    let b = image::imageops::blur(img, sigma);
                    if !ok(&b) {
                        break;
                    }
                    best = b;
                }
                best
            }
        },
        Shift::ColourCastOf { to } => match truth {
            Truth::Class(c) if c != to => match (class_means.get(to), class_means.get(c)) {
                (Some(t), Some(own)) => gains(img, std::array::from_fn(|k| t[k] / own[k].max(1.0))),
                _ => img.clone(),
            },
            _ => img.clone(),
        },
        Shift::DeclaredMagnified => resample(&resample(img, 2 * w, 2 * h), w, h),
        Shift::DeclaredReduced => resample(&resample(img, w / 2, h / 2), w, h),
    }
}

/// Each channel scaled by its gain.
fn gains(img: &RgbImage, g: [f32; 3]) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for (c, k) in p.0.iter_mut().zip(g) {
            *c = (f32::from(*c) * k).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The picture after a JPEG encode and decode at `quality` (what a camera's or a network's
/// compression does; also the trainer's JPEG augmentation). If an in-memory encode ever failed,
/// the picture is returned unchanged rather than lost.
pub fn jpeg_round_trip(img: &RgbImage, quality: u8) -> RgbImage {
    let mut bytes = Vec::new();
    let ok = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(img)
        .is_ok();
    ok.then(|| image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).ok())
        .flatten()
        .map_or_else(|| img.clone(), |d| d.to_rgb8())
}

/// The mean colour of each class's pictures (`files` with their class), for
/// [`Shift::ColourCastOf`]; classes without a readable picture get mid-grey.
pub fn class_means(files: &[(PathBuf, usize)], classes: usize) -> Vec<[f32; 3]> {
    let mut sum = vec![[0f64; 3]; classes];
    let mut n = vec![0u64; classes];
    for (path, c) in files {
        let Ok(img) = decode_image(path) else {
            continue;
        };
        if *c >= classes {
            continue;
        }
        let pixels = (img.width() * img.height()).max(1) as f64;
        let mut s = [0f64; 3];
        for p in img.pixels() {
            for (acc, v) in s.iter_mut().zip(p.0) {
                *acc += f64::from(v);
            }
        }
        for (total, v) in sum[*c].iter_mut().zip(s) {
            *total += v / pixels;
        }
        n[*c] += 1;
    }
    sum.iter()
        .zip(&n)
        .map(|(s, &n)| {
            if n == 0 {
                [128.0; 3]
            } else {
                s.map(|v| (v / n as f64) as f32)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                image::Rgb([200, 100, 50])
            } else {
                image::Rgb([20, 40, 60])
            }
        })
    }

    #[test]
    fn magnification_and_reduction_change_the_cell_size_not_the_picture_size() {
        // A dark 8 px square in the middle of a white 32 px picture.
        let img = RgbImage::from_fn(32, 32, |x, y| {
            if (12..20).contains(&x) && (12..20).contains(&y) {
                image::Rgb([40, 40, 90])
            } else {
                image::Rgb([250, 250, 250])
            }
        });
        let dark = |i: &RgbImage| i.pixels().filter(|p| p.0[0] < 128).count();
        let shifted = |s| apply_shift(s, &img, Truth::Class(0), &[], None);
        assert_eq!(dark(&img), 64);
        let m = shifted(Shift::Magnified);
        assert_eq!(m.dimensions(), (32, 32));
        assert!((240..=272).contains(&dark(&m)), "{}", dark(&m));
        let r = shifted(Shift::Reduced);
        assert_eq!(r.dimensions(), (32, 32));
        assert!((12..=20).contains(&dark(&r)), "{}", dark(&r));
        assert_eq!(
            r.get_pixel(0, 0).0,
            [250, 250, 250],
            "filled with the background"
        );
        // Declared: back at the model's scale, so about the same square.
        for s in [Shift::DeclaredMagnified, Shift::DeclaredReduced] {
            let d = shifted(s);
            assert!((48..=80).contains(&dark(&d)), "{s:?}: {}", dark(&d));
        }
    }

    #[test]
    fn the_blur_stops_where_the_focus_gate_would_fail() {
        let img = checker(32, 32);
        let sharpness = |i: &RgbImage| {
            i.pixels()
                .zip(i.pixels().skip(1))
                .map(|(a, b)| (a.0[0] as i32 - b.0[0] as i32).abs())
                .sum::<i32>()
        };
        let limit = sharpness(&image::imageops::blur(&img, 1.5));
        let ok = move |i: &RgbImage| sharpness(i) >= limit;
        let b = apply_shift(
            Shift::BlurInsideFocusGate,
            &img,
            Truth::Class(0),
            &[],
            Some(&ok),
        );
        assert_eq!(b, image::imageops::blur(&img, 1.5));
    }

    #[test]
    fn a_colour_cast_moves_other_classes_to_the_target_class_mean() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
        let means = [[200.0, 100.0, 50.0], [100.0, 100.0, 100.0]];
        let cast = |truth| apply_shift(Shift::ColourCastOf { to: 0 }, &img, truth, &means, None);
        assert_eq!(cast(Truth::Class(1)).get_pixel(0, 0).0, [200, 100, 50]);
        assert_eq!(
            cast(Truth::Class(0)),
            img,
            "the class's own pictures are left alone"
        );
    }

    #[test]
    fn a_warm_lamp_and_a_colour_cast_scale_channels() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
        assert_eq!(
            gains(&img, [1.15, 1.0, 0.85]).get_pixel(0, 0).0,
            [115, 100, 85]
        );
        assert_eq!(
            gains(&img, [3.0, 1.0, 0.0]).get_pixel(0, 0).0,
            [255, 100, 0]
        );
        assert_ne!(jpeg_round_trip(&checker(32, 32), 30), checker(32, 32));
    }

    #[test]
    fn class_means_average_each_class() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let b = dir.path().join("b.png");
        RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]))
            .save(&a)
            .unwrap();
        RgbImage::from_pixel(4, 4, image::Rgb([30, 40, 50]))
            .save(&b)
            .unwrap();
        let m = class_means(&[(a, 0), (b, 0)], 2);
        assert_eq!(m[0], [20.0, 30.0, 40.0]);
        assert_eq!(m[1], [128.0; 3]);
        assert_eq!(Shift::all(4).len(), 12);
    }
}
