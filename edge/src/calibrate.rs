//! `edge calibrate`: the camera's pixel size (µm/px), measured from the red cells of a few frames
//! or from a stage micrometer, and the config line that declares it (`[source] um_per_px`).
//!
//! Frames come from picture files, or from a source (`--source SPEC`, else the config's:
//! a camera, an MJPEG stream on stdin, a watched folder), `--frames N` of them (default 5).
//! Red cells: [`leukoscope_model::scale::cells`]; micrometer:
//! [`leukoscope_model::scale::micrometer`]. With both, the micrometer's figure is the one to
//! paste (it is exact; the red cells carry the ±7 % of normal red-cell sizes) and the two are
//! compared.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::RgbImage;
use leukoscope_model::preprocess::{decode_image, decode_image_bytes};
use leukoscope_model::scale::cells::{CellSettings, measure_picture};
use leukoscope_model::scale::dataset::{FilesScale, summarize};
use leukoscope_model::scale::micrometer::estimate_from_micrometer;
use leukoscope_model::scale::{ScaleError, ScaleEstimate};

use crate::config::RunConfig;
use crate::source::{FrameData, FramePolicy, SourceEvent, SourceSpec};

/// `edge calibrate` could not estimate a scale.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// No frames could be read.
    #[error("{0}")]
    Frames(String),
    /// The frames or the micrometer picture did not give a scale.
    #[error("{what}: {source}")]
    Scale {
        /// What was measured (the frames, the micrometer file).
        what: String,
        /// Why it failed.
        source: ScaleError,
    },
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct CalibrateRequest {
    /// Picture files (folders expanded); empty: frames from `source`.
    pub files: Vec<PathBuf>,
    /// The source to take frames from when there are no files.
    pub source: Option<String>,
    /// Frames (or pictures) to measure.
    pub frames: usize,
    /// Seconds to wait for the frames of a live source.
    pub timeout: Duration,
    /// A stage-micrometer picture and its division in µm.
    pub micrometer: Option<(PathBuf, f64)>,
}

/// What came out.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The red-cell estimate over the frames (none without frames or with too few cells when a
    /// micrometer gave the scale).
    pub cells: Option<FilesScale>,
    /// Why the red cells gave no estimate, when a micrometer did.
    pub cells_error: Option<String>,
    /// The micrometer's estimate.
    pub micrometer: Option<ScaleEstimate>,
    /// The configured `[source] um_per_px`, to compare with.
    pub configured: Option<f64>,
}

impl Calibration {
    /// The pixel size to declare: the micrometer's, else the red cells'.
    pub fn um_per_px(&self) -> f64 {
        match (&self.micrometer, &self.cells) {
            (Some(m), _) => m.um_per_px,
            (None, Some(c)) => c.estimate.um_per_px,
            (None, None) => f64::NAN,
        }
    }

    /// The lines to paste into the device config.
    pub fn config_lines(&self) -> String {
        format!("[source]\num_per_px = {:.4}", self.um_per_px())
    }

    /// The report printed by `edge calibrate`.
    pub fn report(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.cells {
            out.push_str(&format!("red cells: {c}\n"));
            if c.estimate.pixel_aspect != 1.0 {
                out.push_str(&format!(
                    "warning: the red cells look {:.0} % narrower across than down: the camera's \
                     pixels are not square or its pictures are stretched; um_per_px is the \
                     geometric mean of a pixel's width and height, and edge resamples a camera's \
                     frames as if its pixels were square\n",
                    (1.0 - 1.0 / c.estimate.pixel_aspect).abs() * 100.0
                ));
            }
            if c.estimate.relative_spread() > 0.15 {
                out.push_str(
                    "warning: the red cells vary more than usual (IQR beyond ±15 %): frames of \
                     several magnifications, or a slide with abnormal red cells; measure a \
                     normal slide or a stage micrometer\n",
                );
            }
        }
        if let Some(e) = &self.cells_error {
            out.push_str(&format!("red cells: {e}\n"));
        }
        if let Some(m) = &self.micrometer {
            out.push_str(&format!("micrometer: {m}\n"));
            if let Some(c) = &self.cells {
                let d = c.estimate.disagreement(m.um_per_px);
                out.push_str(&format!(
                    "the red cells give {:.4} µm/px, {:.1} % {} the micrometer\n",
                    c.estimate.um_per_px,
                    (d - 1.0) * 100.0,
                    if c.estimate.um_per_px > m.um_per_px {
                        "above"
                    } else {
                        "below"
                    }
                ));
            }
        }
        if let Some(u) = self.configured {
            let ratio = u / self.um_per_px();
            out.push_str(&format!(
                "the config declares um_per_px = {u} ({:+.1} % from this measurement)\n",
                (ratio - 1.0) * 100.0
            ));
        }
        out.push_str("paste into the device config:\n");
        out.push_str(&self.config_lines());
        out.push('\n');
        out
    }
}

