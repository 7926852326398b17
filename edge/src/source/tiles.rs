//! Tiling: the alternative to centre-cropping a frame that is larger than the model input.
//!
//! The default framing (`leukoscope_model::preprocess`) keeps the centre square of a frame and shrinks it to
//! the model input: a 1280×720 frame loses its left and right thirds and its detail is reduced
//! about 3× (for a 224 input). Tiling instead cuts the frame into a grid of `tile × tile` squares
//! at full resolution, each classified on its own (per-tile results); choose `tile` so that a cell
//! fills a tile about as much as in the training pictures.
//!
//! The grid holds as many whole tiles as fit in each direction and is centred, so the margins
//! left out are equal on both sides and smaller than one tile. A frame smaller than one tile in
//! either direction gives a single tile: its centre square (the side of its shorter edge), which
//! preprocessing then enlarges like any picture.

use image::RgbImage;
use image::imageops;

/// One tile of a frame.
#[derive(Debug, Clone)]
pub struct Tile {
    /// Left edge in the frame, in pixels.
    pub x: u32,
    /// Top edge in the frame, in pixels.
    pub y: u32,
    /// The tile's pixels (`tile × tile`, or the centre square of a small frame).
    pub image: RgbImage,
}

/// Cuts `img` into a centred grid of `tile × tile` squares, row by row from the top left (see
/// the module documentation). `tile` 0 is taken as 1; an empty frame gives no tiles.
pub fn tiles(img: &RgbImage, tile: u32) -> Vec<Tile> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let tile = tile.max(1);
    if w < tile || h < tile {
        let side = w.min(h);
        let (x, y) = ((w - side) / 2, (h - side) / 2);
        return vec![Tile {
            x,
            y,
            image: imageops::crop_imm(img, x, y, side, side).to_image(),
        }];
    }
    let (nx, ny) = (w / tile, h / tile);
    let (x0, y0) = ((w - nx * tile) / 2, (h - ny * tile) / 2);
    let mut out = Vec::with_capacity((nx * ny) as usize);
    for j in 0..ny {
        for i in 0..nx {
            let (x, y) = (x0 + i * tile, y0 + j * tile);
            out.push(Tile {
                x,
                y,
                image: imageops::crop_imm(img, x, y, tile, tile).to_image(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hd_frame_gives_a_centred_grid_of_full_resolution_tiles() {
        let img = RgbImage::from_fn(1280, 720, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 0])
        });
        let t = tiles(&img, 224);
        // 5 × 3 tiles; margins (1280 - 1120) / 2 = 80 and (720 - 672) / 2 = 24.
        assert_eq!(t.len(), 15);
        assert_eq!((t[0].x, t[0].y), (80, 24));
        assert_eq!((t[14].x, t[14].y), (80 + 4 * 224, 24 + 2 * 224));
        for tile in &t {
            assert_eq!(tile.image.dimensions(), (224, 224));
            // The tile's pixels are the frame's pixels at its position.
            assert_eq!(
                tile.image.get_pixel(3, 5),
                img.get_pixel(tile.x + 3, tile.y + 5)
            );
        }
    }

    #[test]
    fn small_and_empty_frames() {
        let img = RgbImage::new(300, 100);
        let t = tiles(&img, 224);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].x, t[0].y, t[0].image.width(), t[0].image.height()),
            (100, 0, 100, 100)
        );
        assert!(tiles(&RgbImage::new(0, 10), 224).is_empty());
    }
}
