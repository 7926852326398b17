//! The stratified, seeded train/validation/test split and its manifest.
//!
//! Images with identical bytes (same sha256) form one group and always land in the same split,
//! so a duplicate can never leak from training into evaluation. The manifest (`manifest.csv`:
//! `file,sha256,class,split`) records the split; giving it back reproduces the split exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use leukoscope_model::manifest::{self, ManifestError, ManifestRow};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::DataError;
use super::folder::ImageFolder;

pub use leukoscope_model::manifest::Split;

/// Fractions of each class that go to validation and test (the rest is training).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SplitFractions {
    /// Validation fraction (default 0.1).
    pub val: f64,
    /// Test fraction (default 0.1).
    pub test: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        SplitFractions {
            val: 0.1,
            test: 0.1,
        }
    }
}

/// The split assigned to every sample of an [`ImageFolder`], by sample index.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment(pub Vec<Split>);

impl Assignment {
    /// Indices of the samples in `split`, in sample order.
    pub fn indices(&self, split: Split) -> Vec<usize> {
        (0..self.0.len()).filter(|&i| self.0[i] == split).collect()
    }
}

/// Splits a dataset: per class, groups of identical images are shuffled with `seed` and cut into
/// test, validation and training, each of the first two holding `round(n × fraction)` images,
/// at least one.
pub fn stratified_split(folder: &ImageFolder, fractions: SplitFractions, seed: u64) -> Assignment {
    // Groups of identical bytes, keyed by hash; a group belongs to the class of its first member.
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in folder.samples.iter().enumerate() {
        groups.entry(s.sha256.as_str()).or_default().push(i);
    }
    let mut per_class: Vec<Vec<Vec<usize>>> = vec![Vec::new(); folder.classes.len()];
    for members in groups.into_values() {
        per_class[folder.samples[members[0]].class].push(members);
    }
    let mut out = vec![Split::Train; folder.samples.len()];
    for (class, mut class_groups) in per_class.into_iter().enumerate() {
        // Sort by first file so the order (and the result) does not depend on hashes.
        class_groups.sort_by(|a, b| folder.samples[a[0]].file.cmp(&folder.samples[b[0]].file));
        class_groups.shuffle(&mut class_rng(seed, class));
        let n: usize = class_groups.iter().map(Vec::len).sum();
        let quotas = [
            (Split::Test, quota(n, fractions.test)),
            (Split::Val, quota(n, fractions.val)),
        ];
        fill_quotas(class_groups, quotas, &mut out, |_| None);
    }
    Assignment(out)
}

/// Splits a dataset so that the test split holds out whole *groups* — patients or subjects —
/// while validation stays per image within the remaining groups (it only picks the checkpoint).
///
/// The group of a file is the first capture of `pattern` on its path relative to the data folder
/// (for C-NMC, `UID_(H?\d+)_` gives the subject); a file the pattern does not match is an error.
/// Per class, groups are shuffled with `seed` and taken into test until it holds about
/// `fractions.test` of the class, skipping a group that would overshoot by more than half (the
/// smallest group is taken if none fits). Byte-identical copies of a test image go to test too.
pub fn group_held_out_split(
    folder: &ImageFolder,
    fractions: SplitFractions,
    seed: u64,
    pattern: &regex::Regex,
) -> Result<Assignment, DataError> {
    let mut per_class: Vec<BTreeMap<String, Vec<usize>>> =
        vec![BTreeMap::new(); folder.classes.len()];
    for (i, s) in folder.samples.iter().enumerate() {
        let key = pattern
            .captures(&s.file)
            .and_then(|c| c.get(1).or_else(|| c.get(0)))
            .ok_or_else(|| DataError::Unusable {
                path: folder.root.join(&s.file),
                reason: format!("--test-group pattern '{pattern}' does not match this file name"),
            })?;
        per_class[s.class]
            .entry(key.as_str().to_string())
            .or_default()
            .push(i);
    }
    let mut out = vec![Split::Train; folder.samples.len()];
    for (class, groups) in per_class.into_iter().enumerate() {
        let n: usize = groups.values().map(Vec::len).sum();
        if n == 0 {
            continue;
        }
        let want_test = quota(n, fractions.test);
        let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
        let mut rng = class_rng(seed, class);
        groups.shuffle(&mut rng);
        let mut test = 0;
        let mut taken = vec![false; groups.len()];
        for (k, g) in groups.iter().enumerate() {
            if test < want_test && test + g.len() <= want_test + want_test / 2 {
                test += g.len();
                taken[k] = true;
            }
        }
        if test == 0 && want_test > 0 {
            let smallest = (0..groups.len()).min_by_key(|&k| groups[k].len()).unwrap();
            taken[smallest] = true;
        }
        let mut rest = Vec::new();
        for (g, t) in groups.into_iter().zip(taken) {
            if t {
                g.iter().for_each(|&i| out[i] = Split::Test);
            } else {
                rest.extend(g);
            }
        }
        // Validation per image (identical bytes kept together), from the groups left for training.
        let test_hashes: std::collections::HashSet<&str> = (0..out.len())
            .filter(|&i| out[i] == Split::Test)
            .map(|i| folder.samples[i].sha256.as_str())
            .collect();
        let mut by_hash: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for i in rest {
            by_hash
                .entry(folder.samples[i].sha256.as_str())
                .or_default()
                .push(i);
        }
        let mut rest: Vec<Vec<usize>> = by_hash.into_values().collect();
        rest.sort_by(|a, b| folder.samples[a[0]].file.cmp(&folder.samples[b[0]].file));
        rest.shuffle(&mut rng);
        let is_test = |g: &[usize]| {
            test_hashes
                .contains(folder.samples[g[0]].sha256.as_str())
                .then_some(Split::Test)
        };
        fill_quotas(
            rest,
            [(Split::Val, quota(n, fractions.val))],
            &mut out,
            is_test,
        );
    }
    Ok(Assignment(out))
}

