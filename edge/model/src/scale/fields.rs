//! Model-scale fields: a frame of a declared pixel size resampled to the model's pixel size and
//! cut into model-input fields that cover it.
//!
//! # The grid
//!
//! A `W×H` frame of `camera` µm/px is resampled by `f = camera / model` (the model's
//! `leukoscope.um_per_px`) to `W' = round(W·f)` × `H' = round(H·f)` pixels — area-averaging
//! when it shrinks (a box filter over each output pixel's footprint, `fast_image_resize`), bilinear
//! when it grows — so a red cell spans as many pixels as in the training pictures. The resampled
//! frame is cut into fields of the model's input size `s_w × s_h`:
//!
//! - along each axis of length `L` (`W'` or `H'`) with field side `s`: `n = ceil((L − m) / s)`
//!   fields, at least one, where the slack `m = round(s / 50)` (2 % of a field, 4 px at 224) lets
//!   a frame a few pixels longer than whole fields lose at most `m / 2` pixels at each edge
//!   instead of needing a nearly redundant extra field;
//! - `n > 1`: the fields are evenly spaced from edge to edge, field `k` starting at
//!   `round(k · (L − s) / (n − 1))`: the first touches the first edge, the last the other,
//!   neighbours overlap by `(n·s − L) / (n − 1)` pixels, so no border is lost;
//! - `n = 1`: one field centred on the frame, starting at `(L − s) / 2` (rounded down). A frame
//!   **smaller** than a field along that axis is **padded** to the field with its own
//!   background colour (the mean colour of its brightest quarter of pixels by luma: a smear's
//!   background), never enlarged — enlarging it would undo the rescaling. The padding is empty
//!   background to the quality gate and the model, as in a sparse part of a smear.
//!
//! Fields are numbered row by row from the top left (`tile` in the audit database, `tile=` on
//! the serial line). A 1280×720 camera frame at 0.2 µm/px for a model at 0.35 µm/px is
//! resampled to 731×411 and cut into 4×2 fields of 224 px.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use super::{ScaleError, check_um_per_px};

/// The most fields one frame may be cut into: each is an inference (10–80 ms on a Raspberry
/// Pi). The same limit as the former `tile` setting's.
pub const MAX_FIELDS_PER_FRAME: u64 = 64;

/// How frames of a declared pixel size become model-scale fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleFraming {
    /// The camera's pixel size, µm/px.
    pub camera_um_per_px: f64,
    /// The model's pixel size, µm/px (its contract's; the geometric mean of width and height
    /// when its pixels are not square).
    pub model_um_per_px: f64,
    /// The model's pixel width over height (1: square).
    pub model_pixel_aspect: f64,
    /// Field width: the model's input width.
    pub field_width: u32,
    /// Field height: the model's input height.
    pub field_height: u32,
}

/// Where the fields of one frame lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldGrid {
    /// The resampled frame's size.
    pub resampled: (u32, u32),
    /// Left edges of the field columns in the resampled frame (negative: padded).
    pub xs: Vec<i64>,
    /// Top edges of the field rows.
    pub ys: Vec<i64>,
}

impl FieldGrid {
    /// The number of fields.
    pub fn len(&self) -> usize {
        self.xs.len() * self.ys.len()
    }

    /// Whether there are no fields (an empty frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One model-scale field of a frame.
#[derive(Debug, Clone)]
pub struct ScaledField {
    /// Its number, row by row from the top left.
    pub index: u32,
    /// Left edge in the resampled frame (negative when padded).
    pub x: i64,
    /// Top edge in the resampled frame.
    pub y: i64,
    /// Its pixels, the model's input size.
    pub image: RgbImage,
}

impl ScaleFraming {
    /// Framing for a camera of `camera_um_per_px` and a model of `model_um_per_px` whose input
    /// is `field_width × field_height`; both pixel sizes are checked.
    pub fn new(
        camera_um_per_px: f64,
        model_um_per_px: f64,
        field_width: u32,
        field_height: u32,
    ) -> Result<Self, ScaleError> {
        Self::with_aspect(
            camera_um_per_px,
            model_um_per_px,
            1.0,
            field_width,
            field_height,
        )
    }

