//! The pixel size from the red blood cells of smear pictures.
//!
//! # Method (deterministic: no random choices, the same pictures give the same number)
//!
//! 1. **Channel.** The green channel, smoothed with a 3×3 binomial kernel: haemoglobin absorbs
//!    green most, so red cells (and nuclei) are darker than the bright background there.
//! 2. **Stained pixels** (white-cell nuclei and cytoplasm): chroma `max − min` of R, G, B at least
//!    [`CellSettings::stain_min_chroma`] with a blue-violet to magenta hue (235°–345°), the
//!    quality gate's nucleus rule (`edge::quality`). They are foreground but never a red cell.
//! 3. **Threshold.** Otsu's threshold on the smoothed green of the unstained pixels, then refined
//!    to the midpoint of the two classes' medians (Ridler–Calvard, on medians) until it settles.
//!    A picture whose background and cells differ by less than [`CellSettings::min_contrast`]
//!    grey levels gives no cells. After a first pass of steps 4–5, the threshold is set again,
//!    to the midpoint between the background and the red cells' **rims** (the 10th percentile
//!    of each kept cell's smoothed green, median over the cells), and steps 4–5 run again: the
//!    midpoint between rim and background lies on the middle of a blurred edge, so a slightly
//!    defocused cell is measured at its true size, where a threshold pulled towards the
//!    background by the pale centres (or Otsu's, which leans towards the larger class) would
//!    grow it by a pixel or more.
//! 4. **Mask.** Pixels at or below the threshold, or stained; **holes filled** (background not
//!    connected to the picture's border, 4-connected): a red cell's pale centre belongs to it.
//! 5. **Components** (8-connected), each kept only when it is an isolated, round red cell: it
//!    does not touch the border; its equivalent-circle diameter `2·√(area/π)` is at least
//!    [`CellSettings::min_diameter_px`] (platelets, debris, noise) and at most
//!    [`CellSettings::max_diameter_fraction`] of the shorter picture side (clumps, the
//!    background of a crowded field); at most [`CellSettings::max_stained_fraction`] of its
//!    pixels are stained (not a white cell); the ratio of its principal axes (from the second
//!    moments) is at most [`CellSettings::max_axis_ratio`] and its solidity (area over the
//!    area of its convex hull) at least [`CellSettings::min_solidity`] — two touching cells are
//!    elongated or have a waist, and are left out rather than split.
//! 6. **Estimate.** Over all the pictures' kept cells: the median diameter; then only the cells
//!    within 0.7–1.4× of it (unstained white cells, which are larger, and fragments), and the
//!    median, 25th and 75th percentile of those. µm/px = [`super::RBC_DIAMETER_UM`] / median.
//!    Fewer than [`CellSettings::min_cells`] cells is an error saying what was found instead.
//!
//! Accuracy: on synthetic pictures (discs of known diameter with pale centres, noise and a
//! blurred edge; `tests` below) the estimate is within 3 % of the truth from 12 to 60 px
//! diameters and edge blurs up to σ = 2 px, within 5 % at σ = 2.5 px (far out of focus). On real
//! pictures the red cells' own spread dominates.

use image::RgbImage;

use super::{RBC_DIAMETER_UM, ScaleError, ScaleEstimate, ScaleMethod, quantile};

/// The segmentation's limits (defaults chosen on the Taleqani pictures; see the module
/// documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct CellSettings {
    /// Smallest equivalent-circle diameter of a red cell, in pixels.
    pub min_diameter_px: f64,
    /// Largest diameter as a fraction of the picture's shorter side.
    pub max_diameter_fraction: f64,
    /// Largest ratio of the principal axes (1 = a circle).
    pub max_axis_ratio: f64,
    /// Smallest solidity (area over convex-hull area).
    pub min_solidity: f64,
    /// Largest fraction of stained (nucleus-coloured) pixels in a red cell.
    pub max_stained_fraction: f64,
    /// Minimum chroma of a stained pixel.
    pub stain_min_chroma: u8,
    /// Smallest difference between background and cells, in grey levels of the green channel.
    pub min_contrast: f64,
    /// Fewest cells an estimate rests on.
    pub min_cells: usize,
}

