//! Keeping the pictures of flagged frames (blast, uncertain) on disk, referenced from the audit
//! database, under a size cap.
//!
//! # Layout
//! `<folder>/session-000042/000123.jpg` (frame 123 of session 42; `000123-t02.jpg` for tile 2).
//! The database stores the path relative to the folder, with `/` separators, so the folder can
//! be moved or mounted elsewhere.
//!
//! # Order of writes
//! 1. [`FlaggedImages::keep_encoded`] / [`FlaggedImages::keep_rgb`] write the picture to a
//!    temporary file, `fsync` it and rename it into place, and return its relative path;
//! 2. the run loop records the frame with that path ([`crate::store::Store::record_frame`]).
//!
//! So the database never references a missing or half-written file. A crash between 1 and 2
//! leaves an unreferenced file: [`FlaggedImages::sweep_orphans`] (call it once at start-up, after
//! [`crate::store::Store::open`]) removes those, and only files whose names follow the layout
//! above — never anything else that happens to be in the folder.
//!
//! # Size cap
//! Before a picture is kept, the folder's total size plus the picture must fit under the cap.
//! With [`CapPolicy::EvictOldest`] (default) the oldest kept pictures of sessions that are no
//! longer open are removed to make room: their references are cleared in the database first (in
//! one transaction, with the eviction time in `frames.image_evicted`), then the files are
//! deleted. Pictures of the session being scanned are never evicted. When nothing can be
//! evicted — or with [`CapPolicy::StopKeeping`] — the new picture is not kept: `keep_*` returns
//! `Ok(None)`, the frame is recorded without a picture, and a warning is logged once until
//! keeping succeeds again. The database record of every frame (its sha256, figures and result)
//! is never removed.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};
use thiserror::Error;
use tracing::{info, warn};

use crate::store::{Store, StoreError};

/// JPEG quality of pictures encoded from raw frames.
const JPEG_QUALITY: u8 = 90;
/// Pictures evicted per database transaction.
const EVICT_BATCH: usize = 64;

/// What to do when a new picture would exceed the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapPolicy {
    /// Remove the oldest pictures of closed and interrupted sessions; when none are left, stop
    /// keeping new ones.
    #[default]
    EvictOldest,
    /// Keep what is there; do not keep new pictures.
    StopKeeping,
}

