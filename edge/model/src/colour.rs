//! Colour normalization: removing what the acquisition adds (lamp colour, white balance,
//! exposure) before the model sees a picture.
//!
//! A bright-field smear is mostly background: the light of the lamp through the glass, which
//! should be white. [`ColourNormalization::BackgroundWhite`] finds that background in each model
//! input (the brightest tenth of its pixels), and scales each channel so that it becomes the
//! training set's background colour (`white`, measured by the trainer and carried in the model
//! contract). A warmer lamp, another white balance or a darker exposure then reach the model as
//! the training pictures looked. What a channel lost to clipping cannot be brought back, and the
//! stain itself (its hue, how dark the cells took it) is not changed: the trainer's stain-space
//! (HED) augmentation teaches the model to live with that.
//!
//! It runs inside [`crate::preprocess::Preprocessor`], on the framed picture, after the trainer's
//! augmentation and before normalization to the model's mean and std: training, quantization
//! and the device apply exactly the same function.

use serde::{Deserialize, Serialize};

/// The share of a picture's pixels, the brightest, taken as its background.
pub const BACKGROUND_FRACTION: f64 = 0.10;

/// The gain applied to a channel is clamped to `[1 / MAX_GAIN, MAX_GAIN]`: beyond it a picture
/// is too far from the training pictures to be rescued, and a field without background (cells
/// edge to edge) must not be brightened without limit.
pub const MAX_GAIN: f32 = 1.5;

/// A background darker than this luma (0..255) is not background: the picture is left as it is.
pub const MIN_BACKGROUND_LUMA: f32 = 128.0;

/// How a picture's colour is normalized before the model sees it (ONNX metadata key
/// `leukoscope.colour`, JSON; absent in models made before it existed: [`ColourNormalization::None`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum ColourNormalization {
    /// The picture is used as it is.
    #[default]
    None,
    /// Each channel is scaled so that the picture's background becomes `white` (R, G, B in
    /// 0..255): the training set's median background colour.
    BackgroundWhite {
        /// The background colour of the training pictures.
        white: [f32; 3],
    },
}

impl ColourNormalization {
    /// The metadata value (`{"method":"none"}` or `{"method":"background_white","white":[…]}`).
    pub fn to_metadata(&self) -> String {
        serde_json::to_string(self).expect("a colour normalization serializes")
    }

    /// Reads the metadata value back.
    pub fn from_metadata(s: &str) -> Result<Self, String> {
        let c: ColourNormalization = serde_json::from_str(s).map_err(|e| e.to_string())?;
        if let ColourNormalization::BackgroundWhite { white } = c
            && white
                .iter()
                .any(|w| !w.is_finite() || *w <= 0.0 || *w > 255.0)
        {
            return Err(format!("white {white:?} must lie in (0, 255]"));
        }
        Ok(c)
    }

    /// Normalizes interleaved RGB bytes in place.
    pub fn apply(&self, rgb: &mut [u8]) {
        let ColourNormalization::BackgroundWhite { white } = *self else {
            return;
        };
        let gains = match background(rgb) {
            Some(bg) => gains(bg, white),
            None => return,
        };
        if gains == [1.0; 3] {
            return;
        }
        let lut: [[u8; 256]; 3] = std::array::from_fn(|c| {
            std::array::from_fn(|v| (v as f32 * gains[c]).round().clamp(0.0, 255.0) as u8)
        });
        for px in rgb.chunks_exact_mut(3) {
            px[0] = lut[0][px[0] as usize];
            px[1] = lut[1][px[1] as usize];
            px[2] = lut[2][px[2] as usize];
        }
    }
}

/// The per-channel gains that move `background` to `white`, clamped to [`MAX_GAIN`].
fn gains(background: [f32; 3], white: [f32; 3]) -> [f32; 3] {
    std::array::from_fn(|c| (white[c] / background[c].max(1.0)).clamp(1.0 / MAX_GAIN, MAX_GAIN))
}

/// Luma in 0..255, the integer form of BT.601 weights.
fn luma(px: &[u8]) -> u8 {
    ((77 * px[0] as u32 + 150 * px[1] as u32 + 29 * px[2] as u32) >> 8) as u8
}

/// The mean colour of the brightest [`BACKGROUND_FRACTION`] of the pixels, or `None` for an
/// empty picture or one whose brightest pixels are too dark to be background.
pub fn background(rgb: &[u8]) -> Option<[f32; 3]> {
    let n = rgb.len() / 3;
    if n == 0 {
        return None;
    }
    let mut histogram = [0usize; 256];
    for px in rgb.chunks_exact(3) {
        histogram[luma(px) as usize] += 1;
    }
    // The luma threshold above which (inclusive) at least the brightest tenth lies.
    let wanted = ((n as f64 * BACKGROUND_FRACTION).ceil() as usize).max(1);
    let mut seen = 0;
    let mut threshold = 255u8;
    for v in (0..=255u8).rev() {
        seen += histogram[v as usize];
        threshold = v;
        if seen >= wanted {
            break;
        }
    }
    let (mut sum, mut count) = ([0u64; 3], 0u64);
    for px in rgb.chunks_exact(3) {
        if luma(px) >= threshold {
            for c in 0..3 {
                sum[c] += px[c] as u64;
            }
            count += 1;
        }
    }
    let mean: [f32; 3] = std::array::from_fn(|c| sum[c] as f32 / count as f32);
    let l = 0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2];
    (l >= MIN_BACKGROUND_LUMA).then_some(mean)
}

