//! From a picture to a model input: the one function every crate uses.
//!
//! Framing policy: the picture is centre-cropped to the input's aspect ratio (a square for the
//! shipped models), then resized to the input size with the contract's resize method. A picture
//! that already has the input size is used as it is. Its colour is then normalized as the
//! contract says ([`crate::colour`]: the slide background made the training set's white), values
//! are scaled to `0..1`, normalized with the contract's mean and std, and laid out as CHW (R
//! plane, G plane, B plane).

use std::path::{Path, PathBuf};

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use thiserror::Error;

use crate::contract::{ModelContract, ResizeMethod};
use crate::picture::DecodeLimits;

/// A picture that could not be read or turned into a model input.
#[derive(Debug, Error)]
pub enum PreprocessError {
    /// The file could not be read or decoded as an image.
    #[error("{}: cannot read image: {reason}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// What went wrong, in words.
        reason: String,
    },
    /// The picture has a zero side.
    #[error("image is empty ({width}x{height})")]
    Empty {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The output buffer has the wrong length for the contract.
    #[error("input buffer holds {got} values, the contract needs {expected}")]
    BufferSize {
        /// Values the contract needs.
        expected: usize,
        /// Values the buffer holds.
        got: usize,
    },
}

/// Reads and decodes an image file (JPEG or PNG, by content, not by name) as 8-bit RGB.
///
/// Empty, truncated, corrupt and oversized pictures are errors naming the file and the problem
/// ([`decode_image_bytes`]); a file larger than the default [`DecodeLimits::max_alloc`] is
/// refused before it is read. Nothing panics.
pub fn decode_image(path: &Path) -> Result<RgbImage, PreprocessError> {
    let error = |reason: String| PreprocessError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| error(e.to_string()))?;
    let len = file.metadata().map_err(|e| error(e.to_string()))?.len();
    let limit = DecodeLimits::default().max_alloc;
    if len > limit {
        return Err(error(format!(
            "{len} bytes, more than the decoding limit of {limit}"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| error(e.to_string()))?;
    decode_image_bytes(&bytes).map_err(error)
}

/// Decodes an encoded image held in memory (JPEG or PNG) as 8-bit RGB, within the default
/// [`DecodeLimits`].
///
/// Only a whole picture decodes: an empty, truncated or corrupt one, or one too large for the
/// limits, is an error saying what is wrong ([`crate::picture`]).
pub fn decode_image_bytes(bytes: &[u8]) -> Result<RgbImage, String> {
    crate::picture::decode(bytes, &DecodeLimits::default()).map_err(|e| e.to_string())
}

/// Turns a decoded RGB picture into the model's input (`3 × H × W` values, CHW).
pub fn image_to_input(
    img: &RgbImage,
    contract: &ModelContract,
) -> Result<Vec<f32>, PreprocessError> {
    let mut out = vec![0.0; contract.input_len()];
    Preprocessor::new(contract.clone()).run_into(img, &mut out)?;
    Ok(out)
}

/// Reusable preprocessing state for a stream of pictures: keeps the resizer and its buffers, so a
/// frame loop allocates nothing per frame.
pub struct Preprocessor {
    contract: ModelContract,
    resizer: Resizer,
    resized: Image<'static>,
    /// The framed picture after colour normalization.
    coloured: Vec<u8>,
}

impl Preprocessor {
    /// A preprocessor for one contract.
    pub fn new(contract: ModelContract) -> Self {
        let resized = Image::new(contract.input_width, contract.input_height, PixelType::U8x3);
        Preprocessor {
            contract,
            resizer: Resizer::new(),
            resized,
            coloured: Vec::new(),
        }
    }

    /// The contract this preprocessor applies.
    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// Writes the model input for `img` into `out` (length `3 × H × W`).
    pub fn run_into(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<(), PreprocessError> {
        if out.len() != self.contract.input_len() {
            return Err(PreprocessError::BufferSize {
                expected: self.contract.input_len(),
                got: out.len(),
            });
        }
        let contract = self.contract.clone();
        let mut coloured = std::mem::take(&mut self.coloured);
        coloured.clear();
        coloured.extend_from_slice(self.framed_pixels(img)?);
        contract.colour.apply(&mut coloured);
        write_normalized_chw(&coloured, &contract, out);
        self.coloured = coloured;
        Ok(())
    }

    /// The framing step alone: the picture centre-cropped and resized to the input size, as
    /// 8-bit RGB, before colour normalization. `run_into` on the result gives exactly what
    /// `run_into` on `img` gives, so a trainer may cache framed pictures and augment them (an
    /// acquisition's colour among them) before the colour is normalized.
    pub fn fit(&mut self, img: &RgbImage) -> Result<RgbImage, PreprocessError> {
        let (w, h) = (self.contract.input_width, self.contract.input_height);
        let pixels = self.framed_pixels(img)?.to_vec();
        Ok(RgbImage::from_raw(w, h, pixels).expect("framed buffer has the input size"))
    }

    /// Interleaved RGB bytes of the picture framed to the input size.
    fn framed_pixels<'a>(&'a mut self, img: &'a RgbImage) -> Result<&'a [u8], PreprocessError> {
        let c = &self.contract;
        if img.width() == 0 || img.height() == 0 {
            return Err(PreprocessError::Empty {
                width: img.width(),
                height: img.height(),
            });
        }
        if img.width() == c.input_width && img.height() == c.input_height {
            return Ok(img.as_raw());
        }
        let alg = match c.resize {
            ResizeMethod::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            ResizeMethod::Nearest => ResizeAlg::Nearest,
            ResizeMethod::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
        };
        let options = ResizeOptions::new()
            .resize_alg(alg)
            .fit_into_destination(Some((0.5, 0.5)));
        let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
            .expect("an RgbImage buffer holds width × height × 3 bytes");
        self.resizer
            .resize(&src, &mut self.resized, &options)
            .expect("source and destination are both U8x3 with non-zero sides");
        Ok(self.resized.buffer())
    }
}

/// Scales interleaved RGB bytes to `0..1`, normalizes per channel and writes CHW planes.
fn write_normalized_chw(rgb: &[u8], c: &ModelContract, out: &mut [f32]) {
    let plane = c.input_height as usize * c.input_width as usize;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let scale: [f32; 3] = std::array::from_fn(|i| 1.0 / (255.0 * c.std[i]));
    let shift: [f32; 3] = std::array::from_fn(|i| c.mean[i] / c.std[i]);
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        r[i] = px[0] as f32 * scale[0] - shift[0];
        g[i] = px[1] as f32 * scale[1] - shift[1];
        b[i] = px[2] as f32 * scale[2] - shift[2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(size: u32) -> ModelContract {
        ModelContract::new(vec!["a".into(), "b".into()], size)
    }

    #[test]
    fn same_size_image_is_normalized_into_chw_planes() {
        let mut img = RgbImage::new(2, 2);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(1, 1, image::Rgb([0, 0, 255]));
        let mut c = contract(2);
        c.mean = [0.5, 0.5, 0.5];
        c.std = [0.5, 0.5, 0.5];
        let x = image_to_input(&img, &c).unwrap();
        assert_eq!(x.len(), 12);
        // R plane: first pixel is full red -> (1 - 0.5) / 0.5 = 1; others black -> -1.
        assert!((x[0] - 1.0).abs() < 1e-6);
        assert!((x[1] + 1.0).abs() < 1e-6);
        // B plane, last pixel full blue.
        assert!((x[8 + 3] - 1.0).abs() < 1e-6);
        assert!((x[8] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn wide_frames_are_centre_cropped_before_resizing() {
        // Left and right thirds red, centre third green. Squashing the whole frame would give a
        // red plane averaging 2/3; the centre crop sees green only (the resize filter may blend
        // a little of the neighbouring red into the outermost columns).
        let mut img = RgbImage::new(60, 20);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if (20..40).contains(&x) {
                image::Rgb([0, 255, 0])
            } else {
                image::Rgb([255, 0, 0])
            };
        }
        let mut c = contract(4);
        c.mean = [0.0; 3];
        c.std = [1.0; 3];
        let x = image_to_input(&img, &c).unwrap();
        let plane = 16;
        let red_mean = x[..plane].iter().sum::<f32>() / plane as f32;
        assert!(red_mean < 0.15, "red leaked in: {x:?}");
        for row in 0..4 {
            for col in 1..3 {
                assert!(x[row * 4 + col] < 0.01 && x[plane + row * 4 + col] > 0.99);
            }
        }
    }

    #[test]
    fn framing_then_normalizing_equals_normalizing_the_original() {
        let img = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 77])
        });
        let mut p = Preprocessor::new(contract(16));
        let framed = p.fit(&img).unwrap();
        assert_eq!(framed.dimensions(), (16, 16));
        let mut direct = vec![0.0; 3 * 256];
        let mut via_fit = vec![0.0; 3 * 256];
        p.run_into(&img, &mut direct).unwrap();
        p.run_into(&framed, &mut via_fit).unwrap();
        assert_eq!(direct, via_fit);
    }

    #[test]
    fn the_contract_colour_normalization_is_applied_before_mean_and_std() {
        // Background (a third of the pixels) with a blue cast; the contract's white is grey.
        let img = RgbImage::from_fn(6, 6, |x, _| {
            if x < 2 {
                image::Rgb([200, 200, 160])
            } else {
                image::Rgb([100, 80, 60])
            }
        });
        let mut c = contract(6);
        c.mean = [0.0; 3];
        c.std = [1.0; 3];
        let plain = image_to_input(&img, &c).unwrap();
        c.colour = crate::colour::ColourNormalization::BackgroundWhite {
            white: [200.0, 200.0, 200.0],
        };
        let normalized = image_to_input(&img, &c).unwrap();
        let blue = |x: &[f32], i: usize| x[2 * 36 + i];
        assert!((blue(&plain, 0) - 160.0 / 255.0).abs() < 1e-6);
        assert!((blue(&normalized, 0) - 200.0 / 255.0).abs() < 1e-6);
        assert!((blue(&normalized, 3) - 75.0 / 255.0).abs() < 1e-6);
        assert_eq!(plain[..72], normalized[..72], "red and green untouched");
    }

    #[test]
    fn preprocessor_is_reusable_and_checks_the_buffer() {
        let img = RgbImage::from_pixel(50, 40, image::Rgb([10, 20, 30]));
        let mut p = Preprocessor::new(contract(8));
        let mut a = vec![0.0; 3 * 64];
        let mut b = vec![0.0; 3 * 64];
        p.run_into(&img, &mut a).unwrap();
        p.run_into(&img, &mut b).unwrap();
        assert_eq!(a, b);
        let mut short = vec![0.0; 10];
        assert!(matches!(
            p.run_into(&img, &mut short),
            Err(PreprocessError::BufferSize { .. })
        ));
    }

    #[test]
    fn bad_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.jpg");
        std::fs::write(&text, b"this is not a picture").unwrap();
        let err = decode_image(&text).unwrap_err().to_string();
        assert!(
            err.contains("notes.jpg") && err.contains("not an image"),
            "{err}"
        );

        let img = RgbImage::from_pixel(32, 32, image::Rgb([200, 100, 50]));
        let good = dir.path().join("good.jpg");
        img.save(&good).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = decode_image(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.jpg"), "{err}");
        assert_eq!(decode_image(&good).unwrap().dimensions(), (32, 32));

        let missing = decode_image(&dir.path().join("missing.png")).unwrap_err();
        assert!(missing.to_string().contains("missing.png"));

        // Sparse: nothing is written, and nothing may be read.
        let huge = dir.path().join("huge.jpg");
        let file = std::fs::File::create(&huge).unwrap();
        file.set_len(DecodeLimits::default().max_alloc + 1).unwrap();
        let err = decode_image(&huge).unwrap_err().to_string();
        assert!(
            err.contains("huge.jpg") && err.contains("more than the decoding limit"),
            "{err}"
        );
    }
}