impl Default for CellSettings {
    fn default() -> Self {
        CellSettings {
            min_diameter_px: 6.0,
            max_diameter_fraction: 0.25,
            max_axis_ratio: 1.3,
            min_solidity: 0.9,
            max_stained_fraction: 0.1,
            stain_min_chroma: 60,
            min_contrast: 12.0,
            min_cells: 10,
        }
    }
}

/// Why components of a picture were not taken as red cells (counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Touching the picture's border.
    pub border: usize,
    /// Smaller than the smallest red cell.
    pub small: usize,
    /// Larger than the largest.
    pub large: usize,
    /// Stained: a white cell.
    pub stained: usize,
    /// Elongated or not convex: touching cells, clumps.
    pub shape: usize,
}

impl Rejections {
    /// Adds another picture's counts.
    pub fn add(&mut self, o: &Rejections) {
        self.border += o.border;
        self.small += o.small;
        self.large += o.large;
        self.stained += o.stained;
        self.shape += o.shape;
    }
}

/// A component that may be a red cell: isolated, of a red cell's size, unstained and convex.
/// Whether it is round is decided over all pictures together, once the pixels' aspect ratio is
/// known ([`estimate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Equivalent-circle diameter `2·√(area/π)`, pixels.
    pub diameter_px: f64,
    /// Second moments of its pixel coordinates (x², y², xy), pixels².
    pub moments: (f64, f64, f64),
}

impl Candidate {
    /// The ratio of its principal axes once x is multiplied by `aspect` (a pixel's width over
    /// its height: 1 for square pixels).
    pub fn axis_ratio(&self, aspect: f64) -> f64 {
        let (xx, yy, xy) = self.moments;
        axis_ratio(xx * aspect * aspect, yy, xy * aspect)
    }

    /// Its extent along x over its extent along y (√(xx / yy)): for a round cell, the pixels'
    /// height over their width.
    pub fn x_over_y(&self) -> f64 {
        (self.moments.0 / self.moments.1).sqrt()
    }
}

/// What one picture gave.
#[derive(Debug, Clone, PartialEq)]
pub struct PictureCells {
    /// The components that may be red cells.
    pub candidates: Vec<Candidate>,
    /// Components left out, by reason.
    pub rejected: Rejections,
    /// The threshold used on the smoothed green channel (0–255).
    pub threshold: f64,
    /// Background minus cell level (medians, grey levels); below
    /// [`CellSettings::min_contrast`] no component is looked at.
    pub contrast: f64,
}

/// Finds the round, isolated red cells of one picture and measures their diameters.
pub fn measure_picture(img: &RgbImage, s: &CellSettings) -> PictureCells {
    measure(img, s, None)
}

/// The picture with what the measurement saw painted over it, to check the segmentation by
/// eye: the red cells kept tinted green, components left out tinted red (white cells, clumps,
/// cells cut by the border, debris), background unchanged.
pub fn annotate(img: &RgbImage, s: &CellSettings) -> RgbImage {
    let mut marks = vec![0u8; img.width() as usize * img.height() as usize];
    measure(img, s, Some(&mut marks));
    let mut out = img.clone();
    for (p, &m) in out.pixels_mut().zip(&marks) {
        let tint = match m {
            1 => [255.0, 0.0, 0.0],
            2 => [0.0, 200.0, 0.0],
            _ => continue,
        };
        for (v, t) in p.0.iter_mut().zip(tint) {
            *v = (0.55 * *v as f32 + 0.45 * t) as u8;
        }
    }
    out
}

