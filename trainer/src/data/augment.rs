//! Random augmentation of training pictures, applied before `edge`'s normalization.
//!
//! Geometry follows the seed paper's table (Keras `ImageDataGenerator`): flips, rotation ±30°,
//! width/height shift 25 %, zoom 30 %, shear 20 %, fill mode nearest (edge pixels repeat).
//! Colour follows it too (channel shift 10) and adds stain jitter — brightness, contrast,
//! saturation, hue and a per-channel gain (colour cast) — because the Taleqani classes differ in
//! colour cast (a model trained without the gain lost 28 points under a ±10 % per-channel
//! change: it had learned the cast, not the cells), and a corner erase
//! because many images carry a burned-in scale-bar label bottom-right: a model must learn the
//! cells, not these acquisition artefacts.
//!
//! Another microscope adds more (issue 19's measurements): the stain batch, so stains are
//! jittered in stain space (HED, Tellez et al. 2018: each of the haematoxylin, eosin and DAB
//! optical densities of Ruifrok & Johnston's deconvolution scaled by `1 ± hed` and shifted by
//! `± hed`; a Romanowsky smear is not H&E, but those three densities still span the colours a
//! stain can take); JPEG compression (a quarter of the pictures re-encoded at quality 25–95); a
//! camera with fewer pixels per cell (a quarter of the pictures shrunk by up to `low_resolution`
//! and enlarged back, what a declared-scale ×0.5 field looks like at the model's scale); and
//! another magnification (a fifth of the pictures enlarged by up to `magnify`). The colour
//! normalization of the model contract (`leukoscope_model::colour`) runs after all of them.
//! Every step can be switched off (magnitude 0).

use image::{Rgb, RgbImage};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

/// Augmentation settings; a magnitude of 0 (or `false`) switches a step off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Random horizontal flip (p = 0.5).
    pub hflip: bool,
    /// Random vertical flip (p = 0.5).
    pub vflip: bool,
    /// Rotation range in degrees (uniform in ±rotation).
    pub rotation: f32,
    /// Width and height shift as a fraction of the side (uniform in ±shift).
    pub shift: f32,
    /// Zoom range: each axis scaled by a factor uniform in [1 − zoom, 1 + zoom].
    pub zoom: f32,
    /// Shear intensity (shear factor uniform in ±shear).
    pub shear: f32,
    /// Channel shift in 0..255 units: one value uniform in ±shift added to every channel.
    pub channel_shift: f32,
    /// Brightness jitter: intensity multiplied by a factor in [1 − b, 1 + b].
    pub brightness: f32,
    /// Contrast jitter: distance from the mean grey scaled by a factor in [1 − c, 1 + c].
    pub contrast: f32,
    /// Saturation jitter: distance from each pixel's grey scaled by a factor in [1 − s, 1 + s].
    pub saturation: f32,
    /// Hue jitter in degrees (rotation of the chroma plane, uniform in ±hue).
    pub hue: f32,
    /// Colour-cast jitter: each channel multiplied by its own factor in [1 − g, 1 + g] (white
    /// balance and stain differ between microscopes, and the Taleqani classes differ in cast).
    /// Absent in runs made before it existed, which had none.
    #[serde(default)]
    pub channel_gain: f32,
    /// Probability of filling the bottom-right corner (where the scale-bar label sits, 27 % × 13 %
    /// of the picture) with the picture's median border colour.
    pub corner_erase: f32,
    /// Stain-space jitter: each HED optical density scaled by a factor in [1 − h, 1 + h] and
    /// shifted by a value in ±h. Absent (0) in runs made before it existed.
    #[serde(default)]
    pub hed: f32,
    /// Probability of re-encoding the picture as JPEG at a quality uniform in
    /// [`JPEG_QUALITY`]. Absent (0) in earlier runs.
    #[serde(default)]
    pub jpeg: f32,
    /// Largest factor by which [`LOW_RESOLUTION_P`] of the pictures are shrunk and enlarged back
    /// (1 or 0: off). Absent (0) in earlier runs.
    #[serde(default)]
    pub low_resolution: f32,
    /// Largest extra magnification (the same on both axes) applied to [`MAGNIFY_P`] of the
    /// pictures (1 or 0: off). Absent (0) in earlier runs.
    #[serde(default)]
    pub magnify: f32,
}