/// A picture that could not be kept.
#[derive(Debug, Error)]
pub enum FlaggedError {
    /// The disk is full.
    #[error("{}: disk full, the picture was not kept", path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// A file or folder could not be read, written or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a picture format we know, or could not be encoded.
    #[error("session {session} frame {seq}: {message}")]
    Image {
        /// The session.
        session: i64,
        /// The frame.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// The database failed while making room.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_error(path: &Path, source: std::io::Error) -> FlaggedError {
    if source.kind() == std::io::ErrorKind::StorageFull {
        FlaggedError::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        FlaggedError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The folder of kept pictures.
#[derive(Debug)]
pub struct FlaggedImages {
    root: PathBuf,
    cap_bytes: u64,
    policy: CapPolicy,
    used: u64,
    warned_full: bool,
}

impl FlaggedImages {
    /// Opens (creating if needed) the folder and measures what it holds.
    pub fn open(root: &Path, cap_bytes: u64, policy: CapPolicy) -> Result<Self, FlaggedError> {
        std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
        let used = our_files(root)?.iter().map(|(_, _, size)| size).sum();
        Ok(FlaggedImages {
            root: root.to_path_buf(),
            cap_bytes,
            policy,
            used,
            warned_full: false,
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Bytes of pictures in the folder.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// The absolute path of a picture from its stored relative path.
    pub fn resolve(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }

    /// Keeps an encoded picture (JPEG as received from the camera, or a PNG file). Returns its
    /// path relative to the folder — to pass to `record_frame` — or `None` when the size cap
    /// leaves no room (see the module documentation).
    pub fn keep_encoded(
        &mut self,
        store: &mut Store,
        session: i64,
        seq: u64,
        tile: Option<u32>,
        bytes: &[u8],
    ) -> Result<Option<PathBuf>, FlaggedError> {
        let format = image::guess_format(bytes).map_err(|e| FlaggedError::Image {
            session,
            seq,
            message: format!("not a picture: {e}"),
        })?;
        let ext = match format {
            ImageFormat::Jpeg => "jpg",
            other => other.extensions_str().first().copied().unwrap_or("img"),
        };
        self.keep(store, session, seq, tile, ext, bytes)
    }

    /// Keeps a decoded frame, encoded as JPEG (quality 90). See [`FlaggedImages::keep_encoded`].
    pub fn keep_rgb(
        &mut self,
        store: &mut Store,
        session: i64,
        seq: u64,
        tile: Option<u32>,
        image: &RgbImage,
    ) -> Result<Option<PathBuf>, FlaggedError> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
            .encode_image(image)
            .map_err(|e| FlaggedError::Image {
                session,
                seq,
                message: format!("JPEG encoding failed: {e}"),
            })?;
        self.keep(store, session, seq, tile, "jpg", &jpeg)
    }

    fn keep(
        &mut self,
        store: &mut Store,
        session: i64,
        seq: u64,
        tile: Option<u32>,
        ext: &str,
        bytes: &[u8],
    ) -> Result<Option<PathBuf>, FlaggedError> {
        let size = bytes.len() as u64;
        if !self.make_room(store, size)? {
            if !self.warned_full {
                warn!(
                    folder = %self.root.display(),
                    used = self.used,
                    cap = self.cap_bytes,
                    "flagged-image folder is at its size cap: new flagged pictures are not kept"
                );
                self.warned_full = true;
            }
            return Ok(None);
        }
        let dir_name = format!("session-{session:06}");
        let file_name = match tile {
            Some(t) => format!("{seq:06}-t{t:02}.{ext}"),
            None => format!("{seq:06}.{ext}"),
        };
        let dir = self.root.join(&dir_name);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join(&file_name);
        let tmp = dir.join(format!("{file_name}.tmp"));
        let previous = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_error(&tmp, e));
        }
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
        self.used = self.used - previous.min(self.used) + size;
        self.warned_full = false;
        Ok(Some(PathBuf::from(format!("{dir_name}/{file_name}"))))
    }

    /// Frees space until `need` more bytes fit under the cap. False when it cannot.
    fn make_room(&mut self, store: &mut Store, need: u64) -> Result<bool, FlaggedError> {
        if need > self.cap_bytes {
            return Ok(false);
        }
        while self.used + need > self.cap_bytes {
            if self.policy == CapPolicy::StopKeeping {
                return Ok(false);
            }
            let batch = store.evictable_images(EVICT_BATCH)?;
            if batch.is_empty() {
                return Ok(false);
            }
            // The database first: a crash after this leaves unreferenced files (swept at the
            // next start), never references to deleted files.
            let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
            store.forget_images(&ids)?;
            let mut freed = 0u64;
            for (_, rel) in &batch {
                let path = self.root.join(rel);
                match std::fs::metadata(&path) {
                    Ok(m) => {
                        std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
                        freed += m.len();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&path, e)),
                }
            }
            self.used = self.used.saturating_sub(freed);
            info!(
                pictures = batch.len(),
                bytes = freed,
                "evicted old flagged pictures (size cap)"
            );
        }
        Ok(true)
    }

    /// Removes pictures (and temporary files) the database does not reference: leftovers of a
    /// crash between keeping a picture and recording its frame. Call at start-up, before any
    /// frame is processed. Returns how many files were removed.
    pub fn sweep_orphans(&mut self, store: &Store) -> Result<usize, FlaggedError> {
        let referenced: HashSet<String> = store.referenced_images()?.into_iter().collect();
        let mut removed = 0;
        for (rel, path, _) in our_files(&self.root)? {
            if !referenced.contains(&rel) {
                std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
                removed += 1;
            }
        }
        // Measure again: files may have come or gone behind our back.
        self.used = our_files(&self.root)?.iter().map(|(_, _, size)| size).sum();
        if removed > 0 {
            info!(removed, folder = %self.root.display(), "removed unreferenced flagged pictures");
        }
        Ok(removed)
    }
}

/// Files under `root` that follow our layout: `(relative path, path, size)`.
fn our_files(root: &Path) -> Result<Vec<(String, PathBuf, u64)>, FlaggedError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| io_error(root, e))?;
    for dir in entries {
        let dir = dir.map_err(|e| io_error(root, e))?;
        let dir_name = dir.file_name().to_string_lossy().into_owned();
        if !is_session_dir(&dir_name) || !dir.path().is_dir() {
            continue;
        }
        let files = std::fs::read_dir(dir.path()).map_err(|e| io_error(&dir.path(), e))?;
        for f in files {
            let f = f.map_err(|e| io_error(&dir.path(), e))?;
            let name = f.file_name().to_string_lossy().into_owned();
            let meta = f.metadata().map_err(|e| io_error(&f.path(), e))?;
            if meta.is_file() && is_picture_name(&name) {
                out.push((format!("{dir_name}/{name}"), f.path(), meta.len()));
            }
        }
    }
    Ok(out)
}

fn is_session_dir(name: &str) -> bool {
    name.strip_prefix("session-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `000123.jpg`, `000123-t02.jpg`, and the same with `.tmp` appended.
fn is_picture_name(name: &str) -> bool {
    let name = name.strip_suffix(".tmp").unwrap_or(name);
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let stem_ok = match stem.split_once("-t") {
        Some((seq, tile)) => digits(seq) && digits(tile),
        None => digits(stem),
    };
    stem_ok && !ext.is_empty() && ext.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_recognised() {
        for ok in ["000123.jpg", "7.png", "000123-t02.jpg", "000123.jpg.tmp"] {
            assert!(is_picture_name(ok), "{ok}");
        }
        for bad in [
            "notes.txt",
            "a123.jpg",
            "123",
            "123-t.jpg",
            ".jpg",
            "123.j pg",
            "x.tmp",
        ] {
            assert!(!is_picture_name(bad), "{bad}");
        }
        assert!(is_session_dir("session-000042"));
        assert!(!is_session_dir("session-"));
        assert!(!is_session_dir("Documents"));
    }
}
