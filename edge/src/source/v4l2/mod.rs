//! `v4l2:/dev/videoN`: USB (UVC) microscope and eyepiece cameras through Video4Linux2, with the
//! `v4l` crate (cargo feature `v4l2`, on with `device`; its build needs `libclang-dev`).
//!
//! # Format
//!
//! The camera's formats and frame sizes are enumerated and [`negotiate`] picks one: MJPEG or YUYV
//! by [`CameraFormat`] (`auto` prefers MJPEG), the offered size nearest to the wanted one (exact;
//! else the smallest that covers it; else the largest), then the wanted frame rate is requested.
//! The driver's answer is what is used. MJPEG frames are passed on as the camera's JPEG bytes
//! (UVC cameras may omit the Huffman tables; the `image` crate's decoder and libjpeg-turbo
//! supply the standard ones). YUYV frames are converted to RGB with [`yuyv_to_rgb`] (BT.601,
//! limited range, as UVC specifies), and only when the run loop takes them.
//!
//! # Newest frame only, and the `v4l` crate's pitfalls
//!
//! - A capture thread dequeues every frame as the camera delivers it and hands it to a one-place
//!   mailbox that replaces the frame not yet taken (see the module `source`); when it finds more
//!   than one buffer ready it skips to the newest, so the run loop never sees a stale frame.
//! - The frame's length is the buffer's `bytesused`, never the mapped buffer's length (which
//!   holds stale bytes of earlier frames after the JPEG's end).
//! - `v4l`'s `next()` re-queues the buffer it returned last *before* dequeuing; when a dequeue
//!   times out it would re-queue a buffer the kernel still owns (EINVAL). So the thread waits for
//!   a ready buffer with `poll(2)` itself and calls `next()` only when one is ready; only the very
//!   first `next()` (which starts streaming) can time out, and then the stream is dropped and made
//!   anew instead of being reused.
//! - There is no non-blocking grab: the thread blocks in `poll` with a 1 s timeout, which also
//!   bounds how long [`SourceHandle::stop`](super::SourceHandle::stop) waits.
//! - Dropping a `v4l` stream panics if `VIDIOC_STREAMOFF` fails with anything but `ENODEV`
//!   (seen after a USB disconnect); the drop is contained.
//!
//! # A camera that disappears
//!
//! Any capture error or 5 s without a frame: the source sends `Lost` with the reason, closes the
//! device, and tries to reopen it after 0.5 s, 1 s, 2 s … up to `retry_max_ms`; when it succeeds
//! (same format negotiation, the same controls set again) it sends `Restored` and goes on. A
//! camera missing at start is an error of [`open`](super::open) naming the device.
//!
//! # Controls
//!
//! Exposure, white balance, gain, focus and any other control named in `[source.options]` are
//! set at open and after every reconnect ([`controls`]: what is wanted, checked at config load,
//! mapped onto what the camera offers; a control it lacks or refuses is an error naming it).
//! [`probe::probe`] is `edge check`'s look at a camera: mode, measured frame rate, controls.
//!
//! # Files
//!
//! `mod.rs` format negotiation and YUYV conversion; `controls.rs` camera controls;
//! `probe.rs` what `edge check` reports; `device.rs` (feature `v4l2`) the device itself: open,
//! capture thread, reconnect.

use image::RgbImage;

use super::CameraFormat;

pub mod controls;
pub mod probe;

/// The pixel formats used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Motion JPEG (`MJPG`).
    Mjpeg,
    /// YUYV 4:2:2 (`YUYV`).
    Yuyv,
}

impl PixelFormat {
    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }

    /// The format of a four-character code, if it is one of ours.
    pub fn from_fourcc(code: [u8; 4]) -> Option<Self> {
        match &code {
            b"MJPG" => Some(PixelFormat::Mjpeg),
            b"YUYV" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }
}

/// Frame sizes a camera offers for one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeOffer {
    /// One size.
    Discrete {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A range of sizes (continuous when the steps are 1).
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width step.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height step.
        step_height: u32,
    },
}

/// What [`negotiate`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The pixel format.
    pub format: PixelFormat,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
}