/// [`measure_picture`], marking each component's pixels in `marks` (1 left out, 2 kept).
fn measure(img: &RgbImage, s: &CellSettings, marks: Option<&mut Vec<u8>>) -> PictureCells {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = PictureCells {
        candidates: Vec::new(),
        rejected: Rejections::default(),
        threshold: 0.0,
        contrast: 0.0,
    };
    if w < 3 || h < 3 {
        return out;
    }
    let stained: Vec<bool> = img
        .pixels()
        .map(|p| is_stained(p.0, s.stain_min_chroma))
        .collect();
    let green = smoothed_green(img);
    let Some(levels) = threshold(&green, &stained) else {
        return out;
    };
    out.contrast = levels.background - levels.cells;
    out.threshold = levels.threshold;
    if out.contrast < s.min_contrast {
        return out;
    }
    let first = segment(&green, &stained, w, h, levels.threshold, s, None);
    // The second pass: the midpoint between the background and the red cells' rims (the
    // darkest tenth of each cell found, median over the cells), so the contour lies on the
    // middle of each cell's edge whatever its pale centre does to the class medians.
    let mut rims = first.rims.clone();
    rims.sort_by(f64::total_cmp);
    let second = if rims.is_empty() {
        levels.threshold
    } else {
        ((quantile(&rims, 0.5) + levels.background) / 2.0).floor()
    };
    let pass = if second == levels.threshold && marks.is_none() {
        first
    } else {
        segment(&green, &stained, w, h, second, s, marks)
    };
    out.threshold = second;
    out.candidates = pass.candidates;
    out.rejected = pass.rejected;
    out
}

/// What one segmentation pass found.
struct Pass {
    candidates: Vec<Candidate>,
    rejected: Rejections,
    /// Per kept cell: the 10th percentile of its smoothed green (the rim's level).
    rims: Vec<f64>,
}

/// Thresholds the smoothed green at `t`, fills holes, and measures and filters the components
/// (module documentation, steps 4 and 5).
fn segment(
    green: &[u8],
    stained: &[bool],
    w: usize,
    h: usize,
    t: f64,
    s: &CellSettings,
    mut marks: Option<&mut Vec<u8>>,
) -> Pass {
    let mut out = Pass {
        candidates: Vec::new(),
        rejected: Rejections::default(),
        rims: Vec::new(),
    };
    let mut mask: Vec<bool> = green
        .iter()
        .zip(stained)
        .map(|(&g, &st)| st || f64::from(g) <= t)
        .collect();
    fill_holes(&mut mask, w, h);
    let max_diameter = s.max_diameter_fraction * w.min(h) as f64;
    for c in components(&mask, w, h) {
        let kept_before = out.candidates.len();
        let diameter = 2.0 * (c.pixels.len() as f64 / std::f64::consts::PI).sqrt();
        let stained_count = c.pixels.iter().filter(|&&i| stained[i]).count();
        if c.touches_border {
            out.rejected.border += 1;
        } else if diameter < s.min_diameter_px {
            out.rejected.small += 1;
        } else if diameter > max_diameter {
            out.rejected.large += 1;
        } else if stained_count as f64 > s.max_stained_fraction * c.pixels.len() as f64 {
            out.rejected.stained += 1;
        } else {
            let (moments, solidity) = shape(&c.pixels, w);
            if solidity < s.min_solidity {
                out.rejected.shape += 1;
            } else {
                out.candidates.push(Candidate {
                    diameter_px: diameter,
                    moments,
                });
                let mut g: Vec<f64> = c.pixels.iter().map(|&i| f64::from(green[i])).collect();
                g.sort_by(f64::total_cmp);
                out.rims.push(quantile(&g, 0.1));
            }
        }
        if let Some(marks) = marks.as_deref_mut() {
            let mark = if out.candidates.len() > kept_before {
                2
            } else {
                1
            };
            c.pixels.iter().for_each(|&i| marks[i] = mark);
        }
    }
    out
}

/// The pixel size from the red cells of several pictures of one microscope (all at the same
/// magnification): the median over all their cells (module documentation, step 6).
pub fn estimate_from_pictures<'a>(
    pictures: impl IntoIterator<Item = &'a RgbImage>,
    s: &CellSettings,
) -> Result<ScaleEstimate, ScaleError> {
    let measured: Vec<PictureCells> = pictures
        .into_iter()
        .map(|p| measure_picture(p, s))
        .collect();
    estimate(&measured, s)
}

