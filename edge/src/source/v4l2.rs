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
//! (same format negotiation) it sends `Restored` and goes on. A camera missing at start is an
//! error of [`open`](super::open) naming the device.

use image::RgbImage;

use super::CameraFormat;

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
mod device {
    use std::io::ErrorKind;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use v4l::buffer::{Flags, Type};
    use v4l::capability::Flags as Caps;
    use v4l::framesize::FrameSizeEnum;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::{Device, Format, FourCC};

    use super::super::mailbox::{Item, Mailbox, Policy};
    use super::super::{Frame, FrameData, SourceError, SourceEvent, SourceHandle, SourceOptions};
    use super::{Choice, PixelFormat, SizeOffer, negotiate, yuyv_to_rgb};

    /// `POLLIN` (Linux): data to read, here a filled buffer.
    const POLLIN: i16 = 0x001;
    /// Mapped buffers: enough for the driver to fill one while we copy another.
    const BUFFERS: u32 = 4;
    /// How long the thread waits in one `poll` (bounds the time `stop` takes).
    const POLL_MS: i32 = 1000;
    /// Without a frame for this many polls, the camera is taken as lost.
    const SILENT_POLLS: u32 = 5;

    struct Camera {
        dev: Device,
        choice: Choice,
        /// Bytes per row (YUYV).
        stride: usize,
    }

    pub(crate) fn open(device: &Path, opts: &SourceOptions) -> Result<SourceHandle, SourceError> {
        let camera = connect(device, opts).map_err(|reason| SourceError::Camera {
            device: device.to_path_buf(),
            reason,
        })?;
        tracing::info!(
            device = %device.display(),
            format = ?camera.choice.format,
            width = camera.choice.width,
            height = camera.choice.height,
            "camera opened"
        );
        let path = device.to_path_buf();
        let opts = opts.clone();
        super::super::spawn(
            &format!("source {}", device.display()),
            Policy::Latest,
            move |mb| run(camera, &path, &opts, mb),
        )
    }

    /// Opens and configures the camera; the error is a sentence for the technician.
    fn connect(path: &Path, opts: &SourceOptions) -> Result<Camera, String> {
        if !path.exists() {
            return Err(
                "no such device: is the camera plugged in? (`ls /dev/video*` lists cameras)".into(),
            );
        }
        let dev = Device::with_path(path).map_err(|e| match e.kind() {
            ErrorKind::PermissionDenied => "permission denied: add the service's user to the \
                `video` group (`usermod -aG video USER`)"
                .to_string(),
            _ => format!("cannot open: {e}"),
        })?;
        let caps = dev
            .query_caps()
            .map_err(|e| format!("not a V4L2 device: {e}"))?;
        if !caps.capabilities.contains(Caps::VIDEO_CAPTURE)
            || !caps.capabilities.contains(Caps::STREAMING)
        {
            return Err(format!(
                "'{}' is not a streaming video capture node (UVC cameras also create metadata \
                 nodes: try the camera's other /dev/videoN)",
                caps.card
            ));
        }
        let mut offers = Vec::new();
        for desc in dev
            .enum_formats()
            .map_err(|e| format!("cannot list formats: {e}"))?
        {
            let Some(format) = PixelFormat::from_fourcc(desc.fourcc.repr) else {
                continue;
            };
            let sizes = dev
                .enum_framesizes(desc.fourcc)
                .unwrap_or_default()
                .into_iter()
                .map(|s| match s.size {
                    FrameSizeEnum::Discrete(d) => SizeOffer::Discrete {
                        width: d.width,
                        height: d.height,
                    },
                    FrameSizeEnum::Stepwise(s) => SizeOffer::Stepwise {
                        min_width: s.min_width,
                        max_width: s.max_width,
                        step_width: s.step_width,
                        min_height: s.min_height,
                        max_height: s.max_height,
                        step_height: s.step_height,
                    },
                })
                .collect();
            offers.push((format, sizes));
        }
        let want = negotiate(&offers, opts.format, opts.width, opts.height)?;
        let fourcc = FourCC::new(&want.format.fourcc());
        let got = dev
            .set_format(&Format::new(want.width, want.height, fourcc))
            .map_err(|e| {
                format!(
                    "cannot set {}x{} {:?}: {e}",
                    want.width, want.height, want.format
                )
            })?;
        if got.fourcc != fourcc {
            return Err(format!(
                "asked for {:?}, the driver set {}",
                want.format,
                got.fourcc.str().unwrap_or("an unknown format")
            ));
        }
        if let Err(e) = dev.set_params(&v4l::video::capture::Parameters::with_fps(opts.fps.max(1)))
        {
            tracing::warn!(device = %path.display(), "cannot set {} frames/s: {e}", opts.fps);
        }
        Ok(Camera {
            dev,
            choice: Choice {
                format: want.format,
                width: got.width,
                height: got.height,
            },
            stride: (got.stride as usize).max(2 * got.width as usize),
        })
    }