/// Picks the format and frame size from what a camera offers (see the module documentation).
/// A format with no size list (some drivers do not enumerate) gets the wanted size, for the
/// driver to adjust. The error says what the camera offers.
pub fn negotiate(
    offers: &[(PixelFormat, Vec<SizeOffer>)],
    pref: CameraFormat,
    width: u32,
    height: u32,
) -> Result<Choice, String> {
    let order: &[PixelFormat] = match pref {
        CameraFormat::Auto => &[PixelFormat::Mjpeg, PixelFormat::Yuyv],
        CameraFormat::Mjpeg => &[PixelFormat::Mjpeg],
        CameraFormat::Yuyv => &[PixelFormat::Yuyv],
    };
    let Some((format, sizes)) = order
        .iter()
        .find_map(|f| offers.iter().find(|(g, _)| g == f))
    else {
        let offered: Vec<String> = offers
            .iter()
            .map(|(f, _)| String::from_utf8_lossy(&f.fourcc()).into_owned())
            .collect();
        let wanted: Vec<String> = order
            .iter()
            .map(|f| String::from_utf8_lossy(&f.fourcc()).into_owned())
            .collect();
        return Err(format!(
            "the camera offers none of {} (it offers: {})",
            wanted.join(", "),
            if offered.is_empty() {
                "no MJPG or YUYV format".to_string()
            } else {
                offered.join(", ")
            }
        ));
    };
    let candidates: Vec<(u32, u32)> = sizes
        .iter()
        .map(|s| match *s {
            SizeOffer::Discrete { width, height } => (width, height),
            SizeOffer::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => (
                snap(width, min_width, max_width, step_width),
                snap(height, min_height, max_height, step_height),
            ),
        })
        .collect();
    let (width, height) = if candidates.is_empty() {
        (width, height)
    } else if let Some(&exact) = candidates.iter().find(|&&c| c == (width, height)) {
        exact
    } else if let Some(&cover) = candidates
        .iter()
        .filter(|&&(w, h)| w >= width && h >= height)
        .min_by_key(|&&(w, h)| w as u64 * h as u64)
    {
        cover
    } else {
        *candidates
            .iter()
            .max_by_key(|&&(w, h)| w as u64 * h as u64)
            .expect("not empty")
    };
    Ok(Choice {
        format: *format,
        width,
        height,
    })
}

/// The value of `min..=max` in steps of `step` from `min` nearest to `want`, rounding up.
fn snap(want: u32, min: u32, max: u32, step: u32) -> u32 {
    let step = step.max(1);
    let v = want.clamp(min, max.max(min));
    let k = (v - min).div_ceil(step);
    (min + k * step).min(max.max(min))
}

/// Converts a YUYV (4:2:2, `Y0 U Y1 V`) frame to RGB into `out` (resized as needed), with the
/// BT.601 limited-range ("studio swing") matrix UVC cameras use: `Y` 16–235, `U`/`V` 16–240.
/// `stride` is the length of a row in bytes (at least `2 × width`); `width` must be even.
pub fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut RgbImage,
) -> Result<(), String> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) {
        return Err(format!(
            "YUYV frame {width}x{height}: the width must be even and non-zero"
        ));
    }
    let row = 2 * width as usize;
    let stride = stride.max(row);
    let needed = stride * (height as usize - 1) + row;
    if data.len() < needed {
        return Err(format!(
            "short YUYV frame: {} bytes, {width}x{height} needs {needed}",
            data.len()
        ));
    }
    if out.dimensions() != (width, height) {
        *out = RgbImage::new(width, height);
    }
    let dst: &mut [u8] = out;
    for (y, dst_row) in dst.chunks_exact_mut(3 * width as usize).enumerate() {
        let src = &data[y * stride..y * stride + row];
        for (s, d) in src.chunks_exact(4).zip(dst_row.chunks_exact_mut(6)) {
            let (u, v) = (s[1] as i32 - 128, s[3] as i32 - 128);
            // Fixed point, 8 fractional bits: 1.164, 1.596, 0.391, 0.813, 2.018.
            let (rv, guv, bu) = (409 * v, -100 * u - 208 * v, 516 * u);
            for (k, &yy) in [s[0], s[2]].iter().enumerate() {
                let c = 298 * (yy as i32 - 16) + 128;
                d[3 * k] = ((c + rv) >> 8).clamp(0, 255) as u8;
                d[3 * k + 1] = ((c + guv) >> 8).clamp(0, 255) as u8;
                d[3 * k + 2] = ((c + bu) >> 8).clamp(0, 255) as u8;
            }
        }
    }
    Ok(())
}

#[cfg(feature = "v4l2")]
pub(crate) use device::open;

#[cfg(not(feature = "v4l2"))]
pub(crate) fn open(
    device: &std::path::Path,
    _opts: &super::SourceOptions,
) -> Result<super::SourceHandle, super::SourceError> {
    Err(super::SourceError::Camera {
        device: device.to_path_buf(),
        reason: "this build has no camera support (build edge with the `v4l2` feature)".into(),
    })
}

#[cfg(feature = "v4l2")]
mod device;

#[cfg(test)]
mod tests {
    use super::*;

