//! The capture thread of a V4L2 camera: open and configure it (format, frame rate, controls),
//! stream, and reopen it with backoff when it is lost (see the module `v4l2`).

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use v4l::buffer::{Flags, Type};
use v4l::capability::Flags as Caps;
use v4l::control::{Control, Type as ControlType, Value};
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::super::mailbox::{Item, Mailbox, Policy};
use super::super::{Frame, FrameData, SourceError, SourceEvent, SourceHandle, SourceOptions};
use super::controls::{self, ControlKind, OfferedControl};
use super::probe::{CameraProbe, ControlInfo};
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
    if let Err(e) = dev.set_params(&v4l::video::capture::Parameters::with_fps(opts.fps.max(1))) {
        tracing::warn!(device = %path.display(), "cannot set {} frames/s: {e}", opts.fps);
    }
    apply_controls(&dev, path, opts)?;
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
            Some(cam) => match stream_to(&cam, &origin, opts, mb, &mut seq) {
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
                        if path.exists() {
                            // There, but not usable as configured (e.g. a control refused).
                            tracing::warn!(device = %origin, "camera not back yet: {e}");
                        } else {
                            tracing::debug!(device = %origin, "camera still missing: {e}");
                        }
                        backoff = (backoff * 2).min(max_backoff);
                    }
                }
            }
        }
    }
}

/// Streams into the mailbox until the consumer stops (`Ok`) or the camera fails (`Err` with the
/// reason).
fn stream_to(
    cam: &Camera,
    origin: &str,
    opts: &SourceOptions,
    mb: &Mailbox,
    seq: &mut u64,
) -> Result<(), String> {
    let stopping = || mb.stopping();
    capture(cam, opts.warmup_frames, &stopping, |filled| {
        let item = match filled {
            Some(data) => {
                *seq += 1;
                frame_item(cam, origin, *seq, data)
            }
            None => Item::Event(SourceEvent::Skipped {
                origin: origin.to_string(),
                reason: "the camera delivered a corrupt or empty frame".into(),
            }),
        };
        mb.send_item(item)
    })
}

/// Streams from `cam`, dropping `warmup` frames and any buffer a newer one already follows, and
/// hands each frame to `deliver` (`None`: the camera flagged it corrupt or empty) until it
/// returns false or `stopping` (asked at least once per poll) is true (`Ok`), or the camera
/// fails (`Err` with the reason).
fn capture(
    cam: &Camera,
    mut warmup: u32,
    stopping: &dyn Fn() -> bool,
    mut deliver: impl FnMut(Option<&[u8]>) -> bool,
) -> Result<(), String> {
    let mut stream = new_stream(cam)?;
    let handle = stream.handle();
    let mut started = false;
    let mut silent = 0u32;
    loop {
        if stopping() {
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
        let more = match stream.next() {
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
                    deliver(None)
                } else {
                    deliver(Some(&buf[..used]))
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
        if !more {
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
            catch_up: false,
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
                        catch_up: false,
                    }),
                    Err(reason) => SourceEvent::Skipped { origin, reason },
                }
            }))
        }
    }
}

/// Sets the controls of `[source.options]` (see `controls.rs`): at open and after every
/// reconnect. The error names the control.
fn apply_controls(dev: &Device, path: &Path, opts: &SourceOptions) -> Result<(), String> {
    let wanted = controls::wanted(opts);
    if wanted.is_empty() {
        return Ok(());
    }
    let offered = offered_controls(dev)?;
    let settings = controls::resolve(&wanted, &offered)?;
    for s in &settings {
        let value = if s.boolean {
            Value::Boolean(s.value != 0)
        } else {
            Value::Integer(s.value)
        };
        dev.set_control(Control { id: s.id, value })
            .map_err(|e| format!("control {}: the camera refused {}: {e}", s.key, s.value))?;
    }
    let set: Vec<String> = settings
        .iter()
        .map(|s| format!("{}={}", s.key, s.value))
        .collect();
    tracing::info!(device = %path.display(), "camera controls set: {}", set.join(", "));
    Ok(())
}

/// The controls the camera offers. `v4l` panics on a control type or menu name it does not
/// know; that is an error here.
fn offered_controls(dev: &Device) -> Result<Vec<OfferedControl>, String> {
    let descriptions =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dev.query_controls()))
            .map_err(|_| {
                "cannot list the camera's controls (a control type v4l does not know)".to_string()
            })?
            .map_err(|e| format!("cannot list the camera's controls: {e}"))?;
    Ok(descriptions
        .into_iter()
        .map(|d| {
            let kind = match d.typ {
                ControlType::Integer | ControlType::Integer64 => ControlKind::Integer,
                ControlType::Boolean => ControlKind::Boolean,
                ControlType::Menu | ControlType::IntegerMenu => ControlKind::Menu,
                _ => ControlKind::Other,
            };
            let menu = d
                .items
                .unwrap_or_default()
                .into_iter()
                .map(|(i, item)| (i64::from(i), item.to_string()))
                .collect();
            OfferedControl {
                id: d.id,
                name: controls::control_name(&d.name),
                kind,
                min: d.minimum,
                max: d.maximum,
                menu,
            }
        })
        .collect())
}

/// `edge check`: open and set up as `edge run` does, grab `frames` frames, read the controls.
pub(super) fn probe(
    path: &Path,
    opts: &SourceOptions,
    frames: u32,
) -> Result<CameraProbe, SourceError> {
    let error = |reason: String| SourceError::Camera {
        device: path.to_path_buf(),
        reason,
    };
    let cam = connect(path, opts).map_err(error)?;
    let wanted = frames.max(2);
    let (mut first, mut last, mut got, mut corrupt) =
        (None::<Instant>, None::<Instant>, 0u32, 0u32);
    capture(&cam, opts.warmup_frames, &|| false, |filled| {
        if filled.is_some() {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
            got += 1;
        } else {
            corrupt += 1;
        }
        got < wanted && corrupt <= 4 * wanted + 8
    })
    .map_err(error)?;
    if got < wanted {
        return Err(error(format!(
            "only {got} of {wanted} frames were whole (the camera flags the others corrupt or empty)"
        )));
    }
    let measured_fps = match (first, last) {
        (Some(a), Some(b)) if b > a => f64::from(got - 1) / (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let controls = offered_controls(&cam.dev)
        .map_err(error)?
        .into_iter()
        .filter(|c| c.kind != ControlKind::Other)
        .map(|c| ControlInfo {
            value: cam.dev.control(c.id).ok().and_then(|v| match v.value {
                Value::Integer(i) => Some(i),
                Value::Boolean(b) => Some(i64::from(b)),
                _ => None,
            }),
            name: c.name,
            id: c.id,
            min: c.min,
            max: c.max,
        })
        .collect();
    Ok(CameraProbe {
        format: cam.choice.format,
        width: cam.choice.width,
        height: cam.choice.height,
        measured_fps,
        controls,
    })
}
