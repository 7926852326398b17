//! Frame sources: where the device program's pictures come from (`edge run --source`).
//!
//! | spec | source | module |
//! |---|---|---|
//! | `v4l2:/dev/videoN` | a USB (UVC) camera, MJPEG or YUYV (cargo feature `v4l2`) | [`v4l2`] |
//! | `stdin` or `-` | a concatenated MJPEG stream (Pi `rpicam-vid --codec mjpeg -o -`, Jetson GStreamer `… ! jpegenc ! fdsink`) | [`mjpeg`] |
//! | `watch:DIR` | new image files appearing in a folder | [`watch`] |
//! | anything else | image files; folders are walked recursively | [`files`] |
//!
//! [`open`] starts a background thread that reads the source and hands over [`SourceEvent`]s; the
//! run loop takes them with [`SourceHandle::recv_timeout`], so it can serve commands and signals
//! between frames, and ends the source with [`SourceHandle::stop`].
//!
//! # Frame dropping policy
//!
//! - **Cameras (`v4l2`) keep only the newest frame.** The capture thread dequeues every frame as
//!   the camera delivers it and puts it in a one-place mailbox that *replaces* a frame the run
//!   loop has not taken yet ([`SourceHandle::dropped_frames`] counts those). A slow model
//!   therefore always sees the current field of view, never a queue of stale frames.
//! - **`stdin`, `watch:` and files never drop a frame** by default ([`FramePolicy::All`]). Their
//!   thread waits (backpressure) while two frames are waiting; a pipe writer is then blocked by
//!   the kernel, so a fixed MJPEG stream piped in gets every frame classified.
//! - **`stdin` from a live camera** (`rpicam-vid`, GStreamer) should run with
//!   [`FramePolicy::Latest`] (`[source] policy = "latest"`, `edge run --policy latest`): the
//!   stream is read as fast as it comes and a frame the run loop has not taken yet is replaced by
//!   the next (counted in [`SourceHandle::dropped_frames`]), so results never trail the field of
//!   view by more than one frame. `latest` on files or a watched folder is a configuration error
//!   (they are finite lists of pictures, each one to be classified), and so is `all` on a camera.
//! - Events that are not frames (`Skipped`, `Lost`, `Restored`, `End`) are never dropped.
//!
//! # Pictures that are not whole
//!
//! A picture that is cut short, corrupt, or larger than the decode limits never gets a result
//! ([`leukoscope_model::picture`] checks it, and it is the only way an encoded frame is decoded).
//! Files (`PATH...`, `watch:`) are checked when read and come as `Skipped`; a stream's frames are
//! split on their JPEG structure ([`mjpeg`]: a frame cut short by the next one or by the end of
//! the stream is `Skipped`), and a frame the decoder then refuses is dropped by the run loop the
//! same way. Either way the device counts it (`undecodable` in the run summary), logs its origin
//! and the reason, and records nothing: it is not a `RETAKE`, because a frame the camera or the
//! transfer damaged is not something the technician can fix by retaking the field — the next
//! frame of the same field is classified as usual.
//!
//! # Frames larger than the model input
//!
//! The default policy is `leukoscope_model::preprocess`'s: centre crop to the model's aspect ratio (square),
//! then resize. [`tiles::tiles`] offers the alternative: the frame cut into model-sized tiles,
//! each classified on its own.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use std::sync::mpsc::RecvTimeoutError;

pub mod files;
mod mailbox;
pub mod mjpeg;
mod policy;
pub mod tiles;
pub mod v4l2;
pub mod watch;

use mailbox::{Mailbox, Policy};
pub use policy::FramePolicy;
pub use v4l2::controls::{ControlValue, ExposureSetting};
pub use v4l2::probe::{CameraProbe, ControlInfo, probe};

/// Which source to read (parsed from `--source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A Video4Linux2 camera.
    V4l2 {
        /// Its device node, e.g. `/dev/video0`.
        device: PathBuf,
    },
    /// A concatenated MJPEG stream on standard input.
    Stdin,
    /// New image files appearing in a folder.
    Watch {
        /// The folder.
        dir: PathBuf,
    },
    /// Image files, and folders walked recursively.
    Files(Vec<PathBuf>),
}

impl FromStr for SourceSpec {
    type Err = SourceError;

