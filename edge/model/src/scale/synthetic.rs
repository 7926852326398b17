//! Synthetic smear pictures of known red-cell size: for the estimator's tests, the device's
//! tests and for checking the estimator by hand.

use image::RgbImage;

use crate::seeded::SplitMix64;

/// How a synthetic field is drawn.
#[derive(Debug, Clone)]
pub struct SyntheticField {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// The red cells' diameter, pixels.
    pub diameter_px: f64,
    /// Relative spread of the diameters (standard deviation / diameter), e.g. 0.05.
    pub diameter_spread: f64,
    /// Gaussian blur of the edges, pixels (σ).
    pub blur_px: f64,
    /// Sensor noise, ± grey levels (uniform).
    pub noise: f64,
    /// Cells to place (some end up touching each other or the border).
    pub cells: usize,
    /// Stained white cells (2.2× the red-cell diameter) to place.
    pub white_cells: usize,
    /// Seed.
    pub seed: u64,
}

impl SyntheticField {
    /// A 400×300 field of 30 red cells of `diameter_px` (±5 %), blurred σ = 1 px, ±6 noise,
    /// one white cell.
    pub fn new(diameter_px: f64, seed: u64) -> Self {
        SyntheticField {
            width: 400,
            height: 300,
            diameter_px,
            diameter_spread: 0.05,
            blur_px: 1.0,
            noise: 6.0,
            cells: 30,
            white_cells: 1,
            seed,
        }
    }

    /// Draws the field: bright background, lavender red cells with a pale centre, violet
    /// white cells, each edge a blurred step (the error function of the distance), noise.
    pub fn draw(&self) -> RgbImage {
        let mut rng = SplitMix64::new(self.seed);
        let mut discs: Vec<(f64, f64, f64, bool)> = Vec::new();
        let (w, h) = (self.width as f64, self.height as f64);
        for k in 0..self.cells + self.white_cells {
            let white = k < self.white_cells;
            let gauss = (0..6).map(|_| rng.unit() as f64).sum::<f64>() - 3.0;
            let d = if white {
                2.2 * self.diameter_px
            } else {
                self.diameter_px * (1.0 + self.diameter_spread * gauss * 2f64.sqrt())
            };
            // White cells lie inside, so a test can count them left out.
            let (mx, my) = if white { (d, d) } else { (0.0, 0.0) };
            let x = mx + rng.unit() as f64 * (w - 2.0 * mx).max(1.0);
            let y = my + rng.unit() as f64 * (h - 2.0 * my).max(1.0);
            discs.push((x, y, d / 2.0, white));
        }
        let sigma = self.blur_px.max(0.05);
        // Coverage of a blurred disc edge at signed distance `d` (positive outside).
        let cover = |d: f64| 0.5 * erfc(d / (sigma * std::f64::consts::SQRT_2));
        let mut img = RgbImage::new(self.width, self.height);
        for (x, y, px) in img.enumerate_pixels_mut() {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let mut c = [238.0, 234.0, 240.0];
            for &(cx, cy, r, white) in &discs {
                let dist = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
                let a = cover(dist - r);
                if a < 1e-4 {
                    continue;
                }
                let body = if white {
                    [110.0, 60.0, 170.0]
                } else {
                    // A pale centre of 40 % of the radius, itself blurred.
                    let pale = cover(dist - 0.4 * r);
                    [
                        185.0 + 30.0 * pale,
                        170.0 + 30.0 * pale,
                        200.0 + 20.0 * pale,
                    ]
                };
                for i in 0..3 {
                    c[i] = c[i] * (1.0 - a) + body[i] * a;
                }
            }
            let n = (rng.unit() as f64 - 0.5) * 2.0 * self.noise;
            *px = image::Rgb(c.map(|v| (v + n).round().clamp(0.0, 255.0) as u8));
        }
        img
    }
}

/// The complementary error function (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let r = poly * (-z * z).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}
