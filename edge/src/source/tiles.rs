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

/// The most tiles one frame may be cut into. Each tile is a model inference (10–80 ms on a
/// Raspberry Pi), so 64 tiles already take seconds per frame; a smaller tile is a mistake (a
/// tile side of 3 px on a 1280×720 frame would be about 100,000 inferences per frame).
pub const MAX_TILES_PER_FRAME: u64 = 64;

/// How many tiles [`tiles`] cuts a `width`×`height` frame into (`tile` 0: not tiled, one).
pub fn tile_count(width: u32, height: u32, tile: u32) -> u64 {
    if tile == 0 || width < tile || height < tile {
        return 1;
    }
    u64::from(width / tile) * u64::from(height / tile)
}

/// Refuses a tile side that would cut a `width`×`height` frame into more than
/// [`MAX_TILES_PER_FRAME`] tiles, with the smallest side that would do.
pub fn check_tile_count(width: u32, height: u32, tile: u32) -> Result<(), String> {
    let n = tile_count(width, height, tile);
    if n <= MAX_TILES_PER_FRAME {
        return Ok(());
    }
    let smallest = (tile..=width.max(height))
        .find(|&t| tile_count(width, height, t) <= MAX_TILES_PER_FRAME)
        .unwrap_or(width.max(height));
    Err(format!(
        "[source] tile = {tile} (the tile side in pixels) cuts a {width}x{height} frame into {n} \
         tiles, more than {MAX_TILES_PER_FRAME} per frame: use tile = 0 (the centre square) or \
         tile >= {smallest}"
    ))
}

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
    fn too_many_tiles_are_refused_with_the_smallest_side_that_would_do() {
        assert_eq!(tile_count(1280, 720, 224), 15);
        assert_eq!(tile_count(1280, 720, 0), 1);
        assert_eq!(tile_count(100, 100, 224), 1);
        assert!(check_tile_count(1280, 720, 224).is_ok());
        assert!(check_tile_count(1280, 720, 0).is_ok());
        let err = check_tile_count(1280, 720, 3).unwrap_err();
        assert!(err.contains("102240 tiles"), "{err}");
        // 1280x720 at 117 px: 10 x 6 = 60 tiles, the smallest side within the limit.
        assert!(err.contains("tile >= 117"), "{err}");
        assert!(check_tile_count(1280, 720, 116).is_err());
        assert!(check_tile_count(1280, 720, 117).is_ok());
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