/// The pixels' aspect ratio (width over height) the candidates of these pictures show: the
/// median of their x-over-y extents, taken as 1 when it is within 3 % of 1 or when fewer than
/// [`CellSettings::min_cells`] candidates say otherwise. Red cells are round, so across many
/// cells (and the touching pairs among them, oriented every way) only non-square pixels — a
/// picture stretched to another aspect ratio — move it away from 1.
pub fn pixel_aspect(measured: &[PictureCells], s: &CellSettings) -> f64 {
    let mut ratios: Vec<f64> = measured
        .iter()
        .flat_map(|m| m.candidates.iter().map(Candidate::x_over_y))
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    if ratios.len() < s.min_cells.max(1) {
        return 1.0;
    }
    ratios.sort_by(f64::total_cmp);
    // A cell `D` µm across spans D/ux pixels along x and D/uy along y: x/y = uy/ux.
    let aspect = 1.0 / quantile(&ratios, 0.5);
    if (aspect - 1.0).abs() < 0.03 {
        1.0
    } else {
        aspect
    }
}

/// The diameters of a picture's red cells: its candidates that are round once the pixels'
/// `aspect` is undone.
pub fn round_diameters(m: &PictureCells, aspect: f64, s: &CellSettings) -> Vec<f64> {
    m.candidates
        .iter()
        .filter(|c| c.axis_ratio(aspect) <= s.max_axis_ratio)
        .map(|c| c.diameter_px)
        .collect()
}

/// The estimate from pictures measured earlier with [`measure_picture`] (module documentation,
/// step 6), with the pixels' aspect ratio ([`pixel_aspect`]).
pub fn estimate(measured: &[PictureCells], s: &CellSettings) -> Result<ScaleEstimate, ScaleError> {
    let aspect = pixel_aspect(measured, s);
    let mut all: Vec<f64> = measured
        .iter()
        .flat_map(|m| round_diameters(m, aspect, s))
        .collect();
    all.sort_by(f64::total_cmp);
    let first = quantile(&all, 0.5);
    let kept: Vec<f64> = all
        .iter()
        .copied()
        .filter(|&d| d >= 0.7 * first && d <= 1.4 * first)
        .collect();
    if kept.len() < s.min_cells.max(1) {
        return Err(ScaleError::TooFewCells {
            found: kept.len(),
            needed: s.min_cells.max(1),
            pictures: measured.len(),
            why: explain(measured, aspect, s),
        });
    }
    let median = quantile(&kept, 0.5);
    let (q1, q3) = (quantile(&kept, 0.25), quantile(&kept, 0.75));
    Ok(ScaleEstimate {
        um_per_px: RBC_DIAMETER_UM / median,
        method: ScaleMethod::RedCells,
        length_px: median,
        iqr_px: (q1, q3),
        iqr_um_per_px: (RBC_DIAMETER_UM / q3, RBC_DIAMETER_UM / q1),
        count: kept.len(),
        pictures: measured.len(),
        pixel_aspect: aspect,
    })
}

/// What the pictures showed instead of enough red cells, in words.
fn explain(measured: &[PictureCells], aspect: f64, s: &CellSettings) -> String {
    if measured.is_empty() {
        return "no pictures".into();
    }
    let flat = measured
        .iter()
        .filter(|m| m.contrast < s.min_contrast)
        .count();
    let mut r = Rejections::default();
    measured.iter().for_each(|m| r.add(&m.rejected));
    r.shape += measured
        .iter()
        .map(|m| m.candidates.len() - round_diameters(m, aspect, s).len())
        .sum::<usize>();
    let mut parts = Vec::new();
    if flat > 0 {
        parts.push(format!(
            "{flat} picture(s) without contrast between cells and background"
        ));
    }
    parts.push(format!(
        "left out: {} touching the border, {} smaller than {} px, {} too large (clumps), {} \
         stained (white cells), {} touching others or not round",
        r.border, r.small, s.min_diameter_px, r.large, r.stained, r.shape
    ));
    parts.join("; ")
}