/// The shuffling generator of one class: seeded by the split seed and the class index.
fn class_rng(seed: u64, class: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (class as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// `round(n × fraction)` images, at least one when the fraction is not zero.
fn quota(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).round() as usize).max(usize::from(fraction > 0.0))
}

/// Assigns `groups`, in order and whole, to the first split of `quotas` still short of its count
/// (training once all are full), unless `forced` names the group's split.
fn fill_quotas<const N: usize>(
    groups: Vec<Vec<usize>>,
    mut quotas: [(Split, usize); N],
    out: &mut [Split],
    forced: impl Fn(&[usize]) -> Option<Split>,
) {
    for g in groups {
        let split =
            forced(&g).unwrap_or_else(|| match quotas.iter_mut().find(|(_, left)| *left > 0) {
                Some((split, left)) => {
                    *left = left.saturating_sub(g.len());
                    *split
                }
                None => Split::Train,
            });
        g.iter().for_each(|&i| out[i] = split);
    }
}

/// Writes `manifest.csv` (`file,sha256,class,split`, one row per image, in sample order).
pub fn write_manifest(
    path: &Path,
    folder: &ImageFolder,
    assignment: &Assignment,
) -> Result<(), DataError> {
    let rows: Vec<ManifestRow> = folder
        .samples
        .iter()
        .zip(&assignment.0)
        .map(|(s, &split)| ManifestRow {
            file: s.file.clone(),
            sha256: s.sha256.clone(),
            class: folder.classes[s.class].clone(),
            split,
        })
        .collect();
    manifest::write(path, &rows).map_err(|e| DataError::Manifest {
        path: path.to_path_buf(),
        reason: manifest_reason(e),
    })
}