/// JPEG qualities drawn by the `jpeg` step.
pub const JPEG_QUALITY: std::ops::RangeInclusive<u8> = 25..=95;
/// Share of pictures the `low_resolution` step applies to.
pub const LOW_RESOLUTION_P: f32 = 0.25;
/// Share of pictures the `magnify` step applies to.
pub const MAGNIFY_P: f32 = 0.2;

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            hflip: true,
            vflip: true,
            rotation: 30.0,
            shift: 0.25,
            zoom: 0.3,
            shear: 0.2,
            channel_shift: 10.0,
            brightness: 0.15,
            contrast: 0.15,
            saturation: 0.15,
            hue: 8.0,
            channel_gain: 0.15,
            corner_erase: 0.5,
            hed: 0.05,
            jpeg: 0.25,
            low_resolution: 2.5,
            magnify: 2.0,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> Self {
        AugmentConfig {
            hflip: false,
            vflip: false,
            rotation: 0.0,
            shift: 0.0,
            zoom: 0.0,
            shear: 0.0,
            channel_shift: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            channel_gain: 0.0,
            corner_erase: 0.0,
            hed: 0.0,
            jpeg: 0.0,
            low_resolution: 0.0,
            magnify: 0.0,
        }
    }

    /// The default's acquisition steps only — lamp colour and white balance (gain, shift,
    /// brightness, contrast, saturation, hue), stain (HED) and JPEG — without geometry, scale,
    /// resolution or the corner erase: what another lamp, camera setting or stain batch does to
    /// a picture, not another magnification.
    pub fn photometric() -> Self {
        let d = AugmentConfig::default();
        AugmentConfig {
            channel_shift: d.channel_shift,
            brightness: d.brightness,
            contrast: d.contrast,
            saturation: d.saturation,
            hue: d.hue,
            channel_gain: d.channel_gain,
            hed: d.hed,
            jpeg: d.jpeg,
            ..AugmentConfig::none()
        }
    }

    /// Whether any step is on.
    pub fn is_active(&self) -> bool {
        *self != AugmentConfig::none()
    }

    fn geometric(&self) -> bool {
        self.hflip
            || self.vflip
            || self.rotation > 0.0
            || self.shift > 0.0
            || self.zoom > 0.0
            || self.shear > 0.0
            || self.magnify > 1.0
    }
}

fn sym(rng: &mut impl Rng, range: f32) -> f32 {
    if range > 0.0 {
        rng.random_range(-range..=range)
    } else {
        0.0
    }
}

/// Returns an augmented copy of `img` (same size); all randomness comes from `rng`.
pub fn augment(img: &RgbImage, cfg: &AugmentConfig, rng: &mut impl Rng) -> RgbImage {
    let mut out = if cfg.geometric() {
        affine(img, cfg, rng)
    } else {
        img.clone()
    };
    colour(&mut out, cfg, rng);
    if cfg.corner_erase > 0.0 && rng.random::<f32>() < cfg.corner_erase {
        erase_corner(&mut out);
    }
    // Each drawn only when on, so runs without them keep their random sequence.
    if cfg.hed > 0.0 {
        hed_jitter(&mut out, cfg.hed, rng);
    }
    if cfg.low_resolution > 1.0 && rng.random::<f32>() < LOW_RESOLUTION_P {
        let factor = rng.random_range(1.0..=cfg.low_resolution);
        out = low_resolution(&out, factor);
    }
    if cfg.jpeg > 0.0 && rng.random::<f32>() < cfg.jpeg {
        let quality = rng.random_range(JPEG_QUALITY);
        out = leukoscope_model::shift::jpeg_round_trip(&out, quality);
    }
    out
}

