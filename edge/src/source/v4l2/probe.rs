//! `edge check`'s look at a camera: [`probe`] opens it as `edge run` does (format, frame rate,
//! the controls of `[source.options]`), grabs a few frames to measure the rate it delivers, and
//! reads back the controls it offers with their values.

use std::path::Path;

use super::PixelFormat;
use crate::source::{SourceError, SourceOptions};

/// What a camera delivers and offers.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraProbe {
    /// The pixel format in use.
    pub format: PixelFormat,
    /// Frame width the driver set.
    pub width: u32,
    /// Frame height the driver set.
    pub height: u32,
    /// Frames per second measured between the first and the last grabbed frame.
    pub measured_fps: f64,
    /// Every control the camera offers (buttons and control classes left out), with its value
    /// after the configured controls were set.
    pub controls: Vec<ControlInfo>,
}

/// One control a camera offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlInfo {
    /// Its `v4l2-ctl` name (`white_balance_temperature`), the name `controls` takes.
    pub name: String,
    /// Its V4L2 id.
    pub id: u32,
    /// Its current value (0/1 for a switch, the index for a menu); none when it cannot be read
    /// (e.g. write-only).
    pub value: Option<i64>,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
}

impl CameraProbe {
    /// The controls as `name=value [min..max]`, comma-separated (`name=? […]` when unreadable).
    pub fn controls_text(&self) -> String {
        self.controls
            .iter()
            .map(|c| {
                let value = c.value.map_or_else(|| "?".to_string(), |v| v.to_string());
                format!("{}={value} [{}..{}]", c.name, c.min, c.max)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Opens the camera at `path`, sets it up from `options` (format, size, rate and controls, as
/// `edge run` does: a control the camera lacks or refuses is an error naming it), grabs `frames`
/// frames (at least 2, after `warmup_frames`) and reads its controls back. The camera is closed
/// again when this returns. Without the `v4l2` feature: an error saying so.
pub fn probe(
    path: &Path,
    options: &SourceOptions,
    frames: u32,
) -> Result<CameraProbe, SourceError> {
    #[cfg(feature = "v4l2")]
    {
        super::device::probe(path, options, frames)
    }
    #[cfg(not(feature = "v4l2"))]
    {
        let _ = (options, frames);
        Err(SourceError::Camera {
            device: path.to_path_buf(),
            reason: "this build has no camera support (build edge with the `v4l2` feature)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_read_as_name_value_and_range() {
        let p = CameraProbe {
            format: PixelFormat::Mjpeg,
            width: 640,
            height: 480,
            measured_fps: 30.0,
            controls: vec![
                ControlInfo {
                    name: "gain".into(),
                    id: 0x0098_0913,
                    value: Some(4),
                    min: 0,
                    max: 100,
                },
                ControlInfo {
                    name: "exposure_auto".into(),
                    id: 0x009a_0901,
                    value: None,
                    min: 0,
                    max: 3,
                },
            ],
        };
        assert_eq!(p.controls_text(), "gain=4 [0..100], exposure_auto=? [0..3]");
    }

    #[test]
    fn a_missing_camera_is_an_error_naming_it() {
        let e = probe(Path::new("/dev/video-none"), &SourceOptions::default(), 2).unwrap_err();
        assert!(e.to_string().contains("/dev/video-none"), "{e}");
    }
}
