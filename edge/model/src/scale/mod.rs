//! Physical scale: how many micrometres one pixel of a picture spans (µm/px), measured from the
//! picture itself, and model-scale fields cut from a frame of a declared scale.
//!
//! A model learns cells at the size they had in its training pictures. A microscope with another
//! objective or camera shows them larger or smaller, and the model answers those pictures as
//! confidently as its own while being far more often wrong (issue 19: 2× magnification took the
//! shipped model from 98 % to 54 % right, 7.5 % confidently wrong). So the model contract carries
//! the training pictures' pixel size (`leukoscope.um_per_px`), the device declares its camera's
//! (`[source] um_per_px`), and every frame is resampled to the model's pixel size before the gate
//! and the model see it ([`fields`]).
//!
//! Two ways to measure a pixel size:
//!
//! - [`cells`]: from the **red blood cells** of ordinary smear pictures. A normal red cell is
//!   about [`RBC_DIAMETER_UM`] = 7.5 µm across (the normal range is 7–8 µm, reference value
//!   7.5–7.8 µm; e.g. Bain, *Blood Cells: A Practical Guide*, 5th ed., ch. 3; Hoffbrand & Moss,
//!   *Essential Haematology*: "approximately 8 µm"; Wintrobe's Clinical Hematology gives a mean of
//!   7.5 µm in dried, stained films). The median equivalent-circle diameter of the round,
//!   isolated red cells of a few pictures, in pixels, divides 7.5 µm. Anaemias change red-cell
//!   size (microcytes 6 µm, macrocytes 9 µm), so the estimate carries ±7 % from the constant
//!   alone, and more on the slide of a patient with a red-cell disorder: calibrate on a normal
//!   slide when you can, or with a stage micrometer.
//! - [`micrometer`]: from a picture of a **stage micrometer** (a ruler with a known division,
//!   usually 10 µm): the line spacing in pixels from the autocorrelation of the projected
//!   intensity profile. This is the exact method; the red cells are the one that needs no
//!   equipment and can be checked on every slide.

pub mod cells;
pub mod dataset;
pub mod fields;
pub mod micrometer;
pub mod synthetic;

use serde::Serialize;
use thiserror::Error;

/// The diameter of a normal red blood cell in a dried, stained blood film, in micrometres: the
/// centre of the normal range 7–8 µm (see the module documentation for the sources).
pub const RBC_DIAMETER_UM: f64 = 7.5;

/// The lowest and highest normal red-cell diameter, µm: the spread the constant itself carries.
pub const RBC_DIAMETER_RANGE_UM: (f64, f64) = (7.0, 8.0);

/// The smallest and largest pixel size a declared or measured scale may have, µm/px: a light
/// microscope resolves about 0.2 µm, and at 20 µm/px a red cell is under half a pixel.
pub const UM_PER_PX_RANGE: (f64, f64) = (0.01, 20.0);

/// A scale could not be measured or is not usable.
#[derive(Debug, Error, PartialEq)]
pub enum ScaleError {
    /// Too few red cells were found to measure.
    #[error(
        "too few red cells to measure the scale: {found} round, isolated red cells found in \
         {pictures} picture(s), at least {needed} needed ({why})"
    )]
    TooFewCells {
        /// Cells kept.
        found: usize,
        /// Cells needed.
        needed: usize,
        /// Pictures looked at.
        pictures: usize,
        /// What was seen instead, in words.
        why: String,
    },
    /// No periodic line pattern in a stage-micrometer picture.
    #[error("no stage-micrometer lines found: {0}")]
    NoRuler(String),
    /// A pixel size that is not a positive number in the usable range.
    #[error("{what} = {value} µm/px is not a usable pixel size (expected {min}..{max})")]
    OutOfRange {
        /// Which value (a config key, a flag, a metadata key).
        what: String,
        /// The value.
        value: f64,
        /// The smallest usable value.
        min: f64,
        /// The largest usable value.
        max: f64,
    },
}

/// Checks a declared pixel size: finite, positive and within [`UM_PER_PX_RANGE`]; `what` names
/// it in the error (`[source] um_per_px`, `--um-per-px`, `leukoscope.um_per_px`).
pub fn check_um_per_px(what: &str, value: f64) -> Result<(), ScaleError> {
    let (min, max) = UM_PER_PX_RANGE;
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ScaleError::OutOfRange {
            what: what.to_string(),
            value,
            min,
            max,
        })
    }
}