    fn discrete(sizes: &[(u32, u32)]) -> Vec<SizeOffer> {
        sizes
            .iter()
            .map(|&(width, height)| SizeOffer::Discrete { width, height })
            .collect()
    }

    #[test]
    fn mjpeg_is_preferred_and_sizes_are_matched() {
        let offers = vec![
            (PixelFormat::Yuyv, discrete(&[(640, 480), (1280, 720)])),
            (
                PixelFormat::Mjpeg,
                discrete(&[(640, 480), (1280, 720), (1920, 1080)]),
            ),
        ];
        let c = negotiate(&offers, CameraFormat::Auto, 1280, 720).unwrap();
        assert_eq!(
            (c.format, c.width, c.height),
            (PixelFormat::Mjpeg, 1280, 720)
        );
        // Not offered: the smallest size that covers the request…
        let c = negotiate(&offers, CameraFormat::Auto, 1000, 700).unwrap();
        assert_eq!((c.width, c.height), (1280, 720));
        // …else the largest.
        let c = negotiate(&offers, CameraFormat::Yuyv, 4000, 3000).unwrap();
        assert_eq!(
            (c.format, c.width, c.height),
            (PixelFormat::Yuyv, 1280, 720)
        );
    }

    #[test]
    fn a_missing_format_is_an_error_naming_what_is_offered() {
        let offers = vec![(PixelFormat::Yuyv, discrete(&[(640, 480)]))];
        let e = negotiate(&offers, CameraFormat::Mjpeg, 640, 480).unwrap_err();
        assert!(e.contains("MJPG") && e.contains("offers: YUYV"), "{e}");
        let c = negotiate(&offers, CameraFormat::Auto, 640, 480).unwrap();
        assert_eq!(c.format, PixelFormat::Yuyv);
        assert!(negotiate(&[], CameraFormat::Auto, 640, 480).is_err());
    }

    #[test]
    fn stepwise_sizes_snap_to_the_grid() {
        let offers = vec![(
            PixelFormat::Mjpeg,
            vec![SizeOffer::Stepwise {
                min_width: 160,
                max_width: 2592,
                step_width: 16,
                min_height: 120,
                max_height: 1944,
                step_height: 8,
            }],
        )];
        let c = negotiate(&offers, CameraFormat::Auto, 1000, 700).unwrap();
        assert_eq!((c.width, c.height), (1008, 704));
        let c = negotiate(&offers, CameraFormat::Auto, 5000, 10).unwrap();
        assert_eq!((c.width, c.height), (2592, 120));
        // No size list: the wanted size, for the driver to adjust.
        let c = negotiate(&[(PixelFormat::Yuyv, vec![])], CameraFormat::Auto, 800, 600).unwrap();
        assert_eq!((c.width, c.height), (800, 600));
    }

    #[test]
    fn yuyv_converts_like_the_bt601_formulas() {
        // Two rows of 2 pixels, stride 6 (2 padding bytes per row).
        // Row 0: Y=16 and Y=235 with U=V=128 → black and white.
        // Row 1: Y=81 U=90 V=240 (BT.601 red) and Y=145 (same chroma).
        let data = [
            16, 128, 235, 128, 0xEE, 0xEE, //
            81, 90, 145, 240, 0xEE, 0xEE,
        ];
        let mut out = RgbImage::new(1, 1);
        yuyv_to_rgb(&data, 2, 2, 6, &mut out).unwrap();
        assert_eq!(out.dimensions(), (2, 2));
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 0).0, [255, 255, 255]);
        // By hand: R = 1.164(81-16) + 1.596(240-128) = 254.4; G = 75.66 - 0.391(-38) - 0.813(112)
        // = -0.56 → 0; B = 75.66 + 2.018(-38) = -1.0 → 0.
        let red = out.get_pixel(0, 1).0;
        assert!(red[0] >= 253 && red[1] <= 1 && red[2] <= 1, "{red:?}");
        // Y=145: R = 1.164·129 + 178.75 → 255 (clipped); G = 150.16 + 14.86 - 91.06 = 73.96;
        // B = 150.16 - 76.68 = 73.48.
        let px = out.get_pixel(1, 1).0;
        assert_eq!(px[0], 255);
        assert!(
            (px[1] as i32 - 74).abs() <= 1 && (px[2] as i32 - 73).abs() <= 1,
            "{px:?}"
        );
    }

    #[test]
    fn short_or_odd_yuyv_frames_are_errors() {
        let mut out = RgbImage::new(0, 0);
        assert!(
            yuyv_to_rgb(&[0; 7], 2, 2, 4, &mut out)
                .unwrap_err()
                .contains("short")
        );
        assert!(yuyv_to_rgb(&[0; 12], 3, 2, 6, &mut out).is_err());
    }
}
