//! The quality gate: is a frame sharp, well exposed and showing stained cells, before the model
//! sees it? A frame that fails is not classified; it yields `retake` with a [`RetakeReason`].
//!
//! # What is measured
//!
//! Every figure is computed on the *analysis picture*: the frame centre-cropped to a square and
//! resized to [`QualityConfig::analysis_size`] (224 px by default), exactly the framing the model
//! gets by default (`leukoscope_model::preprocess`). Fixing that size makes the figures independent of the
//! camera resolution, and it measures blur at the scale the classifier works at: a 1280×720 frame
//! whose blur disappears once the frame is shrunk to the model input does not hurt the model and
//! is not rejected, while blur the model would see is. The dataset pictures are 224×224, so at
//! the default size they are analysed at their native resolution and the thresholds below carry
//! over to camera frames unchanged.
//!
//! With the camera's pixel size declared (`[source] um_per_px`), `edge run` gives the gate each
//! model-scale field instead (the frame resampled to the model's pixel size,
//! `leukoscope_model::scale::fields`): the figures are then measured at the scale the model
//! sees, whatever the objective. Without it, a sharp field seen through a stronger objective at
//! the same camera resolution has wider, softer edges per pixel and fails `focus`
//! (`edge/tests/scale.rs` shows both).
//!
//! - **Focus**: variance of the 4-neighbour Laplacian of the luma (`0.299 R + 0.587 G +
//!   0.114 B`, 0–255) over the analysis picture. Blur removes high frequencies, so the variance
//!   collapses.
//! - **Exposure**: mean luma, its 99.9th percentile (`p999`: an under-exposed frame has no bright
//!   background at all) and the *clipped* fraction: pixels whose three channels are all at or
//!   above 250 (blown-out white) or whose luma is at or below 5 (black).
//! - **Empty field**: the *stained* fraction, pixels of nucleus colour. A Wright/Giemsa/May-
//!   Grünwald stained nucleus is a saturated blue-violet to magenta; red cells are pale
//!   grey-lavender or pink and the background is near white. A pixel is stained when its chroma
//!   `max(R,G,B) − min(R,G,B)` is at least [`QualityConfig::stain_min_chroma`] and its hue lies
//!   in [`QualityConfig::stain_hue_min`]..=[`QualityConfig::stain_hue_max`] degrees (blue 240,
//!   violet ≈ 270, magenta 300; red cells' pink sits at ≈ 330–360 and is excluded when it is
//!   saturated).
//!
//! The checks run in the order exposure → empty → focus, and the first that fails is the reason:
//! a black frame is an exposure problem even though it is also "blurred" and "empty", and an empty
//! field of clean background is "empty" rather than "out of focus".
//!
//! # Defaults and how they were derived
//!
//! `cargo run --release -p edge --example quality_calibration` measures the figures on every
//! picture of `all-taleqani` (2,733 smear fields, 224×224 JPEG) and on the same pictures blurred
//! with a Gaussian of σ = 3 px, prints the distributions and the rates of a configuration, and
//! with `--montage FILE` shows the pictures nearest the thresholds beside their stain masks. The
//! figures on that data (min / 0.5th percentile / median / max):
//!
//! | figure | real pictures | blurred σ = 3 |
//! |---|---|---|
//! | focus | 51.9 / 83.6 / 302 / 1880 | 1.67 / 2.00 / 3.62 / 6.50 |
//! | mean | 186 / 192 / 217 / 245 | same |
//! | p999 | 249 / 251 / 255 / 255 | 230 / 249 / 253 / 255 |
//! | clipped fraction | 0 / 0 / 0.027 / 0.54 | 0 / 0 / 0.007 / 0.44 |
//! | stained fraction | 0.0135 / 0.0166 / 0.098 / 0.386 | 0.0101 / 0.0156 / 0.095 / 0.377 |
//!
//! - `min_focus` 20: between the blurred pictures' highest value (6.5; 10.4 when the blurred
//!   picture is also JPEG-encoded at quality 85 as a camera would) and the real pictures' lowest
//!   (51.9), a factor ≈ 2.6 from the sharp side. Milder blur passes: σ = 2 px is still all
//!   rejected, σ = 1.5 px (re-encoded) half, σ = 1 px 15 %.
//! - `min_stained_fraction` 0.005 (≈ 250 px of 224²): below the lowest real picture (0.0135) by
//!   a factor 2.7; a field of red cells only gives ≈ 0. The stain rule (chroma ≥ 35, hue
//!   235°–345°) was chosen on the montage: it marks violet nuclei and the pale magenta blasts of
//!   the `Pro` pictures, and leaves out red cells, which are pale lavender (chroma < 35) or, in
//!   the bluish pictures, blue-grey (hue 210°–230°).
//! - Exposure (`min_mean` 70, `max_mean` 250, `min_p999` 120, `max_clipped_fraction` 0.75): well
//!   outside what the real pictures cover, so they catch a lamp that is off, far too dim or a
//!   blown-out frame, not the normal variation between smears.
//!
//! With these defaults 100.00 % of the real pictures pass (goal ≥ 99 %) and 100.00 % of the
//! blurred ones are rejected, all for focus (goal ≥ 95 %).
//!
//! The gate is meant for whole smear fields like `all-taleqani`'s. The C-NMC 2019 pictures (one
//! segmented cell on black, 450×450) are not camera frames: their mean luma is 3–15 and 75–93 %
//! of their pixels are black, so the exposure check rejects every one of them by design; they are
//! not used for calibration.
//!
//! # Cost
//!
//! [`QualityGate::assess`] keeps its resizer and buffers between frames and allocates nothing
//! per frame. Median time per frame, one thread, on the x86-64 development machine
//! (`quality_calibration --bench`): 0.39 ms at 640×480, 0.45 ms at 1280×720, 0.6 ms at
//! 1920×1080; the resize of the centre crop dominates.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use leukoscope_model::seeded::SplitMix64;
use serde::{Deserialize, Serialize};