/// How a scale was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleMethod {
    /// The median diameter of red blood cells ([`cells`]).
    RedCells,
    /// The line spacing of a stage micrometer ([`micrometer`]).
    Micrometer,
}

/// A measured pixel size, with what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleEstimate {
    /// Micrometres per pixel.
    pub um_per_px: f64,
    /// The method.
    pub method: ScaleMethod,
    /// The measured length in pixels: the median red-cell diameter, or the micrometer's
    /// division spacing.
    pub length_px: f64,
    /// The interquartile range of that length in pixels (red cells: the 25th and 75th
    /// percentile of the diameters; micrometer: the spread of the single periods).
    pub iqr_px: (f64, f64),
    /// The same spread expressed as µm/px (the pixel size each end of the IQR would give;
    /// the low end of µm/px comes from the large end of the lengths).
    pub iqr_um_per_px: (f64, f64),
    /// Red cells measured (micrometer: the divisions the spacing was fitted over).
    pub count: usize,
    /// Pictures looked at.
    pub pictures: usize,
    /// A pixel's width over its height, as the round red cells show it (1: square pixels, and
    /// always 1 from a micrometer). Not 1 when the pictures were stretched to another aspect
    /// ratio (e.g. 4:3 photographs squeezed into squares: 1.33). `um_per_px` is then the
    /// geometric mean √(width·height) of a pixel.
    pub pixel_aspect: f64,
}

impl ScaleEstimate {
    /// The relative spread of the estimate: half the IQR over the median, e.g. 0.05 for ±5 %.
    pub fn relative_spread(&self) -> f64 {
        (self.iqr_px.1 - self.iqr_px.0) / (2.0 * self.length_px)
    }

    /// How much `declared` differs from this estimate, as a ratio ≥ 1 (1.3: 30 % larger or
    /// smaller).
    pub fn disagreement(&self, declared: f64) -> f64 {
        let r = declared / self.um_per_px;
        if r >= 1.0 { r } else { 1.0 / r }
    }
}

impl std::fmt::Display for ScaleEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.method {
            ScaleMethod::RedCells => write!(
                f,
                "{:.4} µm/px (IQR {:.4}–{:.4}) from {} red cells in {} picture(s): median \
                 diameter {:.2} px (IQR {:.2}–{:.2}) = {RBC_DIAMETER_UM} µm{}",
                self.um_per_px,
                self.iqr_um_per_px.0,
                self.iqr_um_per_px.1,
                self.count,
                self.pictures,
                self.length_px,
                self.iqr_px.0,
                self.iqr_px.1,
                if self.pixel_aspect == 1.0 {
                    String::new()
                } else {
                    format!(
                        "; pixels {:.3} times wider than high (cells {:.1} % narrower across \
                         than down: the pictures were stretched)",
                        self.pixel_aspect,
                        (1.0 - 1.0 / self.pixel_aspect) * 100.0
                    )
                }
            ),
            ScaleMethod::Micrometer => write!(
                f,
                "{:.4} µm/px from a stage micrometer: {} divisions, {:.3} px per division \
                 (single periods {:.3}–{:.3})",
                self.um_per_px, self.count, self.length_px, self.iqr_px.0, self.iqr_px.1
            ),
        }
    }
}

/// The `q`-quantile (0..1) of sorted values, linearly interpolated; `NaN` when empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let i = pos.floor() as usize;
            let frac = pos - i as f64;
            if i + 1 < n {
                sorted[i] * (1.0 - frac) + sorted[i + 1] * frac
            } else {
                sorted[n - 1]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.25), 2.0);
        assert_eq!(quantile(&v, 0.125), 1.5);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn declared_scales_are_checked() {
        assert!(check_um_per_px("x", 0.33).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 100.0] {
            let e = check_um_per_px("[source] um_per_px", bad).unwrap_err();
            assert!(e.to_string().contains("[source] um_per_px"), "{e}");
        }
    }

    #[test]
    fn disagreement_is_symmetric() {
        let e = ScaleEstimate {
            um_per_px: 0.4,
            method: ScaleMethod::RedCells,
            length_px: 18.75,
            iqr_px: (18.0, 19.5),
            iqr_um_per_px: (0.385, 0.417),
            count: 50,
            pictures: 2,
            pixel_aspect: 1.0,
        };
        assert!((e.disagreement(0.5) - 1.25).abs() < 1e-12);
        assert!((e.disagreement(0.32) - 1.25).abs() < 1e-12);
        assert!((e.relative_spread() - 0.04).abs() < 1e-12);
    }
}