/// The quality gate's nucleus rule: chroma at least `min_chroma`, hue 235°–345°.
fn is_stained([r, g, b]: [u8; 3], min_chroma: u8) -> bool {
    let max = r.max(g).max(b);
    let chroma = max - r.min(g).min(b);
    if chroma < min_chroma.max(1) {
        return false;
    }
    let (rf, gf, bf, c) = (r as f32, g as f32, b as f32, chroma as f32);
    let h = if max == r {
        (gf - bf) / c
    } else if max == g {
        (bf - rf) / c + 2.0
    } else {
        (rf - gf) / c + 4.0
    };
    let hue = (h * 60.0).rem_euclid(360.0);
    (235.0..=345.0).contains(&hue)
}

/// The green channel smoothed with the 3×3 binomial kernel (edges replicated).
fn smoothed_green(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let g: Vec<u16> = img.pixels().map(|p| u16::from(p.0[1])).collect();
    let mut horizontal = vec![0u16; w * h];
    for y in 0..h {
        let row = &g[y * w..(y + 1) * w];
        for x in 0..w {
            let l = row[x.saturating_sub(1)];
            let r = row[(x + 1).min(w - 1)];
            horizontal[y * w + x] = l + 2 * row[x] + r;
        }
    }
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        let up = &horizontal[y.saturating_sub(1) * w..][..w];
        let row = &horizontal[y * w..][..w];
        let down = &horizontal[(y + 1).min(h - 1) * w..][..w];
        for x in 0..w {
            out[y * w + x] = ((up[x] + 2 * row[x] + down[x] + 8) / 16) as u8;
        }
    }
    out
}

/// The first threshold and the class levels it separates.
struct Levels {
    threshold: f64,
    /// Median of the darker class.
    cells: f64,
    /// Median of the brighter class.
    background: f64,
}

/// Otsu's threshold on the unstained pixels, refined to the midpoint of the class medians.
/// `None` when every pixel is stained; a picture of one level has both classes at that level.
fn threshold(green: &[u8], stained: &[bool]) -> Option<Levels> {
    let mut hist = [0u64; 256];
    for (&g, &st) in green.iter().zip(stained) {
        if !st {
            hist[g as usize] += 1;
        }
    }
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let mut t = otsu(&hist, total);
    let medians = |t: usize| {
        (
            median_of(&hist[..=t]),
            median_of(&hist[t + 1..]).map(|m| m + t as f64 + 1.0),
        )
    };
    for _ in 0..20 {
        let (Some(below), Some(above)) = medians(t) else {
            break;
        };
        let next = ((below + above) / 2.0).floor().clamp(0.0, 254.0) as usize;
        if next == t {
            break;
        }
        t = next;
    }
    let (below, above) = medians(t);
    let single = median_of(&hist).unwrap_or(0.0);
    Some(Levels {
        threshold: t as f64,
        cells: below.or(above).unwrap_or(single),
        background: above.or(below).unwrap_or(single),
    })
}

/// Otsu's threshold of a histogram: the last level of the darker class.
fn otsu(hist: &[u64; 256], total: u64) -> usize {
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(v, &c)| v as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0) = (0.0f64, 0.0f64);
    let (mut best, mut best_t) = (-1.0f64, 127usize);
    for (t, &c) in hist.iter().enumerate().take(255) {
        w0 += c as f64;
        sum0 += t as f64 * c as f64;
        let w1 = total as f64 - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_t = t;
        }
    }
    best_t
}

/// The median level of a histogram slice (index units), `None` when it is empty.
fn median_of(hist: &[u64]) -> Option<f64> {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return None;
    }
    let half = n.div_ceil(2);
    let mut acc = 0;
    for (v, &c) in hist.iter().enumerate() {
        acc += c;
        if acc >= half {
            return Some(v as f64);
        }
    }
    None
}