/// Thresholds of the gate (the `[quality]` table of the device configuration). Every field has a
/// default, so a partial table only overrides what it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Side of the square analysis picture, in pixels (the centre crop is resized to it). The
    /// focus threshold depends on it: change both together.
    pub analysis_size: u32,
    /// Minimum variance of the Laplacian of the luma: below it the frame is out of focus.
    pub min_focus: f32,
    /// Minimum mean luma (0–255): below it the frame is under-exposed.
    pub min_mean: f32,
    /// Maximum mean luma (0–255): above it the frame is over-exposed.
    pub max_mean: f32,
    /// Minimum 99.9th percentile of the luma: below it nothing in the frame is bright, i.e. the
    /// lamp is off or far too dim.
    pub min_p999: f32,
    /// Maximum fraction of clipped pixels (blown-out white or black).
    pub max_clipped_fraction: f32,
    /// Minimum fraction of stained-nucleus pixels: below it the field is empty.
    pub min_stained_fraction: f32,
    /// Minimum chroma (`max − min` of R, G, B) of a stained pixel.
    pub stain_min_chroma: u8,
    /// Lowest hue (degrees) of a stained pixel.
    pub stain_hue_min: f32,
    /// Highest hue (degrees) of a stained pixel.
    pub stain_hue_max: f32,
}

impl Default for QualityConfig {
    /// The thresholds derived from `all-taleqani` (see the module documentation).
    fn default() -> Self {
        QualityConfig {
            analysis_size: 224,
            min_focus: 20.0,
            min_mean: 70.0,
            max_mean: 250.0,
            min_p999: 120.0,
            max_clipped_fraction: 0.75,
            min_stained_fraction: 0.005,
            stain_min_chroma: 35,
            stain_hue_min: 235.0,
            stain_hue_max: 345.0,
        }
    }
}

impl QualityConfig {
    /// Whether a pixel has stained-nucleus colour: chroma at least `stain_min_chroma` and hue in
    /// `stain_hue_min..=stain_hue_max`.
    pub fn is_stained(&self, r: u8, g: u8, b: u8) -> bool {
        let max = r.max(g).max(b);
        let chroma = max - r.min(g).min(b);
        chroma >= self.stain_min_chroma.max(1) && {
            let h = hue(r, g, b, max, chroma);
            h >= self.stain_hue_min && h <= self.stain_hue_max
        }
    }
}

/// The figures measured on one frame (recorded with every frame, passed or not).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QualityFigures {
    /// Variance of the Laplacian of the luma on the analysis picture.
    pub focus: f32,
    /// Mean luma, 0–255.
    pub mean: f32,
    /// 99.9th percentile of the luma, 0–255.
    pub p999: f32,
    /// Fraction of clipped pixels (white in all channels or black), 0–1.
    pub clipped_fraction: f32,
    /// Fraction of stained-nucleus pixels, 0–1.
    pub stained_fraction: f32,
}

