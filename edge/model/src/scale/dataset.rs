//! The pixel size of a set of picture files (a training split, a camera's frames), from their red
//! cells: what `trainer export` records as `leukoscope.um_per_px` and `edge calibrate` prints.

use std::path::{Path, PathBuf};

use super::cells::{
    CellSettings, PictureCells, Rejections, estimate, measure_picture, round_diameters,
};
use super::{RBC_DIAMETER_UM, ScaleError, ScaleEstimate, quantile};

/// The red-cell estimate over picture files, with how it varies from picture to picture.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesScale {
    /// The estimate over every kept cell of every picture.
    pub estimate: ScaleEstimate,
    /// Pictures measured (decoded).
    pub measured: usize,
    /// Pictures that gave at least [`PER_PICTURE_MIN_CELLS`] cells: the per-picture figures
    /// below are over these.
    pub with_cells: usize,
    /// 25th, 50th and 75th percentile of the per-picture µm/px.
    pub per_picture_um_per_px: (f64, f64, f64),
    /// Files that could not be decoded, with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Components left out, by reason, over all pictures.
    pub rejected: Rejections,
}

/// A picture counts in the per-picture spread when it has at least this many cells.
pub const PER_PICTURE_MIN_CELLS: usize = 3;

/// Up to `limit` of `files`, evenly spread over the list (every k-th), in order.
pub fn spread(files: &[PathBuf], limit: usize) -> Vec<PathBuf> {
    if files.len() <= limit || limit == 0 {
        return files.to_vec();
    }
    (0..limit)
        .map(|i| files[i * files.len() / limit].clone())
        .collect()
}

/// Measures the red cells of `files` (decoded with the one decoder; undecodable files are
/// skipped and listed) and estimates the pixel size of the pictures over all of them.
pub fn measure_files(files: &[PathBuf], s: &CellSettings) -> Result<FilesScale, ScaleError> {
    measure(files, s, None)
}

/// The pixel size of a **model's input** whose training pictures are `files`: each picture's
/// red cells measured at full resolution, their diameters converted to the input's pixels the
/// way `leukoscope_model::preprocess` frames a picture (centre crop to the input's aspect
/// ratio, then resize to `input_width × input_height`). For 224 px pictures and a 224 px model
/// this is the pictures' own pixel size; a 128 px model of the same pictures has pixels
/// 224/128 times larger. This is what `leukoscope.um_per_px` means.
pub fn measure_files_at_input(
    files: &[PathBuf],
    s: &CellSettings,
    input_width: u32,
    input_height: u32,
) -> Result<FilesScale, ScaleError> {
    measure(files, s, Some((input_width, input_height)))
}

fn measure(
    files: &[PathBuf],
    s: &CellSettings,
    input: Option<(u32, u32)>,
) -> Result<FilesScale, ScaleError> {
    let mut measured: Vec<PictureCells> = Vec::new();
    let mut skipped = Vec::new();
    for f in files {
        match crate::preprocess::decode_image(f) {
            Ok(img) => {
                let mut cells = measure_picture(&img, s);
                if let Some((iw, ih)) = input {
                    let factor = input_factor(img.width(), img.height(), iw, ih);
                    for c in &mut cells.candidates {
                        c.diameter_px *= factor;
                        let f2 = factor * factor;
                        c.moments = (c.moments.0 * f2, c.moments.1 * f2, c.moments.2 * f2);
                    }
                }
                measured.push(cells);
            }
            Err(e) => skipped.push((f.clone(), e.to_string())),
        }
    }
    let estimate = estimate(&measured, s)?;
    Ok(summarize(estimate, &measured, skipped, s))
}

/// How much a `width × height` picture is scaled when framed to a `input_width × input_height`
/// input: the centre crop to the input's aspect ratio, then the resize.
pub fn input_factor(width: u32, height: u32, input_width: u32, input_height: u32) -> f64 {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let aspect = f64::from(input_width.max(1)) / f64::from(input_height.max(1));
    let crop_w = w.min(h * aspect);
    f64::from(input_width.max(1)) / crop_w
}