/// The median background colour of a set of pictures (interleaved RGB each): the `white` of a
/// training set. `None` when no picture has a usable background.
pub fn median_background<'a>(pictures: impl IntoIterator<Item = &'a [u8]>) -> Option<[f32; 3]> {
    let mut channels: [Vec<f32>; 3] = Default::default();
    for p in pictures {
        if let Some(bg) = background(p) {
            for c in 0..3 {
                channels[c].push(bg[c]);
            }
        }
    }
    if channels[0].is_empty() {
        return None;
    }
    Some(std::array::from_fn(|c| {
        let v = &mut channels[c];
        v.sort_by(f32::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smear-like picture: a background colour with darker "cells" covering 60 % of it.
    fn smear(background: [u8; 3], cell: [u8; 3]) -> Vec<u8> {
        (0..100)
            .flat_map(|i| if i % 5 < 3 { cell } else { background })
            .collect()
    }

    #[test]
    fn a_lamp_cast_is_removed() {
        let white = [250.0, 254.0, 252.0];
        let norm = ColourNormalization::BackgroundWhite { white };
        let reference = smear([250, 254, 252], [150, 100, 200]);
        // A warmer, dimmer lamp: red up, blue down, everything 10 % darker.
        let cast = |v: u8, g: f32| (v as f32 * g).round() as u8;
        let mut warm: Vec<u8> = reference
            .chunks_exact(3)
            .flat_map(|p| [cast(p[0], 0.99), cast(p[1], 0.9), cast(p[2], 0.75)])
            .collect();
        norm.apply(&mut warm);
        for (a, b) in warm.iter().zip(&reference) {
            assert!((*a as i32 - *b as i32).abs() <= 2, "{warm:?}");
        }
    }

    #[test]
    fn the_training_background_is_left_alone_and_none_does_nothing() {
        let norm = ColourNormalization::BackgroundWhite {
            white: [250.0, 254.0, 252.0],
        };
        let mut same = smear([250, 254, 252], [150, 100, 200]);
        let before = same.clone();
        norm.apply(&mut same);
        assert_eq!(same, before);
        let mut other = smear([200, 180, 150], [10, 20, 30]);
        let before = other.clone();
        ColourNormalization::None.apply(&mut other);
        assert_eq!(other, before);
    }

    #[test]
    fn gains_are_bounded_and_dark_pictures_are_not_brightened() {
        let norm = ColourNormalization::BackgroundWhite {
            white: [250.0, 250.0, 250.0],
        };
        // Background 140: the gain 1.79 is clamped to 1.5.
        let mut dim = smear([140, 140, 140], [40, 40, 40]);
        norm.apply(&mut dim);
        assert_eq!(&dim[9..12], &[210, 210, 210]);
        // No pixel bright enough to be background: unchanged.
        let mut dark = smear([90, 90, 90], [20, 20, 20]);
        let before = dark.clone();
        norm.apply(&mut dark);
        assert_eq!(dark, before);
        assert_eq!(background(&[]), None);
    }

    #[test]
    fn metadata_round_trips_and_bad_values_are_refused() {
        let norm = ColourNormalization::BackgroundWhite {
            white: [250.5, 254.0, 252.25],
        };
        let text = norm.to_metadata();
        assert!(text.contains("background_white"), "{text}");
        assert_eq!(ColourNormalization::from_metadata(&text).unwrap(), norm);
        assert_eq!(
            ColourNormalization::from_metadata(r#"{"method":"none"}"#).unwrap(),
            ColourNormalization::None
        );
        assert!(
            ColourNormalization::from_metadata(r#"{"method":"background_white","white":[0,1,2]}"#)
                .is_err()
        );
        assert!(ColourNormalization::from_metadata(r#"{"method":"reinhard"}"#).is_err());
    }

    #[test]
    fn the_median_background_ignores_pictures_without_one() {
        let a = smear([250, 250, 250], [100, 100, 100]);
        let b = smear([240, 244, 248], [100, 100, 100]);
        let c = smear([230, 230, 230], [100, 100, 100]);
        let dark = smear([50, 50, 50], [10, 10, 10]);
        let m = median_background([&a[..], &b[..], &c[..], &dark[..]]).unwrap();
        assert_eq!(m, [240.0, 244.0, 248.0]);
        assert_eq!(median_background([&dark[..]]), None);
    }
}