    /// The capture thread: capture, and when the camera is lost, reopen it with backoff.
    fn run(camera: Camera, path: &Path, opts: &SourceOptions, mb: &Mailbox) {
        let origin = path.display().to_string();
        let mut camera = Some(camera);
        let mut seq = 0u64;
        let mut backoff = Duration::from_millis(500);
        let max_backoff = Duration::from_millis(opts.retry_max_ms.max(500));
        loop {
            match camera.take() {
                Some(cam) => match capture(&cam, &origin, opts, mb, &mut seq) {
                    Ok(()) => return,
                    Err(reason) => {
                        tracing::warn!(device = %origin, "camera lost: {reason}");
                        if !mb.send(SourceEvent::Lost {
                            reason: format!("camera {origin}: {reason}"),
                        }) {
                            return;
                        }
                        backoff = Duration::from_millis(500);
                    }
                },
                None => {
                    if !mb.sleep(backoff) {
                        return;
                    }
                    match connect(path, opts) {
                        Ok(cam) => {
                            tracing::info!(device = %origin, "camera back");
                            camera = Some(cam);
                            if !mb.send(SourceEvent::Restored) {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(device = %origin, "camera still missing: {e}");
                            backoff = (backoff * 2).min(max_backoff);
                        }
                    }
                }
            }
        }
    }

    /// Streams until the consumer stops (`Ok`) or the camera fails (`Err` with the reason).
    fn capture(
        cam: &Camera,
        origin: &str,
        opts: &SourceOptions,
        mb: &Mailbox,
        seq: &mut u64,
    ) -> Result<(), String> {
        let mut stream = new_stream(cam)?;
        let handle = stream.handle();
        let mut started = false;
        let mut silent = 0u32;
        let mut warmup = opts.warmup_frames;
        loop {
            if mb.stopping() {
                drop_stream(stream);
                return Ok(());
            }
            if started {
                // Wait for a filled buffer here, so that `next()` never times out (see the
                // module documentation).
                match handle.poll(POLLIN, POLL_MS) {
                    Ok(0) => {
                        silent += 1;
                        if silent >= SILENT_POLLS {
                            drop_stream(stream);
                            return Err(format!("no frame for {} s", SILENT_POLLS));
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        drop_stream(stream);
                        return Err(format!("poll failed: {e}"));
                    }
                }
            }
            let event = match stream.next() {
                Ok((buf, meta)) => {
                    started = true;
                    silent = 0;
                    // Another buffer is ready already: this one is stale, take the newer.
                    if matches!(handle.poll(POLLIN, 0), Ok(n) if n > 0) || warmup > 0 {
                        warmup = warmup.saturating_sub(1);
                        continue;
                    }
                    let used = (meta.bytesused as usize).min(buf.len());
                    if meta.flags.contains(Flags::ERROR) || used == 0 {
                        Item::Event(SourceEvent::Skipped {
                            origin: origin.to_string(),
                            reason: "the camera delivered a corrupt or empty frame".into(),
                        })
                    } else {
                        *seq += 1;
                        frame_item(cam, origin, *seq, &buf[..used])
                    }
                }
                Err(e) if e.kind() == ErrorKind::TimedOut && !started => {
                    // Only the first `next()` can time out; the stream cannot be reused after it.
                    drop_stream(stream);
                    silent += 2;
                    if silent >= SILENT_POLLS {
                        return Err(format!("no frame for {} s after starting", SILENT_POLLS));
                    }
                    stream = new_stream(cam)?;
                    continue;
                }
                Err(e) => {
                    drop_stream(stream);
                    return Err(format!("capture failed: {e}"));
                }
            };
            if !mb.send_item(event) {
                drop_stream(stream);
                return Ok(());
            }
        }
    }

    fn new_stream(cam: &Camera) -> Result<Stream<'static>, String> {
        let mut stream = Stream::with_buffers(&cam.dev, Type::VideoCapture, BUFFERS)
            .map_err(|e| format!("cannot map capture buffers: {e}"))?;
        stream.set_timeout(Duration::from_millis(2 * POLL_MS as u64));
        Ok(stream)
    }

    /// Drops a stream; `v4l` panics there when the device is half gone.
    fn drop_stream(stream: Stream<'static>) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream))).is_err() {
            tracing::debug!("closing the capture stream failed (device gone)");
        }
    }

    /// A frame for the mailbox: MJPEG bytes as they are; YUYV copied now and converted only if
    /// the run loop takes it.
    fn frame_item(cam: &Camera, origin: &str, seq: u64, data: &[u8]) -> Item {
        let received = SystemTime::now();
        let origin = origin.to_string();
        match cam.choice.format {
            PixelFormat::Mjpeg => Item::Event(SourceEvent::Frame(Frame {
                seq,
                origin,
                received,
                data: FrameData::Encoded(data.to_vec()),
            })),
            PixelFormat::Yuyv => {
                let bytes: Arc<[u8]> = Arc::from(data);
                let (w, h, stride) = (cam.choice.width, cam.choice.height, cam.stride);
                Item::Deferred(Box::new(move || {
                    let mut img = image::RgbImage::new(0, 0);
                    match yuyv_to_rgb(&bytes, w, h, stride, &mut img) {
                        Ok(()) => SourceEvent::Frame(Frame {
                            seq,
                            origin,
                            received,
                            data: FrameData::Rgb(img),
                        }),
                        Err(reason) => SourceEvent::Skipped { origin, reason },
                    }
                }))
            }
        }
    }
}

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