/// Background not reachable from the border (4-connected) becomes foreground.
fn fill_holes(mask: &mut [bool], w: usize, h: usize) {
    let mut outside = vec![false; w * h];
    let mut stack = Vec::new();
    let seed = |i: usize, outside: &mut Vec<bool>, stack: &mut Vec<usize>| {
        if !mask[i] && !outside[i] {
            outside[i] = true;
            stack.push(i);
        }
    };
    for x in 0..w {
        seed(x, &mut outside, &mut stack);
        seed((h - 1) * w + x, &mut outside, &mut stack);
    }
    for y in 0..h {
        seed(y * w, &mut outside, &mut stack);
        seed(y * w + w - 1, &mut outside, &mut stack);
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % w, i / w);
        let mut visit = |j: usize| {
            if !mask[j] && !outside[j] {
                outside[j] = true;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < w {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - w);
        }
        if y + 1 < h {
            visit(i + w);
        }
    }
    for (m, o) in mask.iter_mut().zip(&outside) {
        if !*o {
            *m = true;
        }
    }
}

/// One connected component of the mask.
struct Component {
    pixels: Vec<usize>,
    touches_border: bool,
}

/// The 8-connected components of the mask.
fn components(mask: &[bool], w: usize, h: usize) -> Vec<Component> {
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut pixels = Vec::new();
        let mut touches_border = false;
        while let Some(i) = stack.pop() {
            pixels.push(i);
            let (x, y) = (i % w, i / w);
            if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
                touches_border = true;
            }
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if (dx, dy) == (0, 0) || nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(Component {
            pixels,
            touches_border,
        });
    }
    out
}

/// The second moments (x², y², xy) and the solidity of a component.
///
/// Solidity is the pixel count over the number of pixels the convex hull of the pixel centres
/// holds, by Pick's theorem `area + boundary / 2 + 1` with the hull's perimeter as its boundary
/// (exact for a lattice polygon with axis-parallel edges, close otherwise): a digital disc is
/// then ≈ 1 at any size, where the hull of the pixel squares would give small discs 0.9.
fn shape(pixels: &[usize], w: usize) -> ((f64, f64, f64), f64) {
    let n = pixels.len() as f64;
    let (mut sx, mut sy) = (0.0, 0.0);
    for &i in pixels {
        sx += (i % w) as f64;
        sy += (i / w) as f64;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut cxx, mut cyy, mut cxy) = (1.0 / 12.0, 1.0 / 12.0, 0.0);
    for &i in pixels {
        let (dx, dy) = ((i % w) as f64 - mx, (i / w) as f64 - my);
        cxx += dx * dx / n;
        cyy += dy * dy / n;
        cxy += dx * dy / n;
    }

    // Row extents → the extreme points of each row → convex hull (monotone chain).
    let y0 = pixels.iter().map(|&i| i / w).min().unwrap_or(0);
    let y1 = pixels.iter().map(|&i| i / w).max().unwrap_or(0);
    let mut rows = vec![(usize::MAX, 0usize); y1 - y0 + 1];
    for &i in pixels {
        let r = &mut rows[i / w - y0];
        r.0 = r.0.min(i % w);
        r.1 = r.1.max(i % w);
    }
    let mut points: Vec<(i64, i64)> = Vec::with_capacity(rows.len() * 2);
    for (k, &(a, b)) in rows.iter().enumerate() {
        if a == usize::MAX {
            continue;
        }
        let y = (y0 + k) as i64;
        points.push((a as i64, y));
        if b != a {
            points.push((b as i64, y));
        }
    }
    let hull = convex_hull(points);
    let (area2, perimeter) = polygon_area2_perimeter(&hull);
    let lattice_points = area2 as f64 / 2.0 + perimeter / 2.0 + 1.0;
    ((cxx, cyy, cxy), (n / lattice_points).min(1.0))
}

/// The ratio of the principal axes of second moments (x², y², xy).
fn axis_ratio(xx: f64, yy: f64, xy: f64) -> f64 {
    let mean = (xx + yy) / 2.0;
    let root = (((xx - yy) / 2.0).powi(2) + xy * xy).sqrt();
    ((mean + root) / (mean - root).max(1e-9)).sqrt()
}

/// The convex hull of points, counter-clockwise, without collinear points.
fn convex_hull(mut p: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    p.sort_unstable();
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(2 * p.len());
    for &pt in p.iter().chain(p.iter().rev().skip(1)) {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], pt) <= 0 {
            hull.pop();
        }
        hull.push(pt);
    }
    hull.pop();
    hull
}