    /// [`ScaleFraming::new`] for a model whose pixels are `model_pixel_aspect` times wider than
    /// high (`leukoscope.pixel_aspect`): x and y are resampled by their own factors, so a
    /// square-pixel camera's round cells come out as the training pictures showed them.
    pub fn with_aspect(
        camera_um_per_px: f64,
        model_um_per_px: f64,
        model_pixel_aspect: f64,
        field_width: u32,
        field_height: u32,
    ) -> Result<Self, ScaleError> {
        check_um_per_px("the camera's um_per_px", camera_um_per_px)?;
        check_um_per_px("the model's leukoscope.um_per_px", model_um_per_px)?;
        let model_pixel_aspect = if model_pixel_aspect.is_finite() && model_pixel_aspect > 0.0 {
            model_pixel_aspect
        } else {
            1.0
        };
        Ok(ScaleFraming {
            camera_um_per_px,
            model_um_per_px,
            model_pixel_aspect,
            field_width: field_width.max(1),
            field_height: field_height.max(1),
        })
    }

    /// The resampling factor, camera / model (geometric mean of x and y): above 1 the frame is
    /// enlarged.
    pub fn factor(&self) -> f64 {
        self.camera_um_per_px / self.model_um_per_px
    }

    /// The resampling factors along x and y: camera over the model pixel's width and height.
    pub fn factors(&self) -> (f64, f64) {
        let root = self.model_pixel_aspect.sqrt();
        (self.factor() / root, self.factor() * root)
    }

    /// The size of a `width × height` frame at the model's pixel size (at least 1×1).
    pub fn resampled_size(&self, width: u32, height: u32) -> (u32, u32) {
        let (fx, fy) = self.factors();
        let side =
            |v: u32, f: f64| ((f64::from(v) * f).round().max(1.0)).min(f64::from(u32::MAX)) as u32;
        (side(width, fx), side(height, fy))
    }

    /// The grid of a `width × height` frame (see the module documentation); empty for an empty
    /// frame.
    pub fn grid(&self, width: u32, height: u32) -> FieldGrid {
        if width == 0 || height == 0 {
            return FieldGrid {
                resampled: (0, 0),
                xs: Vec::new(),
                ys: Vec::new(),
            };
        }
        let (w, h) = self.resampled_size(width, height);
        FieldGrid {
            resampled: (w, h),
            xs: positions(w, self.field_width),
            ys: positions(h, self.field_height),
        }
    }

    /// How many fields a `width × height` frame gives.
    pub fn field_count(&self, width: u32, height: u32) -> u64 {
        let (w, h) = self.resampled_size(width, height);
        count(w, self.field_width) * count(h, self.field_height)
    }

    /// Refuses a frame size that would give more than [`MAX_FIELDS_PER_FRAME`] fields, saying
    /// how the scales lead there.
    pub fn check_field_count(&self, width: u32, height: u32) -> Result<(), String> {
        let n = self.field_count(width, height);
        if n <= MAX_FIELDS_PER_FRAME {
            return Ok(());
        }
        let (w, h) = self.resampled_size(width, height);
        Err(format!(
            "a {width}x{height} frame at {} µm/px is {w}x{h} at the model's {} µm/px: {n} fields \
             of {}x{} px, more than {MAX_FIELDS_PER_FRAME} per frame; use a lower camera \
             resolution or a lower magnification (check [source] um_per_px)",
            self.camera_um_per_px, self.model_um_per_px, self.field_width, self.field_height
        ))
    }
}

/// Field count along an axis of `len` pixels for a field side `side`.
fn count(len: u32, side: u32) -> u64 {
    if len == 0 {
        return 0;
    }
    let slack = slack(side);
    let n = (u64::from(len.saturating_sub(slack))).div_ceil(u64::from(side));
    n.max(1)
}

/// The pixels a frame may exceed whole fields by without another field: 2 % of a side.
fn slack(side: u32) -> u32 {
    (f64::from(side) / 50.0).round() as u32
}

/// Start positions of the fields along an axis.
fn positions(len: u32, side: u32) -> Vec<i64> {
    let n = count(len, side);
    let (len, side) = (i64::from(len), i64::from(side));
    if n <= 1 {
        return vec![(len - side).div_euclid(2)];
    }
    let span = (len - side) as f64;
    (0..n)
        .map(|k| (k as f64 * span / (n - 1) as f64).round() as i64)
        .collect()
}

/// Cuts frames into model-scale fields, keeping its resizer between frames.
pub struct FieldCutter {
    framing: ScaleFraming,
    resizer: Resizer,
}

impl FieldCutter {
    /// A cutter for one framing.
    pub fn new(framing: ScaleFraming) -> Self {
        FieldCutter {
            framing,
            resizer: Resizer::new(),
        }
    }

    /// The framing.
    pub fn framing(&self) -> &ScaleFraming {
        &self.framing
    }