    /// `v4l2:/dev/video0`, `stdin` or `-`, `watch:DIR`; a bare `/dev/videoN` is taken as a
    /// camera; anything else is a file or folder path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| SourceError::Spec {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad(
                "empty source (expected v4l2:/dev/videoN, stdin, -, watch:DIR or a path)",
            ));
        }
        if let Some(dev) = s.strip_prefix("v4l2:") {
            if dev.is_empty() {
                return Err(bad("v4l2: needs a device node, e.g. v4l2:/dev/video0"));
            }
            return Ok(SourceSpec::V4l2 {
                device: PathBuf::from(dev),
            });
        }
        if let Some(dir) = s.strip_prefix("watch:") {
            if dir.is_empty() {
                return Err(bad("watch: needs a folder, e.g. watch:/srv/incoming"));
            }
            return Ok(SourceSpec::Watch {
                dir: PathBuf::from(dir),
            });
        }
        if s == "stdin" || s == "-" {
            return Ok(SourceSpec::Stdin);
        }
        if s.starts_with("/dev/video") {
            return Ok(SourceSpec::V4l2 {
                device: PathBuf::from(s),
            });
        }
        Ok(SourceSpec::Files(vec![PathBuf::from(s)]))
    }
}

impl fmt::Display for SourceSpec {
    /// The spec as it would be written on the command line (files: the paths separated by
    /// spaces).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::V4l2 { device } => write!(f, "v4l2:{}", device.display()),
            SourceSpec::Stdin => f.write_str("stdin"),
            SourceSpec::Watch { dir } => write!(f, "watch:{}", dir.display()),
            SourceSpec::Files(paths) => {
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                f.write_str(&names.join(" "))
            }
        }
    }
}

/// Which pixel format a camera is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraFormat {
    /// MJPEG when the camera offers it (less USB bandwidth, higher frame rates at high
    /// resolution, and the frame is stored as the camera's own JPEG), else YUYV.
    #[default]
    Auto,
    /// MJPEG only.
    Mjpeg,
    /// YUYV (4:2:2) only: uncompressed, no JPEG artefacts, lower frame rates.
    Yuyv,
}

/// How sources read. Every field has a default (`[source.options]` table of the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceOptions {
    /// Camera: wanted frame width (the nearest size the camera offers is used).
    pub width: u32,
    /// Camera: wanted frame height.
    pub height: u32,
    /// Camera: wanted frames per second.
    pub fps: u32,
    /// Camera: pixel format preference.
    pub format: CameraFormat,
    /// Largest accepted frame or file in bytes; larger ones are skipped (bounds memory).
    pub max_frame_bytes: usize,
    /// `watch:`: how often the folder is scanned, in milliseconds. A file is read once its size
    /// and modification time have not changed for one interval.
    pub poll_interval_ms: u64,
    /// `watch:`: also read every image file already in the folder at start, even those the
    /// database already has (they are classified again). Default: off; see `catch_up`.
    pub watch_existing: bool,
    /// `watch:`: read the image files already in the folder at start, and let the run skip
    /// those the database already has (same path and sha256): pictures that arrived while the
    /// service was down are classified at the next start, none twice (default: on). Off (with
    /// `watch_existing` off): only files that appear after the start are read.
    pub catch_up: bool,
    /// Camera: frames dropped after (re)opening while exposure settles.
    pub warmup_frames: u32,
    /// Camera: longest wait between attempts to reopen a lost camera, in milliseconds (the wait
    /// starts at 500 ms and doubles).
    pub retry_max_ms: u64,
    /// Camera: automatic exposure (`true`/`false`, or a V4L2 mode: `"auto"`, `"manual"`,
    /// `"shutter_priority"`, `"aperture_priority"`). Unset: the camera's own setting.
    pub exposure_auto: Option<ExposureSetting>,
    /// Camera: exposure time in units of 100 µs (V4L2 `exposure_absolute`, `exposure_time_absolute`);
    /// needs a manual exposure mode.
    pub exposure_absolute: Option<i64>,
    /// Camera: automatic white balance. Lock it (`false`) with a `white_balance_temperature`:
    /// the model's known weakness is colour cast.
    pub white_balance_auto: Option<bool>,
    /// Camera: white balance temperature in kelvin; needs `white_balance_auto = false`.
    pub white_balance_temperature: Option<i64>,
    /// Camera: analogue gain (the camera's own units).
    pub gain: Option<i64>,
    /// Camera: continuous autofocus.
    pub focus_auto: Option<bool>,
    /// Camera: focus position (the camera's own units); needs `focus_auto = false`.
    pub focus_absolute: Option<i64>,
    /// Camera: any other V4L2 control by its `v4l2-ctl` name (`brightness = 128`,
    /// `power_line_frequency = "50 Hz"`, `backlight_compensation = false`).
    pub controls: std::collections::BTreeMap<String, ControlValue>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            width: 1280,
            height: 720,
            fps: 30,
            format: CameraFormat::Auto,
            max_frame_bytes: 32 * 1024 * 1024,
            poll_interval_ms: 250,
            watch_existing: false,
            catch_up: true,
            warmup_frames: 3,
            retry_max_ms: 10_000,
            exposure_auto: None,
            exposure_absolute: None,
            white_balance_auto: None,
            white_balance_temperature: None,
            gain: None,
            focus_auto: None,
            focus_absolute: None,
            controls: std::collections::BTreeMap::new(),
        }
    }
}

