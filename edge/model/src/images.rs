//! Finding picture files: the extensions the build can decode, and command-line paths expanded
//! into the picture files below them.

use std::path::{Path, PathBuf};

/// File extensions (lower case) of the picture formats this build decodes (`image` with its
/// `jpeg` and `png` codecs). Anything else is not a picture to leukoscope.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Whether `path` has the extension of a picture format this build decodes.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .map(|x| x.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.as_str()))
}

/// Expands the command-line paths: files as given, folders recursively (image files only,
/// sorted). A path that does not exist is kept, so it is reported as an error row.
pub fn expand_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = walk(p);
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    out
}
