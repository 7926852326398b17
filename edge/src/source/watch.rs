//! `watch:DIR`: new image files appearing in a folder (a slide scanner or another program writes
//! them).
//!
//! # How
//!
//! The folder is **scanned every `poll_interval_ms`** (250 ms by default) rather than watched
//! with inotify (the `notify` crate). Reasons: deciding that a file is completely written needs a
//! timer anyway (below); scanners often write to network or FUSE mounts (SMB, NFS, USB sticks
//! with odd file systems) where inotify sees nothing; and a scan is deterministic and needs no
//! extra dependency. Its cost — a `readdir` and a `stat` per file four times a second — is
//! negligible for folders of up to thousands of files, and the latency (≤ 2 intervals) is far
//! below a technician's pace.
//!
//! # When a file is read
//!
//! - Only the folder itself is watched, not subfolders. Names must have an image extension (jpg,
//!   jpeg, png, bmp, tif, tiff, webp); other names and hidden names (`.name`, the usual temporary
//!   names of atomic writers) are ignored.
//! - A file is read once its size and modification time are unchanged between two scans and it
//!   is not empty. A file renamed into the folder complete (the recommended way to deliver) is
//!   therefore read after at most two intervals; a file being written is not read half-way.
//! - A picture that is cut short (a JPEG that ends before its end-of-image marker, a PNG before
//!   its `IEND` chunk: [`leukoscope_model::picture::check`]) is taken as still being written (a
//!   writer that pauses longer than an interval) and looked at again on the next scans; if it
//!   stays so for 10 s it is reported as `Skipped` (and read again if it changes). It never
//!   becomes a frame.
//! - Content that is not a JPEG or PNG (whatever the name says), or not a whole picture for
//!   another reason (corrupt structure, dimensions beyond the decode limits), is `Skipped` with
//!   the reason, like in the files source.
//! - A file that is rewritten later (new size or time) is read again as a new frame.
//! - **Files already in the folder at start are caught up** (`catch_up = true`, the default):
//!   they are read like new files, marked [`Frame::catch_up`](super::Frame::catch_up), and the run
//!   skips those the database already has (same path and sha256), so pictures that arrived while
//!   the service was down are classified at the next start and none twice; a picture replaced
//!   under the same name (other bytes) is classified again. A file that changes after the start
//!   is a new picture, not a catch-up. `watch_existing = true` reads them all, recorded or not
//!   (no catch-up mark); both off: files already there are never read.
//! - If the folder disappears (unmounted share), the source sends `Lost`, keeps scanning and sends
//!   `Restored` when it is back; files it had already read are not read again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use leukoscope_model::images::is_image_file;
use leukoscope_model::picture::PictureError;

use super::mailbox::{Mailbox, Policy};
use super::{SourceError, SourceEvent, SourceHandle, SourceOptions};

/// How long a file may look incomplete before it is reported.
const INCOMPLETE_FOR: Duration = Duration::from_secs(10);