/// One picture from a source.
#[derive(Debug, Clone)]
pub struct Frame {
    /// 1 for the first frame of this source, then counting up (gaps: dropped camera frames).
    pub seq: u64,
    /// Where it came from: the file path, `stdin#17` (the 17th frame of the stream) or the
    /// camera's device node.
    pub origin: String,
    /// When the source finished receiving it.
    pub received: SystemTime,
    /// The picture.
    pub data: FrameData,
    /// A picture a watched folder already held at start (`catch_up`): the run skips it when the
    /// database already has its origin and sha256.
    pub catch_up: bool,
}

/// A frame's pixels.
#[derive(Debug, Clone)]
pub enum FrameData {
    /// JPEG or PNG bytes exactly as received (hash and store them as they are; decode with
    /// `leukoscope_model::preprocess::decode_image_bytes`).
    Encoded(Vec<u8>),
    /// Decoded pixels (a YUYV camera frame converted to RGB).
    Rgb(image::RgbImage),
}

/// What a source reports.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A picture.
    Frame(Frame),
    /// Something that was not a usable picture: garbage or a truncated frame in a stream, an
    /// unreadable or non-image file. The source goes on.
    Skipped {
        /// Where: a file path, `stdin` or the device node.
        origin: String,
        /// Why, in words.
        reason: String,
    },
    /// The camera (or watched folder) is gone; the source keeps retrying with backoff.
    Lost {
        /// What happened, in words.
        reason: String,
    },
    /// The camera (or watched folder) is back after a `Lost`.
    Restored,
    /// The source has no more frames (end of the stdin stream, files exhausted).
    End,
}