/// Why a frame must be taken again: the serial line's `RETAKE reason=` vocabulary (`focus`,
/// `exposure`, `empty`), one type from the gate to the wire.
pub use hardware::RetakeReason;

/// The gate, with its buffers: make one and call [`QualityGate::assess`] on every frame.
pub struct QualityGate {
    cfg: QualityConfig,
    resizer: Resizer,
    analysis: Image<'static>,
    luma: Vec<u8>,
}

impl QualityGate {
    /// A gate with these thresholds. An `analysis_size` below 8 is raised to 8.
    pub fn new(cfg: QualityConfig) -> Self {
        let side = cfg.analysis_size.max(8);
        let cfg = QualityConfig {
            analysis_size: side,
            ..cfg
        };
        QualityGate {
            resizer: Resizer::new(),
            analysis: Image::new(side, side, PixelType::U8x3),
            luma: vec![0; side as usize * side as usize],
            cfg,
        }
    }

    /// The thresholds in use.
    pub fn config(&self) -> &QualityConfig {
        &self.cfg
    }

    /// Measures a frame and says whether it must be retaken (`None`: it may be classified).
    /// An empty (zero-sized) frame is an exposure failure with all figures zero.
    pub fn assess(&mut self, img: &RgbImage) -> (QualityFigures, Option<RetakeReason>) {
        let figures = self.measure(img);
        (figures, self.judge(&figures))
    }

    /// The verdict for figures measured earlier (the order of the checks: exposure, empty,
    /// focus).
    pub fn judge(&self, f: &QualityFigures) -> Option<RetakeReason> {
        let c = &self.cfg;
        // Written so that NaN figures fail.
        let exposure_ok = f.mean >= c.min_mean
            && f.mean <= c.max_mean
            && f.p999 >= c.min_p999
            && f.clipped_fraction <= c.max_clipped_fraction;
        if !exposure_ok {
            Some(RetakeReason::Exposure)
        } else if !at_least(f.stained_fraction, c.min_stained_fraction) {
            Some(RetakeReason::Empty)
        } else if !at_least(f.focus, c.min_focus) {
            Some(RetakeReason::Focus)
        } else {
            None
        }
    }

    /// The figures alone.
    pub fn measure(&mut self, img: &RgbImage) -> QualityFigures {
        if img.width() == 0 || img.height() == 0 {
            return QualityFigures {
                focus: 0.0,
                mean: 0.0,
                p999: 0.0,
                clipped_fraction: 0.0,
                stained_fraction: 0.0,
            };
        }
        let side = self.cfg.analysis_size;
        let pixels: &[u8] = if img.width() == side && img.height() == side {
            img.as_raw()
        } else {
            let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
                .expect("an RgbImage buffer holds width × height × 3 bytes");
            let options = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
                .fit_into_destination(Some((0.5, 0.5)));
            self.resizer
                .resize(&src, &mut self.analysis, &options)
                .expect("source and destination are both U8x3 with non-zero sides");
            self.analysis.buffer()
        };
        measure_pixels(pixels, side as usize, &self.cfg, &mut self.luma)
    }
}

/// Figures of an interleaved RGB square of `side × side` pixels; `luma` is scratch space of
/// `side²` bytes.
fn measure_pixels(rgb: &[u8], side: usize, cfg: &QualityConfig, luma: &mut [u8]) -> QualityFigures {
    let n = side * side;
    let mut hist = [0u32; 256];
    let mut clipped = 0usize;
    let mut stained = 0usize;
    for (px, y) in rgb.chunks_exact(3).zip(luma.iter_mut()) {
        let (r, g, b) = (px[0], px[1], px[2]);
        // BT.601 luma with weights summing to 256.
        let l = ((77 * r as u32 + 150 * g as u32 + 29 * b as u32 + 128) >> 8) as u8;
        *y = l;
        hist[l as usize] += 1;
        if (r >= 250 && g >= 250 && b >= 250) || l <= 5 {
            clipped += 1;
        }
        stained += usize::from(cfg.is_stained(px[0], px[1], px[2]));
    }
    let sum: u64 = hist
        .iter()
        .enumerate()
        .map(|(v, &c)| v as u64 * c as u64)
        .sum();
    let mean = sum as f32 / n as f32;
    // The smallest value with at least 99.9 % of the pixels at or below it.
    let target = (n as f64 * 0.999).ceil() as u64;
    let mut acc = 0u64;
    let mut p999 = 255u32;
    for (v, &c) in hist.iter().enumerate() {
        acc += c as u64;
        if acc >= target {
            p999 = v as u32;
            break;
        }
    }
    QualityFigures {
        focus: laplacian_variance(luma, side),
        mean,
        p999: p999 as f32,
        clipped_fraction: clipped as f32 / n as f32,
        stained_fraction: stained as f32 / n as f32,
    }
}