/// The estimate with its per-picture spread.
pub fn summarize(
    estimate: ScaleEstimate,
    measured: &[PictureCells],
    skipped: Vec<(PathBuf, String)>,
    s: &CellSettings,
) -> FilesScale {
    let mut per: Vec<f64> = measured
        .iter()
        .map(|m| round_diameters(m, estimate.pixel_aspect, s))
        .filter(|d| d.len() >= PER_PICTURE_MIN_CELLS)
        .map(|mut d| {
            d.sort_by(f64::total_cmp);
            RBC_DIAMETER_UM / quantile(&d, 0.5)
        })
        .collect();
    per.sort_by(f64::total_cmp);
    let mut rejected = Rejections::default();
    measured.iter().for_each(|m| rejected.add(&m.rejected));
    FilesScale {
        rejected,
        estimate,
        measured: measured.len(),
        with_cells: per.len(),
        per_picture_um_per_px: (
            quantile(&per, 0.25),
            quantile(&per, 0.5),
            quantile(&per, 0.75),
        ),
        skipped,
    }
}

impl std::fmt::Display for FilesScale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.estimate)?;
        if self.with_cells > 0 {
            write!(
                f,
                "; per picture ({} of {} with ≥ {PER_PICTURE_MIN_CELLS} cells): median {:.4} \
                 µm/px, IQR {:.4}–{:.4}",
                self.with_cells,
                self.measured,
                self.per_picture_um_per_px.1,
                self.per_picture_um_per_px.0,
                self.per_picture_um_per_px.2
            )?;
        }
        Ok(())
    }
}

/// The picture files of a manifest's `split`, relative to `data` (digests are not checked here:
/// a scale measurement does not depend on the split being unchanged, and the caller checks them
/// where it matters).
pub fn manifest_files(
    manifest: &Path,
    data: &Path,
    split: crate::manifest::Split,
) -> Result<Vec<PathBuf>, crate::manifest::ManifestError> {
    Ok(crate::manifest::read(manifest)?
        .into_iter()
        .filter(|r| r.split == split)
        .map(|r| data.join(r.file))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::SyntheticField;
    use super::*;

    #[test]
    fn files_are_measured_and_bad_ones_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for seed in 0..3 {
            let p = dir.path().join(format!("f{seed}.png"));
            SyntheticField::new(22.0, seed).draw().save(&p).unwrap();
            files.push(p);
        }
        let bad = dir.path().join("bad.jpg");
        std::fs::write(&bad, b"not a picture").unwrap();
        files.push(bad.clone());
        let r = measure_files(&files, &CellSettings::default()).unwrap();
        assert_eq!(r.measured, 3);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].0, bad);
        assert!((r.estimate.length_px - 22.0).abs() / 22.0 < 0.03, "{r}");
        assert_eq!(r.with_cells, 3);
        let (lo, mid, hi) = r.per_picture_um_per_px;
        assert!(lo <= mid && mid <= hi);
        assert!(r.to_string().contains("per picture"));
    }

    #[test]
    fn the_input_scale_follows_the_framing() {
        assert_eq!(input_factor(224, 224, 224, 224), 1.0);
        assert_eq!(input_factor(224, 224, 112, 112), 0.5);
        // A wide picture is cropped to its centre square first.
        assert_eq!(input_factor(640, 480, 240, 240), 0.5);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.png");
        SyntheticField::new(20.0, 1).draw().save(&p).unwrap();
        let files = vec![p];
        let full = measure_files(&files, &CellSettings::default()).unwrap();
        // 400x300 framed to 150x150: cells are half as many pixels across.
        let input = measure_files_at_input(&files, &CellSettings::default(), 150, 150).unwrap();
        assert!((input.estimate.um_per_px / full.estimate.um_per_px - 2.0).abs() < 1e-9);
    }

    #[test]
    fn spread_takes_every_kth() {
        let files: Vec<PathBuf> = (0..10).map(|i| PathBuf::from(i.to_string())).collect();
        let s = spread(&files, 3);
        assert_eq!(
            s,
            vec![PathBuf::from("0"), PathBuf::from("3"), PathBuf::from("6")]
        );
        assert_eq!(spread(&files, 20).len(), 10);
    }
}