/// Ruifrok & Johnston's stain matrix: the optical density (OD) of one unit of haematoxylin,
/// eosin and DAB in R, G, B (rows), as in scikit-image's `rgb_from_hed`.
const RGB_FROM_HED: [[f32; 3]; 3] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]];

fn invert3(m: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [
            c(1, 1, 2, 2) / det,
            -c(0, 1, 2, 2) / det,
            c(0, 1, 1, 2) / det,
        ],
        [
            -c(1, 0, 2, 2) / det,
            c(0, 0, 2, 2) / det,
            -c(0, 0, 1, 2) / det,
        ],
        [
            c(1, 0, 2, 1) / det,
            -c(0, 0, 2, 1) / det,
            c(0, 0, 1, 1) / det,
        ],
    ]
}

/// Stain-space jitter: RGB → optical densities → stain amounts (HED), each stain scaled and
/// shifted, and back.
fn hed_jitter(img: &mut RgbImage, sigma: f32, rng: &mut impl Rng) {
    let alpha: [f32; 3] = std::array::from_fn(|_| 1.0 + sym(rng, sigma));
    let beta: [f32; 3] = std::array::from_fn(|_| sym(rng, sigma));
    let hed_from_rgb = invert3(RGB_FROM_HED);
    // OD of each 8-bit value: −ln((v + 1) / 256), so 255 (white) is 0.
    let od: [f32; 256] = std::array::from_fn(|v| -((v as f32 + 1.0) / 256.0).ln());
    for p in img.pixels_mut() {
        let rgb_od: [f32; 3] = std::array::from_fn(|c| od[p.0[c] as usize]);
        let stains: [f32; 3] = std::array::from_fn(|s| {
            let amount: f32 = (0..3).map(|c| rgb_od[c] * hed_from_rgb[c][s]).sum();
            amount * alpha[s] + beta[s]
        });
        p.0 = std::array::from_fn(|c| {
            let density: f32 = (0..3).map(|s| stains[s] * RGB_FROM_HED[s][c]).sum();
            (256.0 * (-density).exp() - 1.0).round().clamp(0.0, 255.0) as u8
        });
    }
}

/// The picture shrunk by `factor` (area filter) and enlarged back (bilinear): the detail a
/// camera with `factor` times fewer pixels per cell would give.
fn low_resolution(img: &RgbImage, factor: f32) -> RgbImage {
    use image::imageops::{FilterType, resize};
    let (w, h) = img.dimensions();
    let small_w = ((w as f32 / factor).round() as u32).max(1);
    let small_h = ((h as f32 / factor).round() as u32).max(1);
    let small = resize(img, small_w, small_h, FilterType::Triangle);
    resize(&small, w, h, FilterType::Triangle)
}

/// Rotation, shear, zoom, shift and flips as one affine map about the centre, sampled
/// bilinearly with edge pixels repeated outside the picture.
fn affine(img: &RgbImage, cfg: &AugmentConfig, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let theta = sym(rng, cfg.rotation).to_radians();
    let shear = sym(rng, cfg.shear);
    let mut zx = 1.0 + sym(rng, cfg.zoom);
    let mut zy = 1.0 + sym(rng, cfg.zoom);
    if cfg.magnify > 1.0 && rng.random::<f32>() < MAGNIFY_P {
        let m = rng.random_range(1.0..=cfg.magnify);
        zx *= m;
        zy *= m;
    }
    let tx = sym(rng, cfg.shift) * w;
    let ty = sym(rng, cfg.shift) * h;
    let fx = if cfg.hflip && rng.random::<bool>() {
        -1.0
    } else {
        1.0
    };
    let fy = if cfg.vflip && rng.random::<bool>() {
        -1.0
    } else {
        1.0
    };
    // Forward map: dst = c + t + R · Sh · Z · F · (src − c). We sample src for every dst pixel.
    let (s, c) = theta.sin_cos();
    let a = [
        [c * zx * fx, (c * shear - s) * zy * fy],
        [s * zx * fx, (s * shear + c) * zy * fy],
    ];
    let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
    let inv = [
        [a[1][1] / det, -a[0][1] / det],
        [-a[1][0] / det, a[0][0] / det],
    ];
    let (cx, cy) = ((w - 1.0) / 2.0, (h - 1.0) / 2.0);
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let dx = x as f32 - cx - tx;
        let dy = y as f32 - cy - ty;
        let sx = cx + inv[0][0] * dx + inv[0][1] * dy;
        let sy = cy + inv[1][0] * dx + inv[1][1] * dy;
        sample_bilinear_clamped(img, sx, sy)
    })
}