/// Runs the measurement: frames (files or the source), their red cells, the micrometer.
pub fn calibrate(
    config: &RunConfig,
    req: &CalibrateRequest,
) -> Result<Calibration, CalibrateError> {
    let micrometer = match &req.micrometer {
        Some((path, division)) => {
            let img = decode_image(path).map_err(|e| CalibrateError::Frames(e.to_string()))?;
            Some(estimate_from_micrometer(&img, *division).map_err(|source| {
                CalibrateError::Scale {
                    what: path.display().to_string(),
                    source,
                }
            })?)
        }
        None => None,
    };
    let want_frames = !req.files.is_empty() || req.source.is_some() || micrometer.is_none();
    let (mut cells, mut cells_error) = (None, None);
    if want_frames {
        let (frames, skipped) = collect_frames(config, req)?;
        let settings = CellSettings::default();
        let measured: Vec<_> = frames
            .iter()
            .map(|f| measure_picture(f, &settings))
            .collect();
        match leukoscope_model::scale::cells::estimate(&measured, &settings) {
            Ok(e) => cells = Some(summarize(e, &measured, skipped, &settings)),
            Err(source) if micrometer.is_some() => cells_error = Some(source.to_string()),
            Err(source) => {
                return Err(CalibrateError::Scale {
                    what: format!("{} frame(s)", frames.len()),
                    source,
                });
            }
        }
    }
    Ok(Calibration {
        cells,
        cells_error,
        micrometer,
        configured: config.source.um_per_px,
    })
}

/// Files that could not be read, with why.
type Skipped = Vec<(PathBuf, String)>;

/// Up to `req.frames` decoded frames, from the files or the source; undecodable files listed.
fn collect_frames(
    config: &RunConfig,
    req: &CalibrateRequest,
) -> Result<(Vec<RgbImage>, Skipped), CalibrateError> {
    let n = req.frames.max(1);
    if !req.files.is_empty() {
        let files = leukoscope_model::images::expand_paths(&req.files);
        let chosen = leukoscope_model::scale::dataset::spread(&files, n);
        let (mut frames, mut skipped) = (Vec::new(), Vec::new());
        for f in chosen {
            match decode_image(&f) {
                Ok(img) => frames.push(img),
                Err(e) => skipped.push((f, e.to_string())),
            }
        }
        if frames.is_empty() {
            return Err(CalibrateError::Frames(format!(
                "no picture could be read from {:?}{}",
                req.files,
                skipped
                    .first()
                    .map_or(String::new(), |(_, e)| format!(" ({e})"))
            )));
        }
        return Ok((frames, skipped));
    }
    let spec_text = req
        .source
        .clone()
        .unwrap_or_else(|| config.source.spec.clone());
    let spec: SourceSpec = spec_text
        .parse()
        .map_err(|e| CalibrateError::Frames(format!("source {spec_text}: {e}")))?;
    let policy = FramePolicy::default_for(&spec);
    let source = crate::source::open_with_policy(&spec, &config.source.options, policy)
        .map_err(|e| CalibrateError::Frames(format!("source {spec_text}: {e}")))?;
    let deadline = Instant::now() + req.timeout;
    let mut frames = Vec::new();
    while frames.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match source.recv_timeout(left) {
            Ok(SourceEvent::Frame(frame)) => match &frame.data {
                FrameData::Encoded(bytes) => {
                    if let Ok(img) = decode_image_bytes(bytes) {
                        frames.push(img);
                    }
                }
                FrameData::Rgb(img) => frames.push(img.clone()),
            },
            Ok(SourceEvent::End) => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    source.stop();
    if frames.is_empty() {
        return Err(CalibrateError::Frames(format!(
            "source {spec_text} gave no frame within {} s",
            req.timeout.as_secs()
        )));
    }
    Ok((frames, Vec::new()))
}

/// Checks a micrometer division (`--division-um`): a positive length in µm.
pub fn check_division(division_um: f64) -> Result<(), String> {
    if division_um.is_finite() && division_um > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "--division-um {division_um}: a micrometer division is a positive length in µm"
        ))
    }
}
