//! `PATH...`: image files, and folders walked recursively like `edge classify` does
//! ([`leukoscope_model::images::expand_paths`]: image extensions only, sorted). Each file becomes one frame
//! with its bytes as they are on disk; then the source ends. A file that is missing, unreadable,
//! too large, not a JPEG/PNG, or not a whole picture (cut short, corrupt structure, dimensions
//! beyond the decode limits: [`leukoscope_model::picture::check`]) is a `Skipped` event naming
//! the file and the problem; it never becomes a frame.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::mailbox::Policy;
use super::{Frame, FrameData, SourceError, SourceEvent, SourceHandle, SourceOptions};

/// Starts reading the files (backpressure: no frame is dropped).
pub fn open(paths: &[PathBuf], opts: &SourceOptions) -> Result<SourceHandle, SourceError> {
    let files = leukoscope_model::images::expand_paths(paths);
    let max = opts.max_frame_bytes;
    super::spawn("source files", Policy::Backpressure(2), move |mb| {
        let mut seq = 0;
        for path in &files {
            let event = read_frame(path, seq + 1, max);
            if matches!(event, SourceEvent::Frame(_)) {
                seq += 1;
            }
            if !mb.send(event) {
                return;
            }
        }
        mb.send(SourceEvent::End);
    })
}

/// One file as a frame, or why it is not one.
pub(crate) fn read_frame(path: &Path, seq: u64, max_bytes: usize) -> SourceEvent {
    match read_image_bytes(path, max_bytes) {
        Ok(bytes) => SourceEvent::Frame(Frame {
            seq,
            origin: path.display().to_string(),
            received: SystemTime::now(),
            data: FrameData::Encoded(bytes),
            catch_up: false,
        }),
        Err(reason) => SourceEvent::Skipped {
            origin: path.display().to_string(),
            reason,
        },
    }
}

fn read_image_bytes(path: &Path, max_bytes: usize) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    if meta.len() > max_bytes as u64 {
        return Err(format!(
            "{} bytes, more than the limit of {max_bytes}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    super::whole_picture(&bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}