/// The reason of a manifest error, without the path `DataError::Manifest` names again.
fn manifest_reason(e: ManifestError) -> String {
    match e {
        ManifestError::Manifest { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Reads a manifest and applies it to a scanned folder: every image in the folder must be listed
/// with the same sha256 and class. Images listed but missing are an error too, so a reused
/// manifest reproduces its split exactly or refuses.
pub fn read_manifest(path: &Path, folder: &ImageFolder) -> Result<Assignment, DataError> {
    let bad = |reason: String| DataError::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let mut rows: HashMap<String, ManifestRow> = manifest::read(path)
        .map_err(|e| bad(manifest_reason(e)))?
        .into_iter()
        .map(|row| (row.file.clone(), row))
        .collect();
    let mut out = Vec::with_capacity(folder.samples.len());
    for s in &folder.samples {
        let row = rows.remove(&s.file).ok_or_else(|| {
            bad(format!(
                "{} is in the dataset but not in the manifest",
                s.file
            ))
        })?;
        if row.sha256 != s.sha256 {
            return Err(bad(format!(
                "{} has changed since the manifest was written (sha256 differs)",
                s.file
            )));
        }
        if row.class != folder.classes[s.class] {
            return Err(bad(format!(
                "{} is class '{}' in the manifest but '{}' on disk",
                s.file, row.class, folder.classes[s.class]
            )));
        }
        out.push(row.split);
    }
    if let Some(file) = rows.keys().min() {
        return Err(bad(format!(
            "{} other listed file(s) are missing or unreadable, e.g. {file}",
            rows.len()
        )));
    }
    Ok(Assignment(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::Sample;
    use image::RgbImage;

    fn folder(counts: &[usize]) -> ImageFolder {
        let mut samples = Vec::new();
        for (class, &n) in counts.iter().enumerate() {
            for i in 0..n {
                samples.push(Sample {
                    file: format!("c{class}/{i:04}.png"),
                    sha256: format!("{class:032x}{i:032x}"),
                    class,
                    image: RgbImage::new(1, 1),
                });
            }
        }
        ImageFolder {
            root: "/data".into(),
            classes: (0..counts.len()).map(|c| format!("c{c}")).collect(),
            samples,
            skipped: Vec::new(),
        }
    }

    fn count(f: &ImageFolder, a: &Assignment, class: usize, split: Split) -> usize {
        a.indices(split)
            .into_iter()
            .filter(|&i| f.samples[i].class == class)
            .count()
    }

    #[test]
    fn split_is_stratified_and_seeded() {
        let f = folder(&[100, 40, 7]);
        let a = stratified_split(&f, SplitFractions::default(), 7);
        assert_eq!(
            (count(&f, &a, 0, Split::Test), count(&f, &a, 0, Split::Val)),
            (10, 10)
        );
        assert_eq!(
            (count(&f, &a, 1, Split::Test), count(&f, &a, 1, Split::Val)),
            (4, 4)
        );
        assert_eq!(
            (count(&f, &a, 2, Split::Test), count(&f, &a, 2, Split::Val)),
            (1, 1)
        );
        assert_eq!(a, stratified_split(&f, SplitFractions::default(), 7));
        assert_ne!(a, stratified_split(&f, SplitFractions::default(), 8));
    }

    #[test]
    fn identical_images_never_straddle_splits() {
        let mut f = folder(&[60, 60]);
        // Ten pairs of byte-identical files in class 0.
        for k in 0..10 {
            let h = f.samples[2 * k].sha256.clone();
            f.samples[2 * k + 1].sha256 = h;
        }
        for seed in 0..20 {
            let a = stratified_split(&f, SplitFractions::default(), seed);
            for k in 0..10 {
                assert_eq!(a.0[2 * k], a.0[2 * k + 1], "seed {seed} pair {k}");
            }
        }
    }

    #[test]
    fn held_out_groups_are_whole_and_validation_comes_from_the_rest() {
        // Class 0: subjects s0..s3 with 10 images each; class 1: subjects s4..s5 with 30, 5.
        let mut f = folder(&[40, 35]);
        for (i, s) in f.samples.iter_mut().enumerate() {
            let subject = if i < 40 {
                i / 10
            } else if i < 70 {
                4
            } else {
                5
            };
            s.file = format!("c{}/UID_{subject}_{i}.png", s.class);
        }
        let pattern = regex::Regex::new(r"UID_(\d+)_").unwrap();
        let fr = SplitFractions {
            val: 0.2,
            test: 0.25,
        };
        let a = group_held_out_split(&f, fr, 3, &pattern).unwrap();
        let subject_split = |subject: usize| -> Vec<Split> {
            (0..f.samples.len())
                .filter(|&i| f.samples[i].file.contains(&format!("UID_{subject}_")))
                .map(|i| a.0[i])
                .collect()
        };
        let mut test_subjects = 0;
        for subject in 0..6 {
            let splits = subject_split(subject);
            if splits.contains(&Split::Test) {
                assert!(
                    splits.iter().all(|&s| s == Split::Test),
                    "subject {subject} straddles"
                );
                test_subjects += 1;
            }
        }
        // One subject of class 0 (10 = 25 % of 40); class 1 has only a 30 and a 5: the 5 fits.
        assert_eq!(count(&f, &a, 0, Split::Test), 10);
        assert_eq!(count(&f, &a, 1, Split::Test), 5);
        assert_eq!(test_subjects, 2);
        assert_eq!(count(&f, &a, 0, Split::Val), 8);
        assert_eq!(count(&f, &a, 1, Split::Val), 7);
        assert_eq!(a, group_held_out_split(&f, fr, 3, &pattern).unwrap());

        f.samples[7].file = "c0/no-subject.png".into();
        let err = group_held_out_split(&f, fr, 3, &pattern)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no-subject.png") && err.contains("does not match"),
            "{err}"
        );
    }

    #[test]
    fn manifest_round_trip_reproduces_the_split_and_detects_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.csv");
        let mut f = folder(&[30, 20]);
        f.samples[3].file = "c0/with, comma \"q\".png".into();
        let a = stratified_split(&f, SplitFractions::default(), 1);
        write_manifest(&path, &f, &a).unwrap();
        assert_eq!(read_manifest(&path, &f).unwrap(), a);

        let mut changed = folder(&[30, 20]);
        changed.samples[3].file = f.samples[3].file.clone();
        changed.samples[5].sha256 = "0".repeat(64);
        let err = read_manifest(&path, &changed).unwrap_err().to_string();
        assert!(
            err.contains("c0/0005.png") && err.contains("changed"),
            "{err}"
        );

        let mut fewer = folder(&[30, 20]);
        fewer.samples[3].file = f.samples[3].file.clone();
        fewer.samples.pop();
        let err = read_manifest(&path, &fewer).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");

        std::fs::write(&path, "a,b\n").unwrap();
        assert!(read_manifest(&path, &f).is_err());
    }
}
