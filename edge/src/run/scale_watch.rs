//! Is the declared pixel size still right? The red cells of a session's first frames against
//! the configured `[source] um_per_px`: a changed objective, a camera moved to another
//! microscope or a wrong config line shows as a disagreement, warned about once per session
//! (log, and a `NOTICE code=scale_mismatch` on every output).
//!
//! Cheap: at most [`FRAMES`] frames of a session are measured
//! ([`leukoscope_model::scale::cells`], a few milliseconds each), and only until
//! [`ENOUGH_CELLS`] red cells were found; after that the session's frames are not looked at.

use image::RgbImage;
use leukoscope_model::scale::cells::{CellSettings, PictureCells, estimate, measure_picture};

/// Frames of a session measured at most.
pub const FRAMES: usize = 5;
/// Red cells that settle the estimate early.
pub const ENOUGH_CELLS: usize = 40;
/// The largest disagreement tolerated: 25 % larger or smaller.
pub const TOLERANCE: f64 = 1.25;

/// The check for one configured pixel size.
pub struct ScaleWatch {
    configured: f64,
    settings: CellSettings,
    measured: Vec<PictureCells>,
    done: bool,
}

impl ScaleWatch {
    /// A watch on `configured` µm/px.
    pub fn new(configured: f64) -> Self {
        ScaleWatch {
            configured,
            settings: CellSettings::default(),
            measured: Vec::new(),
            done: false,
        }
    }

    /// Starts over: a new session.
    pub fn reset(&mut self) {
        self.measured.clear();
        self.done = false;
    }

    /// Looks at a frame of the session; returns the warning, once, when the frames' red cells
    /// disagree with the configured pixel size by more than [`TOLERANCE`].
    pub fn observe(&mut self, frame: &RgbImage) -> Option<String> {
        if self.done {
            return None;
        }
        self.measured.push(measure_picture(frame, &self.settings));
        let cells: usize = self.measured.iter().map(|m| m.candidates.len()).sum();
        if cells < ENOUGH_CELLS && self.measured.len() < FRAMES {
            return None;
        }
        self.done = true;
        let measured = std::mem::take(&mut self.measured);
        match estimate(&measured, &self.settings) {
            Ok(e) if e.disagreement(self.configured) > TOLERANCE => Some(format!(
                "the red cells of this session's first {} frame(s) give {:.3} µm/px ({} cells), \
                 {:.0} % {} the configured [source] um_per_px = {}: is another objective in \
                 place? Measure again with `edge calibrate`",
                measured.len(),
                e.um_per_px,
                e.count,
                (e.disagreement(self.configured) - 1.0) * 100.0,
                if e.um_per_px > self.configured {
                    "above"
                } else {
                    "below"
                },
                self.configured
            )),
            Ok(e) => {
                tracing::debug!(
                    "pixel size check: the red cells give {:.3} µm/px, configured {}",
                    e.um_per_px,
                    self.configured
                );
                None
            }
            Err(e) => {
                tracing::debug!("pixel size check not possible this session: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leukoscope_model::scale::synthetic::SyntheticField;

    fn frame(diameter: f64, seed: u64) -> RgbImage {
        SyntheticField {
            width: 480,
            height: 360,
            cells: 40,
            ..SyntheticField::new(diameter, seed)
        }
        .draw()
    }

    #[test]
    fn warns_once_per_session_when_the_cells_disagree() {
        // Cells 25 px across: 0.3 µm/px. Configured 0.45: 50 % off.
        let mut watch = ScaleWatch::new(0.45);
        let warnings: Vec<String> = (0..8)
            .filter_map(|s| watch.observe(&frame(25.0, s)))
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("0.45") && warnings[0].contains("edge calibrate"));
        watch.reset();
        assert!(
            (0..8)
                .filter_map(|s| watch.observe(&frame(25.0, s)))
                .count()
                == 1
        );
        // Within 25 %: no warning.
        let mut close = ScaleWatch::new(0.33);
        assert!((0..8).all(|s| close.observe(&frame(25.0, s)).is_none()));
        // No red cells: no warning either, and it stops looking after five frames.
        let mut blank = ScaleWatch::new(0.45);
        let empty = RgbImage::from_pixel(64, 64, image::Rgb([236, 232, 238]));
        assert!((0..8).all(|_| blank.observe(&empty).is_none()));
        assert!(blank.done);
    }
}