fn sample_bilinear_clamped(img: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let max_x = (img.width() - 1) as f32;
    let max_y = (img.height() - 1) as f32;
    let x = x.clamp(0.0, max_x);
    let y = y.clamp(0.0, max_y);
    let (x0, y0) = (x.floor(), y.floor());
    let (x1, y1) = ((x0 + 1.0).min(max_x), (y0 + 1.0).min(max_y));
    let (ax, ay) = (x - x0, y - y0);
    let p = |xx: f32, yy: f32| img.get_pixel(xx as u32, yy as u32).0;
    let (p00, p10, p01, p11) = (p(x0, y0), p(x1, y0), p(x0, y1), p(x1, y1));
    Rgb(std::array::from_fn(|k| {
        let top = p00[k] as f32 * (1.0 - ax) + p10[k] as f32 * ax;
        let bottom = p01[k] as f32 * (1.0 - ax) + p11[k] as f32 * ax;
        (top * (1.0 - ay) + bottom * ay).round() as u8
    }))
}

/// Channel shift and stain jitter (brightness, contrast, saturation, hue).
fn colour(img: &mut RgbImage, cfg: &AugmentConfig, rng: &mut impl Rng) {
    let shift = sym(rng, cfg.channel_shift);
    let brightness = 1.0 + sym(rng, cfg.brightness);
    let contrast = 1.0 + sym(rng, cfg.contrast);
    let saturation = 1.0 + sym(rng, cfg.saturation);
    let hue = sym(rng, cfg.hue).to_radians();
    // Drawn only when on, so runs without it keep their random sequence.
    let gains: [f32; 3] = if cfg.channel_gain > 0.0 {
        std::array::from_fn(|_| 1.0 + sym(rng, cfg.channel_gain))
    } else {
        [1.0; 3]
    };
    if shift == 0.0
        && brightness == 1.0
        && contrast == 1.0
        && saturation == 1.0
        && hue == 0.0
        && gains == [1.0; 3]
    {
        return;
    }
    let grey = |p: [f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let n = (img.width() * img.height()) as f32;
    let mean_grey = img
        .pixels()
        .map(|p| grey(std::array::from_fn(|k| f32::from(p.0[k]) * gains[k])) * brightness)
        .sum::<f32>()
        / n;
    let (hs, hc) = hue.sin_cos();
    for p in img.pixels_mut() {
        let mut v: [f32; 3] = std::array::from_fn(|k| f32::from(p.0[k]) * brightness * gains[k]);
        // Hue: rotate the chroma (I, Q) of YIQ around the luma axis.
        if hue != 0.0 {
            let yy = grey(v);
            let i = 0.596 * v[0] - 0.274 * v[1] - 0.322 * v[2];
            let q = 0.211 * v[0] - 0.523 * v[1] + 0.312 * v[2];
            let (i, q) = (i * hc - q * hs, i * hs + q * hc);
            v = [
                yy + 0.956 * i + 0.621 * q,
                yy - 0.272 * i - 0.647 * q,
                yy - 1.106 * i + 1.703 * q,
            ];
        }
        let g = grey(v);
        for c in &mut v {
            *c = g + (*c - g) * saturation;
            *c = mean_grey + (*c - mean_grey) * contrast + shift;
        }
        p.0 = v.map(|c| c.round().clamp(0.0, 255.0) as u8);
    }
}

/// Fills the bottom-right label area with the median colour of the picture's border.
fn erase_corner(img: &mut RgbImage) {
    let (w, h) = img.dimensions();
    let mut border: Vec<[u8; 3]> = (0..w)
        .flat_map(|x| [img.get_pixel(x, 0).0, img.get_pixel(x, h - 1).0])
        .chain((0..h).flat_map(|y| [img.get_pixel(0, y).0, img.get_pixel(w - 1, y).0]))
        .collect();
    border.sort_by_key(|p| p.iter().map(|&c| c as u32).sum::<u32>());
    let fill = Rgb(border[border.len() / 2]);
    let (ew, eh) = ((w * 60).div_ceil(224), (h * 30).div_ceil(224));
    for y in h.saturating_sub(eh)..h {
        for x in w.saturating_sub(ew)..w {
            img.put_pixel(x, y, fill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(32, 24, |x, y| Rgb([(x * 8) as u8, (y * 10) as u8, 128]))
    }

    #[test]
    fn photometric_changes_colour_not_geometry_or_scale() {
        let p = AugmentConfig::photometric();
        assert!(!p.geometric() && p.low_resolution == 0.0 && p.corner_erase == 0.0);
        assert!(p.channel_gain > 0.0 && p.hed > 0.0 && p.jpeg > 0.0 && p.hue > 0.0);
    }

    #[test]
    fn augmentation_keeps_the_shape_and_is_deterministic_per_seed() {
        let img = gradient();
        let cfg = AugmentConfig::default();
        let a = augment(&img, &cfg, &mut StdRng::seed_from_u64(5));
        let b = augment(&img, &cfg, &mut StdRng::seed_from_u64(5));
        let c = augment(&img, &cfg, &mut StdRng::seed_from_u64(6));
        assert_eq!(a.dimensions(), img.dimensions());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, img);
    }

    #[test]
    fn everything_off_is_the_identity() {
        let img = gradient();
        let out = augment(&img, &AugmentConfig::none(), &mut StdRng::seed_from_u64(1));
        assert_eq!(out, img);
        assert!(!AugmentConfig::none().is_active());
    }

    #[test]
    fn channel_gain_changes_the_colour_cast_within_its_range() {
        let img = RgbImage::from_pixel(8, 8, Rgb([100, 100, 100]));
        let cfg = AugmentConfig {
            channel_gain: 0.15,
            ..AugmentConfig::none()
        };
        let mut casts = 0;
        for seed in 0..20 {
            let out = augment(&img, &cfg, &mut StdRng::seed_from_u64(seed));
            let p = out.get_pixel(3, 3).0;
            // Every channel within 100 × [0.85, 1.15], one value for the whole picture.
            assert!(p.iter().all(|&c| (85..=115).contains(&c)), "{p:?}");
            assert!(out.pixels().all(|q| q.0 == p));
            casts += usize::from(p[0] != p[1] || p[1] != p[2]);
        }
        assert!(casts >= 18, "the channels moved together: no colour cast");
    }

    #[test]
    fn a_flip_mirrors_the_picture_exactly() {
        let img = gradient();
        let cfg = AugmentConfig {
            hflip: true,
            ..AugmentConfig::none()
        };
        let mut flipped = 0;
        for seed in 0..16 {
            let out = augment(&img, &cfg, &mut StdRng::seed_from_u64(seed));
            if out != img {
                assert_eq!(out, image::imageops::flip_horizontal(&img));
                flipped += 1;
            }
        }
        assert!((3..=13).contains(&flipped), "flipped {flipped} of 16");
    }

    #[test]
    fn rotation_fills_with_edge_pixels_not_black() {
        let img = RgbImage::from_pixel(20, 20, Rgb([200, 150, 100]));
        let cfg = AugmentConfig {
            rotation: 45.0,
            shift: 0.25,
            ..AugmentConfig::none()
        };
        let out = augment(&img, &cfg, &mut StdRng::seed_from_u64(3));
        assert!(out.pixels().all(|p| p.0 == [200, 150, 100]));
    }

    #[test]
    fn hed_jitter_keeps_white_white_and_moves_stained_pixels_within_range() {
        let mut img = RgbImage::from_fn(16, 16, |x, _| {
            if x < 8 {
                Rgb([255, 255, 255])
            } else {
                Rgb([120, 60, 160])
            }
        });
        let original = img.clone();
        // Scale only (no shift): white (zero density) stays white.
        let alpha_only = |img: &mut RgbImage, seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            hed_jitter(img, 0.0, &mut rng);
        };
        alpha_only(&mut img, 1);
        let same = img.pixels().zip(original.pixels()).all(|(a, b)| {
            a.0.iter()
                .zip(b.0)
                .all(|(x, y)| (*x as i32 - y as i32).abs() <= 1)
        });
        assert!(same, "sigma 0 must round-trip through stain space");
        let mut moved = 0;
        for seed in 0..10 {
            let mut j = original.clone();
            hed_jitter(&mut j, 0.1, &mut StdRng::seed_from_u64(seed));
            let stained = j.get_pixel(12, 3).0;
            moved += usize::from(stained != [120, 60, 160]);
            // Shifts of ±0.1 OD move white by at most 1 − e^(−0.1 · 1.6) ≈ 15 %.
            assert!(
                j.get_pixel(2, 2).0.iter().all(|&c| c >= 210),
                "{:?}",
                j.get_pixel(2, 2)
            );
            assert!(
                stained
                    .iter()
                    .zip([120u8, 60, 160])
                    .all(|(a, b)| (*a as i32 - b as i32).abs() < 60)
            );
        }
        assert!(moved >= 9);
    }

    #[test]
    fn low_resolution_and_jpeg_keep_the_size_and_lose_detail() {
        let img = RgbImage::from_fn(64, 64, |x, y| {
            if (x + y) % 2 == 0 {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            }
        });
        let small = low_resolution(&img, 2.0);
        assert_eq!(small.dimensions(), (64, 64));
        let mid = small.get_pixel(30, 30).0[0];
        assert!(
            (64..=192).contains(&mid),
            "a checkerboard shrunk 2× is grey, got {mid}"
        );
        let j = leukoscope_model::shift::jpeg_round_trip(&img, 25);
        assert_eq!(j.dimensions(), (64, 64));
        assert_ne!(j, img);
    }

    #[test]
    fn magnify_enlarges_about_the_centre() {
        // A centred 8 px square; enlarged by m ∈ [1, 3], its area grows, never shrinks.
        let img = RgbImage::from_fn(64, 64, |x, y| {
            if (28..36).contains(&x) && (28..36).contains(&y) {
                Rgb([0, 0, 0])
            } else {
                Rgb([255, 255, 255])
            }
        });
        let cfg = AugmentConfig {
            magnify: 3.0,
            ..AugmentConfig::none()
        };
        let dark = |i: &RgbImage| i.pixels().filter(|p| p.0[0] < 128).count();
        let mut grown = 0;
        for seed in 0..40 {
            let out = augment(&img, &cfg, &mut StdRng::seed_from_u64(seed));
            assert!(dark(&out) >= 60, "{}", dark(&out));
            grown += usize::from(dark(&out) > 80);
        }
        // MAGNIFY_P = 0.2 of 40 pictures: about 8.
        assert!((2..=16).contains(&grown), "{grown}");
    }

    #[test]
    fn corner_erase_covers_the_label_area() {
        let mut img = RgbImage::from_pixel(224, 224, Rgb([180, 160, 200]));
        for y in 200..220 {
            for x in 170..220 {
                img.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
        erase_corner(&mut img);
        assert!(img.pixels().all(|p| p.0 == [180, 160, 200]));
    }
}