/// Twice the area and the perimeter of a polygon (a point or a segment: area 0).
fn polygon_area2_perimeter(poly: &[(i64, i64)]) -> (i64, f64) {
    let n = poly.len();
    if n < 2 {
        return (0, 0.0);
    }
    let (mut a2, mut per) = (0i64, 0.0f64);
    for k in 0..n {
        let (p, q) = (poly[k], poly[(k + 1) % n]);
        a2 += p.0 * q.1 - q.0 * p.1;
        per += (((q.0 - p.0).pow(2) + (q.1 - p.1).pow(2)) as f64).sqrt();
    }
    (a2.abs(), per)
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::SyntheticField;
    use super::*;

    fn relative_error(estimate: f64, truth: f64) -> f64 {
        (estimate - truth).abs() / truth
    }

    #[test]
    fn known_diameters_are_recovered_within_three_percent() {
        for (d, w, h, cells) in [
            (12.0, 300, 220, 40),
            (20.0, 400, 300, 30),
            (35.0, 640, 480, 30),
            (60.0, 1000, 760, 25),
        ] {
            let pictures: Vec<RgbImage> = (0..3)
                .map(|seed| {
                    SyntheticField {
                        width: w,
                        height: h,
                        cells,
                        ..SyntheticField::new(d, seed)
                    }
                    .draw()
                })
                .collect();
            let e = estimate_from_pictures(&pictures, &CellSettings::default()).unwrap();
            assert!(
                relative_error(e.length_px, d) < 0.03,
                "diameter {d}: measured {e}"
            );
            assert!(
                relative_error(e.um_per_px, RBC_DIAMETER_UM / d) < 0.03,
                "{e}"
            );
            assert!(e.count >= 15, "{e}");
            assert!(e.iqr_px.0 <= e.length_px && e.length_px <= e.iqr_px.1);
        }
    }

    #[test]
    fn blur_noise_and_white_cells_do_not_move_the_estimate() {
        let d = 24.0;
        // A blur of σ = 2.5 px on a 24 px cell is a field far out of focus (the quality gate
        // rejects σ = 3 at 224 px): the edge and the pale centre merge and the cells measure up
        // to 5 % large; up to σ = 2 they stay within 3 %.
        for (blur, noise, white, tolerance) in [
            (0.3, 2.0, 0, 0.03),
            (2.0, 6.0, 2, 0.03),
            (1.5, 14.0, 4, 0.03),
            (2.5, 6.0, 2, 0.05),
        ] {
            let pictures: Vec<RgbImage> = (10..13)
                .map(|seed| {
                    SyntheticField {
                        blur_px: blur,
                        noise,
                        white_cells: white,
                        ..SyntheticField::new(d, seed)
                    }
                    .draw()
                })
                .collect();
            let e = estimate_from_pictures(&pictures, &CellSettings::default()).unwrap();
            assert!(
                relative_error(e.length_px, d) < tolerance,
                "blur {blur}, noise {noise}, {white} white cells: {e}"
            );
        }
    }

    #[test]
    fn the_pale_centre_is_filled_and_white_cells_are_left_out() {
        let img = SyntheticField {
            cells: 12,
            white_cells: 3,
            diameter_spread: 0.0,
            ..SyntheticField::new(30.0, 5)
        }
        .draw();
        let m = measure_picture(&img, &CellSettings::default());
        assert!(m.rejected.stained >= 1, "{:?}", m.rejected);
        // Without filling, a pale centre would leave a ring: its area (and diameter) smaller.
        let d = round_diameters(&m, 1.0, &CellSettings::default());
        assert!(!d.is_empty());
        for d in &d {
            assert!((d - 30.0).abs() < 2.0, "{d:?}");
        }
    }

    #[test]
    fn pictures_squeezed_to_another_aspect_ratio_are_recognised() {
        // 4:3 fields squeezed into squares, as the Taleqani pictures were: cells 3/4 as wide as
        // high, pixels 4/3 as wide as high; the pixel size is then the geometric mean.
        let d = 28.0;
        let pictures: Vec<RgbImage> = (20..24)
            .map(|seed| {
                let wide = SyntheticField {
                    width: 480,
                    height: 360,
                    cells: 40,
                    ..SyntheticField::new(d, seed)
                }
                .draw();
                image::imageops::resize(&wide, 360, 360, image::imageops::FilterType::Triangle)
            })
            .collect();
        let e = estimate_from_pictures(&pictures, &CellSettings::default()).unwrap();
        assert!(relative_error(e.pixel_aspect, 4.0 / 3.0) < 0.05, "{e}");
        let geometric = RBC_DIAMETER_UM / (d * 0.75f64.sqrt());
        assert!(relative_error(e.um_per_px, geometric) < 0.03, "{e}");
        assert!(e.to_string().contains("stretched"), "{e}");
    }

    #[test]
    fn the_same_pictures_give_the_same_estimate() {
        let pictures: Vec<RgbImage> = (0..2)
            .map(|s| SyntheticField::new(18.0, s).draw())
            .collect();
        let a = estimate_from_pictures(&pictures, &CellSettings::default()).unwrap();
        let b = estimate_from_pictures(&pictures, &CellSettings::default()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn too_few_cells_is_an_error_saying_why() {
        let blank = RgbImage::from_pixel(200, 150, image::Rgb([236, 232, 238]));
        let e = estimate_from_pictures([&blank], &CellSettings::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("too few red cells") && text.contains("without contrast"),
            "{text}"
        );
        // Three cells are not enough.
        let sparse = SyntheticField {
            cells: 3,
            white_cells: 0,
            ..SyntheticField::new(20.0, 3)
        }
        .draw();
        let e = estimate_from_pictures([&sparse], &CellSettings::default()).unwrap_err();
        assert!(
            matches!(e, ScaleError::TooFewCells { found, needed: 10, pictures: 1, .. } if found <= 3),
            "{e}"
        );
        // A field crowded with touching cells: rejected as clumps, not measured wrong.
        let crowded = SyntheticField {
            cells: 400,
            white_cells: 0,
            ..SyntheticField::new(20.0, 4)
        }
        .draw();
        match estimate_from_pictures([&crowded], &CellSettings::default()) {
            Err(e) => assert!(e.to_string().contains("touching others"), "{e}"),
            Ok(e) => assert!(relative_error(e.length_px, 20.0) < 0.05, "{e}"),
        }
        assert!(estimate_from_pictures([], &CellSettings::default()).is_err());
        let tiny = RgbImage::new(2, 2);
        assert!(
            measure_picture(&tiny, &CellSettings::default())
                .candidates
                .is_empty()
        );
    }

    #[test]
    fn convex_hull_and_solidity_of_simple_shapes() {
        // A 10×10 square: solidity 1, axis ratio 1.
        let w = 20;
        let square: Vec<usize> = (5..15)
            .flat_map(|y| (5..15).map(move |x| y * w + x))
            .collect();
        let ((xx, yy, xy), solidity) = shape(&square, w);
        let ratio = axis_ratio(xx, yy, xy);
        assert!((ratio - 1.0).abs() < 1e-9 && (solidity - 1.0).abs() < 1e-9);
        // An L shape: far from convex.
        let l: Vec<usize> = (0..10)
            .flat_map(|y| (0..10).map(move |x| (y, x)))
            .filter(|&(y, x)| x < 3 || y >= 7)
            .map(|(y, x)| y * w + x)
            .collect();
        assert!(shape(&l, w).1 < CellSettings::default().min_solidity);
        // Two discs side by side: elongated.
        let two: Vec<usize> = (0..10)
            .flat_map(|y| (0..20).map(move |x| (y, x)))
            .filter(|&(y, x)| {
                let (fy, fx) = (y as f64 - 4.5, x as f64);
                (fx - 4.5).powi(2) + fy * fy <= 25.0 || (fx - 13.5).powi(2) + fy * fy <= 25.0
            })
            .map(|(y, x)| y * w + x)
            .collect();
        let ((xx, yy, xy), _) = shape(&two, w);
        assert!(axis_ratio(xx, yy, xy) > 1.5);
    }
}
