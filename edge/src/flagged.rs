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
//! The rename is made durable by `fsync`ing the session folder too (and the folder itself when a
//! session folder is created): [`leukoscope_model::durable`]. So the database never references
//! a missing or half-written file, even after a power cut. A crash between 1 and 2 leaves an
//! unreferenced file: [`FlaggedImages::sweep_orphans`] (call it once at start-up, after
//! [`crate::store::Store::open`]) removes those, and only files whose names follow the layout
//! above — never anything else that happens to be in the folder.
//!
//! # One database per folder
//! Two databases sharing a folder would overwrite each other's pictures (their session numbers
//! overlap) and each would sweep the other's away as unreferenced. So a folder belongs to one
//! database: [`FlaggedImages::open`] claims an unclaimed folder by writing [`OWNER_FILE`] in it
//! — one line, the canonical absolute path of the database — and refuses a folder claimed by
//! another database ([`FlaggedError::NotOurs`], naming both). A claim names the same database
//! when the path is the same or, the database having been mounted elsewhere, the named file is
//! the same file. Keeping and sweeping refuse a [`Store`] other than the one the folder was
//! opened with, and sweeping reads the claim again before it deletes anything. A database that
//! was moved must be given its folder back by deleting (or rewriting) the owner file.
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
use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};
use leukoscope_model::durable::{self, DurableError};
use thiserror::Error;
use tracing::{info, warn};

use crate::store::{Store, StoreError};

/// The file in a kept-pictures folder naming the database that owns it (see the module
/// documentation): the database's canonical absolute path and a newline.
pub const OWNER_FILE: &str = ".leukoscope-owner";

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
    /// A picture or its folder could not be written durably.
    #[error(transparent)]
    Write(DurableError),
    /// The folder belongs to another database, or the database given is not the folder's.
    #[error(
        "{}: {problem}; refusing to keep or remove pictures there (each database needs its own flagged_dir)",
        folder.display()
    )]
    NotOurs {
        /// The kept-pictures folder.
        folder: PathBuf,
        /// Whose it is and which database wanted it.
        problem: String,
    },
    /// The database failed while making room.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DurableError> for FlaggedError {
    fn from(e: DurableError) -> Self {
        if e.is_disk_full() {
            FlaggedError::DiskFull { path: e.path }
        } else {
            FlaggedError::Write(e)
        }
    }
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
    /// The owning database, as its [`Store::path`] (to check the store given to each call).
    db: PathBuf,
    /// Its canonical path, as written in the owner file.
    db_canonical: PathBuf,
    cap_bytes: u64,
    policy: CapPolicy,
    used: u64,
    warned_full: bool,
}

impl FlaggedImages {
    /// Opens (creating if needed) the folder of `store`'s kept pictures, claims it for `store`
    /// when no database has ([`OWNER_FILE`]), and measures what it holds. A folder claimed by
    /// another database is refused with [`FlaggedError::NotOurs`].
    pub fn open(
        root: &Path,
        store: &Store,
        cap_bytes: u64,
        policy: CapPolicy,
    ) -> Result<Self, FlaggedError> {
        durable::create_dir_all(root)?;
        let db_canonical = std::fs::canonicalize(store.path()).map_err(|e| FlaggedError::Io {
            path: store.path().to_path_buf(),
            source: e,
        })?;
        let flagged = FlaggedImages {
            root: root.to_path_buf(),
            db: store.path().to_path_buf(),
            db_canonical,
            cap_bytes,
            policy,
            used: 0,
            warned_full: false,
        };
        flagged.claim()?;
        let used = our_files(root)?.iter().map(|(_, _, size)| size).sum();
        Ok(FlaggedImages { used, ..flagged })
    }

    /// Claims the folder for our database unless another one has; then checks the claim.
    fn claim(&self) -> Result<(), FlaggedError> {
        let file = self.root.join(OWNER_FILE);
        let mut line = self.db_canonical.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        match std::fs::read(&file) {
            // Empty: a claim cut short by a power cut, before anything was kept under it.
            Ok(found) if found.is_empty() => durable::write_atomic(&file, &line)?,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // `create_new`: of two programs claiming at once, one creates the file.
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&file)
                    .and_then(|mut f| {
                        f.write_all(&line)?;
                        f.sync_all()
                    });
                match created {
                    Ok(()) => durable::sync_dir(&self.root)?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_error(&file, e)),
                }
            }
            Err(e) => return Err(io_error(&file, e)),
        }
        self.check_claim()
    }

    /// The owner file names our database.
    fn check_claim(&self) -> Result<(), FlaggedError> {
        let file = self.root.join(OWNER_FILE);
        let found = match std::fs::read(&file) {
            Ok(found) => found,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_ours(format!(
                    "{OWNER_FILE} has gone (another disk mounted here?), so these may not be the pictures of {}",
                    self.db.display()
                )));
            }
            Err(e) => return Err(io_error(&file, e)),
        };
        let owner = Path::new(OsStr::from_bytes(
            found.strip_suffix(b"\n").unwrap_or(&found),
        ));
        if owner == self.db_canonical || same_file(owner, &self.db_canonical) {
            return Ok(());
        }
        Err(self.not_ours(format!(
            "it holds the kept pictures of the database {} (named in {OWNER_FILE}), not of {}; \
             if {} is that database moved, delete {}",
            owner.display(),
            self.db.display(),
            self.db.display(),
            file.display()
        )))
    }

    /// Refuses a store other than the folder's owner.
    fn check_store(&self, store: &Store) -> Result<(), FlaggedError> {
        if store.path() == self.db {
            return Ok(());
        }
        Err(self.not_ours(format!(
            "it holds the kept pictures of the database {}, not of {}",
            self.db.display(),
            store.path().display()
        )))
    }

    fn not_ours(&self, problem: String) -> FlaggedError {
        FlaggedError::NotOurs {
            folder: self.root.clone(),
            problem,
        }
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
        self.check_store(store)?;
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
        durable::create_dir_all(&dir)?;
        let path = dir.join(&file_name);
        let previous = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        durable::write_atomic(&path, bytes)?;
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
    ///
    /// Refuses ([`FlaggedError::NotOurs`]) unless `store` is the database the folder was opened
    /// with and the folder's owner file still names it.
    pub fn sweep_orphans(&mut self, store: &Store) -> Result<usize, FlaggedError> {
        self.check_store(store)?;
        self.check_claim()?;
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

/// `a` names the same file as `b` (both exist): the same database reached by another path.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
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