/// A source that could not be opened.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The `--source` text is not a valid source.
    #[error("invalid source '{spec}': {reason}")]
    Spec {
        /// The text.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The camera could not be opened or set up.
    #[error("camera {}: {reason}", device.display())]
    Camera {
        /// The device node.
        device: PathBuf,
        /// What went wrong, with a hint where there is one.
        reason: String,
    },
    /// The watched folder is not usable.
    #[error("watch folder {}: {reason}", dir.display())]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The background thread could not be started.
    #[error("cannot start the source thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A running source: owns its background thread. Dropping it stops the source like
/// [`SourceHandle::stop`].
pub struct SourceHandle {
    mailbox: Arc<Mailbox>,
    thread: Option<JoinHandle<()>>,
    /// The thread may be blocked in a read that nothing can interrupt (stdin).
    uninterruptible: bool,
}

impl SourceHandle {
    /// The next event, waiting at most `t`. `Err(Timeout)`: nothing yet. `Err(Disconnected)`: the
    /// source has ended (after its `End` event) or its thread died (after a `Lost` event saying
    /// why).
    pub fn recv_timeout(&self, t: Duration) -> Result<SourceEvent, RecvTimeoutError> {
        self.mailbox.recv_timeout(t).map(mailbox::Item::into_event)
    }

    /// Frames replaced by a newer one before they were taken (policy `latest`: cameras, live
    /// streams; always 0 with policy `all`).
    pub fn dropped_frames(&self) -> u64 {
        self.mailbox.dropped()
    }

    /// Asks the source thread to end and waits for it. Camera, folder and file sources end within
    /// one poll or dequeue timeout (≤ 1 s). A stream reader (stdin) blocked in `read(2)` cannot
    /// be interrupted: after 200 ms it is left behind (detached); it ends at the next data or end
    /// of input, or with the process, and sends nothing more.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.mailbox.stop();
        if let Some(t) = self.thread.take()
            && (!self.uninterruptible || self.mailbox.wait_closed(Duration::from_millis(200)))
        {
            let _ = t.join();
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens a source and starts its thread. Errors name the device or folder and the problem (a
/// missing camera, no permission, not a capture device, a folder that does not exist). Files
/// that cannot be read are not errors here: they come as `Skipped` events.
pub fn open(spec: &SourceSpec, opts: &SourceOptions) -> Result<SourceHandle, SourceError> {
    open_with_policy(spec, opts, FramePolicy::default_for(spec))
}

/// [`open`] with a frame policy (`[source] policy`, `edge run --policy`). A policy the source
/// cannot follow ([`FramePolicy::check`]: `latest` on files or a folder, `all` on a camera) is a
/// [`SourceError::Spec`].
pub fn open_with_policy(
    spec: &SourceSpec,
    opts: &SourceOptions,
    policy: FramePolicy,
) -> Result<SourceHandle, SourceError> {
    policy.check(spec).map_err(|reason| SourceError::Spec {
        spec: spec.to_string(),
        reason,
    })?;
    match spec {
        SourceSpec::V4l2 { device } => v4l2::open(device, opts),
        SourceSpec::Stdin => read_stream(std::io::stdin(), "stdin", opts, policy),
        SourceSpec::Watch { dir } => watch::open(dir, opts),
        SourceSpec::Files(paths) => files::open(paths, opts),
    }
}

/// Reads a concatenated MJPEG stream from any reader (a pipe, a socket) on a background thread,
/// like the `stdin` source. Frames are named `{name}#{seq}`; the source ends with `End` at the end
/// of the stream. A read error is reported as `Skipped` and ends the source. `stop` does not wait
/// for a read that blocks (see [`SourceHandle::stop`]).
pub fn open_reader<R: Read + Send + 'static>(
    reader: R,
    name: &str,
    opts: &SourceOptions,
) -> Result<SourceHandle, SourceError> {
    read_stream(reader, name, opts, FramePolicy::All)
}

/// Reads an MJPEG stream: `All` waits while two frames are waiting (the writer is held back),
/// `Latest` reads on and keeps only the newest waiting frame.
fn read_stream<R: Read + Send + 'static>(
    reader: R,
    name: &str,
    opts: &SourceOptions,
    policy: FramePolicy,
) -> Result<SourceHandle, SourceError> {
    let name = name.to_string();
    let max = opts.max_frame_bytes;
    let mailbox_policy = match policy {
        FramePolicy::All => Policy::Backpressure(2),
        FramePolicy::Latest => Policy::Latest,
    };
    let mut handle = spawn(&format!("source {name}"), mailbox_policy, move |mb| {
        let mut seq = 0;
        for split in mjpeg::MjpegReader::new(reader, max) {
            let event = match split {
                Ok(mjpeg::Split::Frame(bytes)) => {
                    seq += 1;
                    SourceEvent::Frame(Frame {
                        seq,
                        origin: format!("{name}#{seq}"),
                        received: SystemTime::now(),
                        data: FrameData::Encoded(bytes),
                        catch_up: false,
                    })
                }
                Ok(mjpeg::Split::Skipped {
                    offset,
                    len: _,
                    reason,
                }) => SourceEvent::Skipped {
                    origin: name.clone(),
                    reason: format!("{reason} (at byte {offset})"),
                },
                Err(e) => SourceEvent::Skipped {
                    origin: name.clone(),
                    reason: format!("read error, the stream ends here: {e}"),
                },
            };
            if !mb.send(event) {
                return;
            }
        }
        mb.send(SourceEvent::End);
    })?;
    handle.uninterruptible = true;
    Ok(handle)
}

/// Starts `body` on a named thread feeding a new mailbox. A panic in `body` becomes a `Lost` event
/// and the source ends.
fn spawn(
    name: &str,
    policy: Policy,
    body: impl FnOnce(&Mailbox) + Send + 'static,
) -> Result<SourceHandle, SourceError> {
    let mailbox = Arc::new(Mailbox::new(policy));
    let mb = mailbox.clone();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mb)));
            if let Err(panic) = result {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                mb.send(SourceEvent::Lost {
                    reason: format!("the source thread failed and ended: {what}"),
                });
            }
            mb.close();
        })?;
    Ok(SourceHandle {
        mailbox,
        thread: Some(thread),
        uninterruptible: false,
    })
}

/// Whether file bytes are one whole JPEG or PNG the pipeline can decode (the same check its
/// decoder makes first), or why not.
fn whole_picture(bytes: &[u8]) -> Result<(), leukoscope_model::picture::PictureError> {
    leukoscope_model::picture::check(bytes, &Default::default()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let cases = [
            ("v4l2:/dev/video2", "v4l2:/dev/video2"),
            ("/dev/video0", "v4l2:/dev/video0"),
            ("stdin", "stdin"),
            ("-", "stdin"),
            ("watch:/srv/in", "watch:/srv/in"),
            ("slides/a.jpg", "slides/a.jpg"),
        ];
        for (text, shown) in cases {
            let spec: SourceSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), shown);
        }
        assert_eq!(
            "watch:x".parse::<SourceSpec>().unwrap(),
            SourceSpec::Watch { dir: "x".into() }
        );
        for bad in ["", "v4l2:", "watch:"] {
            let e = bad.parse::<SourceSpec>().unwrap_err().to_string();
            assert!(e.contains("invalid source"), "{e}");
        }
        assert!(
            "v4l2:"
                .parse::<SourceSpec>()
                .unwrap_err()
                .to_string()
                .contains("/dev/video0")
        );
    }

    #[test]
    fn options_deserialize_partially() {
        let o: SourceOptions = toml::from_str("width = 640\nformat = \"yuyv\"").unwrap();
        assert_eq!(
            (o.width, o.height, o.format),
            (640, 720, CameraFormat::Yuyv)
        );
        assert!(toml::from_str::<SourceOptions>("widht = 640").is_err());
    }
}