    /// The frame resampled to the model's pixel size.
    pub fn resample(&mut self, img: &RgbImage) -> RgbImage {
        let (w, h) = self.framing.resampled_size(img.width(), img.height());
        resample_with(&mut self.resizer, img, w, h)
    }

    /// The frame's fields, row by row from the top left (see the module documentation).
    pub fn cut(&mut self, img: &RgbImage) -> Vec<ScaledField> {
        let grid = self.framing.grid(img.width(), img.height());
        if grid.is_empty() {
            return Vec::new();
        }
        let resampled = self.resample(img);
        let (fw, fh) = (self.framing.field_width, self.framing.field_height);
        let padded = grid.xs.iter().any(|&x| x < 0) || grid.ys.iter().any(|&y| y < 0);
        let background = if padded {
            background_colour(&resampled)
        } else {
            image::Rgb([0, 0, 0])
        };
        let (rw, rh) = (i64::from(resampled.width()), i64::from(resampled.height()));
        let mut out = Vec::with_capacity(grid.len());
        for &y in &grid.ys {
            for &x in &grid.xs {
                let image =
                    if x >= 0 && y >= 0 && x + i64::from(fw) <= rw && y + i64::from(fh) <= rh {
                        image::imageops::crop_imm(&resampled, x as u32, y as u32, fw, fh).to_image()
                    } else {
                        RgbImage::from_fn(fw, fh, |u, v| {
                            let (sx, sy) = (x + i64::from(u), y + i64::from(v));
                            if (0..rw).contains(&sx) && (0..rh).contains(&sy) {
                                *resampled.get_pixel(sx as u32, sy as u32)
                            } else {
                                background
                            }
                        })
                    };
                out.push(ScaledField {
                    index: out.len() as u32,
                    x,
                    y,
                    image,
                });
            }
        }
        out
    }
}

/// `img` resampled to `w` × `h` as a camera with other pixels would see it: an area filter when
/// both sides shrink, bilinear otherwise. A picture already of that size, or empty, is returned
/// as it is.
pub fn resample(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    resample_with(&mut Resizer::new(), img, w, h)
}

/// [`resample`] with a resizer kept between calls.
fn resample_with(resizer: &mut Resizer, img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (w, h) = (w.max(1), h.max(1));
    if (w, h) == img.dimensions() || img.width() == 0 || img.height() == 0 {
        return img.clone();
    }
    let alg = if w < img.width() && h < img.height() {
        ResizeAlg::Convolution(FilterType::Box)
    } else {
        ResizeAlg::Convolution(FilterType::Bilinear)
    };
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .expect("an RgbImage buffer holds width × height × 3 bytes");
    let mut dst = Image::new(w, h, PixelType::U8x3);
    resizer
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(alg))
        .expect("source and destination are both U8x3 with non-zero sides");
    RgbImage::from_raw(w, h, dst.into_vec()).expect("the resized buffer has its size")
}

