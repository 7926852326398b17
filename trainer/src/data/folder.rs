//! Scanning a dataset folder: one subfolder per class, images anywhere below it.

use std::path::{Path, PathBuf};

use image::RgbImage;
use sha2::{Digest, Sha256};

use super::DataError;

/// Fewest images a class may have: with fewer, a stratified split cannot put at least one image
/// of the class in each of train, validation and test.
pub const MIN_IMAGES_PER_CLASS: usize = 5;

/// One image of the dataset, decoded and framed to the model input size.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Path relative to the dataset root, with `/` separators (as in the manifest).
    pub file: String,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
    /// Class index (position of the class folder in sorted order).
    pub class: usize,
    /// The picture, framed (centre crop + resize) to the model input size.
    pub image: RgbImage,
}

/// A file that was skipped, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be used.
    pub reason: String,
}

/// A scanned dataset folder.
#[derive(Debug)]
pub struct ImageFolder {
    /// The dataset folder.
    pub root: PathBuf,
    /// Class names (subfolder names), sorted.
    pub classes: Vec<String>,
    /// Every usable image.
    pub samples: Vec<Sample>,
    /// Files that could not be used.
    pub skipped: Vec<Skipped>,
}

impl ImageFolder {
    /// Number of images per class, in class order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            counts[s.class] += 1;
        }
        counts
    }
}

/// Lists the class folders of `root`, sorted by name. Hidden folders are ignored.
pub fn class_folders(root: &Path) -> Result<Vec<String>, DataError> {
    let entries = std::fs::read_dir(root).map_err(|e| DataError::Folder {
        path: root.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::Folder {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            classes.push(name);
        }
    }
    classes.sort();
    Ok(classes)
}

/// Lists the files of one class folder (recursively), relative to `root`, sorted.
fn class_files(root: &Path, class: &str) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = walkdir::WalkDir::new(root.join(class))
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap_or(e.path())
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            (rel, e.into_path())
        })
        .collect();
    files.sort();
    files
}

/// Reads one file: its sha256 and its picture framed by `fit`.
fn read_sample(
    path: &Path,
    fit: &mut dyn FnMut(&RgbImage) -> Result<RgbImage, String>,
) -> Result<(String, RgbImage), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let img = leukoscope_model::preprocess::decode_image_bytes(&bytes)?;
    Ok((sha256, fit(&img)?))
}

/// Scans and decodes a dataset folder.
///
/// Every image is decoded and framed with `fit` (the contract's framing, see
/// `leukoscope_model::preprocess::Preprocessor::fit`). Unreadable files are reported in
/// [`ImageFolder::skipped`], or refused with `strict`. An empty folder, a single class, or a class
/// with fewer than [`MIN_IMAGES_PER_CLASS`] usable images is an error. `progress` is called after
/// each file with (done, total).
pub fn scan(
    root: &Path,
    strict: bool,
    fit: &mut dyn FnMut(&RgbImage) -> Result<RgbImage, String>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ImageFolder, DataError> {
    let classes = class_folders(root)?;
    let unusable = |reason: String| DataError::Unusable {
        path: root.to_path_buf(),
        reason,
    };
    if classes.is_empty() {
        return Err(unusable(
            "no class folders: a dataset is a folder with one subfolder of images per class".into(),
        ));
    }
    if classes.len() == 1 {
        return Err(unusable(format!(
            "only one class folder ('{}'): a classifier needs at least two",
            classes[0]
        )));
    }
    let files: Vec<(usize, String, PathBuf)> = classes
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            class_files(root, c)
                .into_iter()
                .map(move |(r, p)| (i, r, p))
        })
        .collect();
    let total = files.len();
    let mut samples = Vec::with_capacity(total);
    let mut skipped = Vec::new();
    for (done, (class, file, path)) in files.into_iter().enumerate() {
        match read_sample(&path, fit) {
            Ok((sha256, image)) => samples.push(Sample {
                file,
                sha256,
                class,
                image,
            }),
            Err(reason) if strict => return Err(DataError::Strict { path, reason }),
            Err(reason) => {
                tracing::warn!("skipping {}: {reason}", path.display());
                skipped.push(Skipped { path, reason });
            }
        }
        progress(done + 1, total);
    }
    let folder = ImageFolder {
        root: root.to_path_buf(),
        classes,
        samples,
        skipped,
    };
    let counts = folder.class_counts();
    let small: Vec<String> = folder
        .classes
        .iter()
        .zip(&counts)
        .filter(|(_, n)| **n < MIN_IMAGES_PER_CLASS)
        .map(|(c, n)| format!("{c} ({n})"))
        .collect();
    if !small.is_empty() {
        return Err(unusable(format!(
            "too few usable images in class {}: each class needs at least {MIN_IMAGES_PER_CLASS}",
            small.join(", ")
        )));
    }
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(img: &RgbImage) -> Result<RgbImage, String> {
        Ok(img.clone())
    }

    fn write_class(root: &Path, class: &str, n: usize, shade: u8) {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let img = RgbImage::from_pixel(8, 8, image::Rgb([shade, i as u8, 0]));
            img.save(root.join(class).join(format!("{i:03}.png")))
                .unwrap();
        }
    }

    fn scan_dir(root: &Path, strict: bool) -> Result<ImageFolder, DataError> {
        scan(root, strict, &mut identity, &mut |_, _| {})
    }

    #[test]
    fn scans_classes_in_sorted_order_with_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        write_class(dir.path(), "b_second", 6, 10);
        write_class(dir.path(), "a_first", 5, 200);
        let f = scan_dir(dir.path(), false).unwrap();
        assert_eq!(f.classes, vec!["a_first", "b_second"]);
        assert_eq!(f.class_counts(), vec![5, 6]);
        assert_eq!(f.samples[0].file, "a_first/000.png");
        assert_eq!(f.samples[0].sha256.len(), 64);
    }

    #[test]
    fn empty_folder_and_single_class_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = scan_dir(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("no class folders"), "{err}");
        write_class(dir.path(), "only", 6, 1);
        let err = scan_dir(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("only one class"), "{err}");
        let err = scan_dir(&dir.path().join("missing"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn small_classes_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write_class(dir.path(), "big", 8, 1);
        write_class(dir.path(), "tiny", 2, 2);
        let err = scan_dir(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("tiny (2)"), "{err}");
    }

    #[test]
    fn unreadable_files_are_skipped_and_counted_or_refused_with_strict() {
        let dir = tempfile::tempdir().unwrap();
        write_class(dir.path(), "a", 5, 1);
        write_class(dir.path(), "b", 5, 2);
        std::fs::write(dir.path().join("a/readme.txt"), "not an image").unwrap();
        let good = std::fs::read(dir.path().join("b/000.png")).unwrap();
        std::fs::write(dir.path().join("b/cut.png"), &good[..good.len() / 3]).unwrap();
        let f = scan_dir(dir.path(), false).unwrap();
        assert_eq!(f.samples.len(), 10);
        assert_eq!(f.skipped.len(), 2);
        assert!(f.skipped.iter().any(|s| s.path.ends_with("a/readme.txt")));
        let err = scan_dir(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("--strict"), "{err}");
        assert!(
            err.contains("readme.txt") || err.contains("cut.png"),
            "{err}"
        );
    }
}