/// Starts watching `dir`. The folder must exist and be readable.
pub fn open(dir: &Path, opts: &SourceOptions) -> Result<SourceHandle, SourceError> {
    let folder_error = |reason: String| SourceError::Folder {
        dir: dir.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(dir).map_err(|e| folder_error(e.to_string()))?;
    if !meta.is_dir() {
        return Err(folder_error("not a folder".into()));
    }
    let mut watcher = Watcher::new(dir.to_path_buf(), opts.max_frame_bytes);
    let first = watcher.list().map_err(|e| folder_error(e.to_string()))?;
    match (opts.watch_existing, opts.catch_up) {
        // Read like new files, unmarked.
        (true, _) => {}
        (false, true) => watcher.existing = first.into_iter().collect(),
        (false, false) => watcher.mark_read(first),
    }
    let interval = Duration::from_millis(opts.poll_interval_ms.max(10));
    super::spawn(
        &format!("source watch:{}", dir.display()),
        Policy::Backpressure(2),
        move |mb| watcher.run(mb, interval),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

#[derive(Debug)]
struct Tracked {
    /// As seen at the last scan.
    seen: Stamp,
    /// Unchanged since the scan before.
    steady: bool,
    /// The stamp it had when it was last read.
    read: Option<Stamp>,
    /// Since when it has looked incomplete.
    incomplete_since: Option<Instant>,
}

struct Watcher {
    dir: PathBuf,
    max_bytes: usize,
    files: HashMap<PathBuf, Tracked>,
    seq: u64,
    lost: bool,
    /// Files there at start, with their stamps then (catch-up): read as `catch_up` frames unless
    /// they change first.
    existing: HashMap<PathBuf, Stamp>,
}

impl Watcher {
    fn new(dir: PathBuf, max_bytes: usize) -> Self {
        Watcher {
            dir,
            max_bytes,
            files: HashMap::new(),
            seq: 0,
            lost: false,
            existing: HashMap::new(),
        }
    }

    /// The image files in the folder now, with their stamps.
    fn list(&self) -> std::io::Result<Vec<(PathBuf, Stamp)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if !is_candidate(&path) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let stamp = Stamp {
                len: meta.len(),
                modified: meta.modified().ok(),
            };
            out.push((path, stamp));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn mark_read(&mut self, files: Vec<(PathBuf, Stamp)>) {
        for (path, stamp) in files {
            self.files.insert(
                path,
                Tracked {
                    seen: stamp,
                    steady: true,
                    read: Some(stamp),
                    incomplete_since: None,
                },
            );
        }
    }

    fn run(&mut self, mb: &Mailbox, interval: Duration) {
        loop {
            for event in self.scan() {
                if !mb.send(event) {
                    return;
                }
            }
            if !mb.sleep(interval) {
                return;
            }
        }
    }

    /// One scan: the events it produces.
    fn scan(&mut self) -> Vec<SourceEvent> {
        let mut events = Vec::new();
        let listed = match self.list() {
            Ok(l) => l,
            Err(e) => {
                if !self.lost {
                    self.lost = true;
                    events.push(SourceEvent::Lost {
                        reason: format!("watch folder {}: {e}", self.dir.display()),
                    });
                }
                return events;
            }
        };
        if self.lost {
            self.lost = false;
            events.push(SourceEvent::Restored);
        }
        let present: std::collections::HashSet<&PathBuf> = listed.iter().map(|(p, _)| p).collect();
        self.files.retain(|p, _| present.contains(p));
        for (path, stamp) in listed {
            let first_sight = !self.files.contains_key(&path);
            let t = self.files.entry(path.clone()).or_insert(Tracked {
                seen: stamp,
                steady: false,
                read: None,
                incomplete_since: None,
            });
            if first_sight || t.seen != stamp {
                t.seen = stamp;
                t.steady = false;
                t.incomplete_since = None;
                continue;
            }
            if !t.steady {
                t.steady = true;
            }
            if t.read == Some(stamp) || stamp.len == 0 {
                continue;
            }
            let cut_short = if stamp.len <= self.max_bytes as u64 {
                std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| super::whole_picture(&bytes).err())
                    .filter(PictureError::is_truncated)
            } else {
                None
            };
            if cut_short.is_some() {
                let since = *t.incomplete_since.get_or_insert_with(Instant::now);
                if since.elapsed() < INCOMPLETE_FOR {
                    continue;
                }
            }
            t.read = Some(stamp);
            t.incomplete_since = None;
            if let Some(e) = cut_short {
                events.push(SourceEvent::Skipped {
                    origin: path.display().to_string(),
                    reason: format!("{e}, unchanged for {} s", INCOMPLETE_FOR.as_secs()),
                });
                continue;
            }
            self.seq += 1;
            let mut event = super::files::read_frame(&path, self.seq, self.max_bytes);
            let there_at_start = self.existing.remove(&path);
            match &mut event {
                SourceEvent::Frame(f) => f.catch_up = there_at_start == Some(stamp),
                _ => self.seq -= 1,
            }
            events.push(event);
        }
        events
    }
}

/// A picture name (the extensions `edge classify` walks folders for) that is not hidden (atomic writers use hidden temporary names).
fn is_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') {
        return false;
    }
    is_image_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_visible_image_names() {
        for (name, ok) in [
            ("a.jpg", true),
            ("B.JPEG", true),
            ("c.png", true),
            ("notes.txt", false),
            (".a.jpg", false),
            ("a.jpg.part", false),
            ("noext", false),
        ] {
            assert_eq!(is_candidate(Path::new(name)), ok, "{name}");
        }
    }

    #[test]
    fn cut_pictures_are_waited_for_then_skipped_and_corrupt_ones_skipped_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&image::RgbImage::from_pixel(
                32,
                24,
                image::Rgb([90, 40, 160]),
            ))
            .unwrap();
        let mut png = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let mut bad_crc = png.into_inner();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xFF;
        std::fs::write(dir.path().join("cut.jpg"), &jpeg[..jpeg.len() - 2]).unwrap();
        std::fs::write(dir.path().join("crc.png"), &bad_crc).unwrap();
        let mut w = Watcher::new(dir.path().to_path_buf(), 1 << 20);
        let describe = |events: Vec<SourceEvent>| -> Vec<String> {
            events
                .into_iter()
                .map(|e| match e {
                    SourceEvent::Skipped { origin, reason } => {
                        format!("{}: {reason}", Path::new(&origin).display())
                    }
                    other => format!("{other:?}"),
                })
                .collect()
        };
        assert!(w.scan().is_empty(), "first sight: not steady yet");
        let second = describe(w.scan());
        assert_eq!(second.len(), 1, "{second:?}");
        assert!(
            second[0].contains("crc.png") && second[0].contains("fails its CRC check"),
            "{second:?}"
        );
        assert!(
            w.scan().is_empty(),
            "the cut JPEG may still be being written"
        );
        let cut = w.files.get_mut(&dir.path().join("cut.jpg")).unwrap();
        cut.incomplete_since = Some(Instant::now() - INCOMPLETE_FOR);
        let late = describe(w.scan());
        assert_eq!(late.len(), 1, "{late:?}");
        assert!(
            late[0].contains("cut.jpg")
                && late[0].contains("truncated JPEG")
                && late[0].contains("unchanged for 10 s"),
            "{late:?}"
        );
        assert!(w.scan().is_empty(), "reported once");

        // Completed later: read as a frame.
        std::fs::write(dir.path().join("cut.jpg"), &jpeg).unwrap();
        let mut events = Vec::new();
        for _ in 0..3 {
            events.extend(w.scan());
        }
        assert!(
            matches!(&events[..], [SourceEvent::Frame(f)] if f.origin.ends_with("cut.jpg")),
            "{events:?}"
        );
    }
}