/// A smear's background colour: the mean of the brightest quarter of its pixels by luma.
pub fn background_colour(img: &RgbImage) -> image::Rgb<u8> {
    let luma = |p: &image::Rgb<u8>| {
        ((77 * p.0[0] as u32 + 150 * p.0[1] as u32 + 29 * p.0[2] as u32) >> 8) as usize
    };
    let n = img.pixels().len() as u64;
    if n == 0 {
        return image::Rgb([255, 255, 255]);
    }
    let mut hist = [0u64; 256];
    img.pixels().for_each(|p| hist[luma(p)] += 1);
    // The luma level at and above which a quarter of the pixels lie.
    let mut acc = 0;
    let mut cut = 0usize;
    for v in (0..256).rev() {
        acc += hist[v];
        if acc * 4 >= n {
            cut = v;
            break;
        }
    }
    let (mut sum, mut k) = ([0u64; 3], 0u64);
    for p in img.pixels().filter(|p| luma(p) >= cut) {
        for (s, &c) in sum.iter_mut().zip(&p.0) {
            *s += u64::from(c);
        }
        k += 1;
    }
    let k = k.max(1);
    image::Rgb(sum.map(|s| (s / k) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(camera: f64, model: f64, side: u32) -> ScaleFraming {
        ScaleFraming::new(camera, model, side, side).unwrap()
    }

    #[test]
    fn the_grid_covers_the_frame_with_even_overlap() {
        // 1280x720 at 0.2 µm/px for a 0.35 µm/px model: 731x411, 4x2 fields of 224.
        let f = framing(0.2, 0.35, 224);
        let g = f.grid(1280, 720);
        assert_eq!(g.resampled, (731, 411));
        assert_eq!(g.xs, vec![0, 169, 338, 507]);
        assert_eq!(g.ys, vec![0, 187]);
        assert_eq!(f.field_count(1280, 720), 8);
        // First touches the left edge, last the right: nothing lost.
        assert_eq!(g.xs.last().unwrap() + 224, 731);
        assert_eq!(g.ys.last().unwrap() + 224, 411);
        // An exact multiple: no overlap.
        let g = framing(1.0, 1.0, 100).grid(300, 200);
        assert_eq!((g.xs, g.ys), (vec![0, 100, 200], vec![0, 100]));
        // 2 % slack: 226 px is one centred field, not two.
        let g = framing(1.0, 1.0, 224).grid(226, 226);
        assert_eq!((g.xs, g.ys), (vec![1], vec![1]));
        let g = framing(1.0, 1.0, 224).grid(230, 224);
        assert_eq!(g.xs, vec![0, 6]);
    }

    #[test]
    fn a_small_frame_is_one_centred_field_padded_with_its_background() {
        // ×2 magnification: a 224 picture at half the model's pixel size is 112 px at its scale.
        let f = framing(0.2, 0.4, 224);
        let g = f.grid(224, 224);
        assert_eq!(g.resampled, (112, 112));
        assert_eq!((g.xs.clone(), g.ys.clone()), (vec![-56], vec![-56]));
        let img = RgbImage::from_fn(224, 224, |x, y| {
            if (x / 8 + y / 8) % 4 == 0 {
                image::Rgb([120, 60, 170])
            } else {
                image::Rgb([236, 232, 238])
            }
        });
        let fields = FieldCutter::new(f).cut(&img);
        assert_eq!(fields.len(), 1);
        let field = &fields[0].image;
        assert_eq!(field.dimensions(), (224, 224));
        assert_eq!(*field.get_pixel(0, 0), image::Rgb([236, 232, 238]));
        assert_eq!(*field.get_pixel(223, 223), image::Rgb([236, 232, 238]));
    }

    #[test]
    fn fields_hold_the_resampled_frame_at_their_positions() {
        let img = RgbImage::from_fn(600, 400, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, 9])
        });
        // Same scale: fields are crops of the frame itself.
        let f = framing(0.3, 0.3, 224);
        let fields = FieldCutter::new(f).cut(&img);
        assert_eq!(fields.len(), 3 * 2);
        for fd in &fields {
            assert_eq!(fd.image.dimensions(), (224, 224));
            assert_eq!(
                fd.image.get_pixel(5, 7),
                img.get_pixel(fd.x as u32 + 5, fd.y as u32 + 7)
            );
        }
        assert_eq!(
            fields.iter().map(|f| f.index).collect::<Vec<_>>(),
            (0..6).collect::<Vec<_>>()
        );
        // Shrinking by 2 averages 2×2 blocks.
        let flat = RgbImage::from_fn(8, 8, |x, _| {
            image::Rgb([if x % 2 == 0 { 0 } else { 200 }, 0, 0])
        });
        let half = FieldCutter::new(framing(0.2, 0.4, 4)).resample(&flat);
        assert_eq!(half.dimensions(), (4, 4));
        assert!(
            half.pixels().all(|p| (p.0[0] as i32 - 100).abs() <= 1),
            "{half:?}"
        );
    }

    #[test]
    fn non_square_model_pixels_resample_each_axis() {
        // A model trained on 4:3 photographs squeezed into squares: its pixels are 4/3 as wide
        // as high; a square-pixel frame is squeezed the same way.
        let f = ScaleFraming::with_aspect(0.3, 0.3, 4.0 / 3.0, 224, 224).unwrap();
        let (fx, fy) = f.factors();
        assert!((fx / fy - 0.75).abs() < 1e-12 && (fx * fy - 1.0).abs() < 1e-12);
        // A 4:3 frame becomes square, as the training pictures are.
        assert_eq!(f.resampled_size(800, 600), (693, 693));
    }

    #[test]
    fn too_many_fields_are_refused_with_the_scales() {
        let f = framing(0.1, 0.4, 224);
        assert!(f.check_field_count(1280, 720).is_ok());
        let f = framing(1.0, 0.1, 224);
        let e = f.check_field_count(1280, 720).unwrap_err();
        assert!(
            e.contains("12800x7200") && e.contains("more than 64"),
            "{e}"
        );
        assert!(ScaleFraming::new(0.0, 0.3, 224, 224).is_err());
        assert!(framing(1.0, 1.0, 224).grid(0, 10).is_empty());
    }
}