/// `value >= min`, false when either is NaN.
fn at_least(value: f32, min: f32) -> bool {
    value >= min
}

/// Hue in degrees (0–360) of a pixel with non-zero chroma.
fn hue(r: u8, g: u8, b: u8, max: u8, chroma: u8) -> f32 {
    let (r, g, b, c) = (r as f32, g as f32, b as f32, chroma as f32);
    let h = if max == r as u8 {
        (g - b) / c
    } else if max == g as u8 {
        (b - r) / c + 2.0
    } else {
        (r - g) / c + 4.0
    };
    (h * 60.0).rem_euclid(360.0)
}

/// Variance of the 4-neighbour Laplacian over the interior of a `side × side` luma picture.
fn laplacian_variance(luma: &[u8], side: usize) -> f32 {
    if side < 3 {
        return 0.0;
    }
    let mut sum = 0i64;
    let mut sum_sq = 0i64;
    for y in 1..side - 1 {
        let up = &luma[(y - 1) * side..y * side];
        let row = &luma[y * side..(y + 1) * side];
        let down = &luma[(y + 1) * side..(y + 2) * side];
        for x in 1..side - 1 {
            let l = 4 * row[x] as i32
                - row[x - 1] as i32
                - row[x + 1] as i32
                - up[x] as i32
                - down[x] as i32;
            sum += l as i64;
            sum_sq += (l * l) as i64;
        }
    }
    let m = ((side - 2) * (side - 2)) as f64;
    let mean = sum as f64 / m;
    (sum_sq as f64 / m - mean * mean) as f32
}

/// A seeded synthetic smear field for tests and benchmarks: a pale background with sensor noise,
/// lavender red cells and a few dark violet nuclei, with sharp edges. The same seed always gives
/// the same picture. It resembles a real field closely enough to pass the default gate.
pub fn synthetic_smear(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = SplitMix64::new(seed);
    let scale = width.min(height).max(1) as f32;
    // Red cells: pale discs with a lighter centre; nuclei: clusters of overlapping dark discs.
    let rbcs: Vec<(f32, f32, f32)> = (0..(width as u64 * height as u64 / 2500).max(6))
        .map(|_| {
            (
                rng.unit() * width as f32,
                rng.unit() * height as f32,
                scale * (0.035 + 0.01 * rng.unit()),
            )
        })
        .collect();
    let mut nuclei = Vec::new();
    for _ in 0..(3 + rng.below(4)) {
        let (cx, cy) = (rng.unit() * width as f32, rng.unit() * height as f32);
        for _ in 0..3 {
            nuclei.push((
                cx + (rng.unit() - 0.5) * scale * 0.05,
                cy + (rng.unit() - 0.5) * scale * 0.05,
                scale * (0.03 + 0.02 * rng.unit()),
            ));
        }
    }
    let inside = |discs: &[(f32, f32, f32)], x: f32, y: f32| {
        discs.iter().find_map(|&(cx, cy, r)| {
            let d2 = (x - cx).powi(2) + (y - cy).powi(2);
            (d2 <= r * r).then(|| d2.sqrt() / r)
        })
    };
    let mut img = RgbImage::new(width, height);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32, y as f32);
        let base: [f32; 3] = if inside(&nuclei, fx, fy).is_some() {
            [105.0, 55.0, 165.0]
        } else if let Some(d) = inside(&rbcs, fx, fy) {
            let pale = if d < 0.45 { 20.0 } else { 0.0 };
            [190.0 + pale, 186.0 + pale, 210.0 + pale]
        } else {
            [236.0, 232.0, 238.0]
        };
        let noise = (rng.unit() - 0.5) * 8.0;
        *px = image::Rgb(base.map(|c| (c + noise).clamp(0.0, 255.0) as u8));
    }
    img
}
