//! Calibration: which pictures, prepared exactly as the device prepares them, and the activation
//! statistics of the f32 model on them (tract, with intermediate tensors exposed as outputs).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use leukoscope_model::contract::ModelContract;
use leukoscope_model::evaluate::EvaluateError;
use leukoscope_model::manifest::ManifestError;
use leukoscope_model::preprocess::{Preprocessor, decode_image};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use crate::QuantizeError;
use crate::ranges::TensorStats;
use leukoscope_model::onnx::OnnxFile;

/// A list of pictures, with their class index when the folder is labeled.
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// The folder the pictures come from.
    pub root: PathBuf,
    /// Picture paths with their class index (into the contract's labels), in a fixed order.
    pub files: Vec<(PathBuf, Option<usize>)>,
}

/// Where to find a set of pictures: a folder, optionally restricted to one split of a trainer
/// manifest (`file,sha256,class,split`, paths relative to the folder).
#[derive(Clone, Debug)]
pub struct ImageSource {
    /// The folder (labeled: one subfolder per class; or any folder of pictures).
    pub dir: PathBuf,
    /// A trainer manifest and the split to take from it.
    pub manifest: Option<(PathBuf, String)>,
}

impl ImageSet {
    /// Lists the pictures of `source`. A folder whose subfolders are all labels of `contract` is
    /// labeled; subfolders that are not labels are an error naming them; a folder without
    /// subfolders is an unlabeled set of pictures.
    pub fn list(source: &ImageSource, contract: &ModelContract) -> Result<Self, QuantizeError> {
        let dir = &source.dir;
        let err = |reason: String| QuantizeError::Data {
            path: dir.clone(),
            reason,
        };
        if !dir.is_dir() {
            return Err(err("not a folder (or cannot be read)".into()));
        }
        // Labeled folders and manifests are read exactly as `edge evaluate` reads them.
        let labeled = |manifest: Option<(PathBuf, String)>| {
            leukoscope_model::evaluate::labeled_files(
                dir,
                &contract.labels,
                &leukoscope_model::evaluate::Selection { manifest },
            )
            .map(|files| files.into_iter().map(|(p, k)| (p, Some(k))).collect())
            .map_err(|e| match e {
                EvaluateError::Folder { path, reason } => QuantizeError::Data { path, reason },
                EvaluateError::Manifest(ManifestError::Manifest { path, reason }) => {
                    QuantizeError::Data { path, reason }
                }
                EvaluateError::Manifest(ManifestError::Picture {
                    file,
                    manifest,
                    reason,
                }) => QuantizeError::Data {
                    path: file,
                    reason: format!("{reason} (listed in {})", manifest.display()),
                },
                other => err(other.to_string()),
            })
        };
        let has_subfolders = std::fs::read_dir(dir)
            .map_err(|e| err(format!("cannot read folder: {e}")))?
            .flatten()
            .any(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'));
        let files: Vec<(PathBuf, Option<usize>)> = if source.manifest.is_some() || has_subfolders {
            labeled(source.manifest.clone())?
        } else {
            leukoscope_model::images::expand_paths(std::slice::from_ref(dir))
                .into_iter()
                .map(|p| (p, None))
                .collect()
        };
        if files.is_empty() {
            return Err(err(
                "no pictures (jpg, jpeg, png, bmp, tif, tiff, webp) in this folder".into(),
            ));
        }
        Ok(ImageSet {
            root: dir.clone(),
            files,
        })
    }

    /// Whether every picture has a class.
    pub fn is_labeled(&self) -> bool {
        self.files.iter().all(|(_, c)| c.is_some())
    }

    /// At most `n` pictures, spread evenly over each class in proportion to its size (stratified;
    /// no randomness, so the same folder always gives the same subset).
    pub fn subset(&self, n: usize) -> ImageSet {
        if n >= self.files.len() {
            return self.clone();
        }
        let mut by_class: BTreeMap<Option<usize>, Vec<&(PathBuf, Option<usize>)>> = BTreeMap::new();
        for f in &self.files {
            by_class.entry(f.1).or_default().push(f);
        }
        let total = self.files.len();
        // Largest-remainder apportionment of n over the classes.
        let mut quota: Vec<(Option<usize>, usize, f64)> = by_class
            .iter()
            .map(|(k, v)| {
                let exact = n as f64 * v.len() as f64 / total as f64;
                (*k, exact.floor() as usize, exact - exact.floor())
            })
            .collect();
        let mut left = n - quota.iter().map(|q| q.1).sum::<usize>();
        let mut order: Vec<usize> = (0..quota.len()).collect();
        order.sort_by(|&a, &b| quota[b].2.total_cmp(&quota[a].2).then(a.cmp(&b)));
        for i in order {
            if left == 0 {
                break;
            }
            quota[i].1 += 1;
            left -= 1;
        }
        let mut files = Vec::new();
        for (k, take, _) in quota {
            let v = &by_class[&k];
            let take = take.min(v.len());
            files.extend((0..take).map(|i| v[i * v.len() / take.max(1)].clone()));
        }
        ImageSet {
            root: self.root.clone(),
            files,
        }
    }

    /// SHA-256 over the pictures' relative paths and contents, in order: names the calibration set
    /// in the recipe.
    pub fn hash(&self) -> Result<String, QuantizeError> {
        let mut h = Sha256::new();
        for (p, _) in &self.files {
            let rel = p.strip_prefix(&self.root).unwrap_or(p);
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            let bytes = std::fs::read(p).map_err(|e| QuantizeError::Io {
                path: p.clone(),
                reason: format!("cannot read: {e}"),
            })?;
            h.update(Sha256::digest(&bytes));
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Decodes and preprocesses every picture with the contract (edge's preprocessing). A picture
    /// that cannot be decoded is an error naming it.
    pub fn inputs(
        &self,
        contract: &ModelContract,
        progress: &dyn Fn(),
    ) -> Result<Vec<Vec<f32>>, QuantizeError> {
        let mut pre = Preprocessor::new(contract.clone());
        self.files
            .iter()
            .map(|(p, _)| {
                let bad = |reason: String| QuantizeError::Data {
                    path: p.clone(),
                    reason,
                };
                let img = decode_image(p).map_err(|e| bad(strip_path(&e.to_string(), p)))?;
                let mut x = vec![0.0; contract.input_len()];
                pre.run_into(&img, &mut x).map_err(|e| bad(e.to_string()))?;
                progress();
                Ok(x)
            })
            .collect()
    }
}

fn strip_path(msg: &str, p: &Path) -> String {
    msg.strip_prefix(&format!("{}: ", p.display()))
        .unwrap_or(msg)
        .to_string()
}

/// Names of the float tensors whose ranges the rewrite needs: the graph input and every node
/// output except the graph outputs.
pub fn activation_tensors(file: &OnnxFile) -> Vec<String> {
    let g = file.graph();
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut names = vec![g.input[0].name.clone()];
    for n in &g.node {
        for o in &n.output {
            if !o.is_empty() && !outputs.contains(&o.as_str()) {
                names.push(o.clone());
            }
        }
    }
    names
}

/// Runs the f32 model on `inputs` and collects min/max (pass 1) and histograms (pass 2) of
/// `tensors`. `progress` is called once per picture and pass.
pub fn collect(
    file: &OnnxFile,
    tensors: &[String],
    inputs: &[Vec<f32>],
    progress: &dyn Fn(),
) -> Result<HashMap<String, TensorStats>, QuantizeError> {
    // The graph input is the picture itself: no need to ask tract for it.
    let input_name = file.graph().input[0].name.clone();
    let exposed: Vec<String> = tensors
        .iter()
        .filter(|t| **t != input_name)
        .cloned()
        .collect();
    let plan = crate::model_file::plan_exposing(file, &exposed)?;
    let (h, w) = file.input_hw();
    let engine = |e: TractError| QuantizeError::Engine {
        path: file.path().to_path_buf(),
        reason: format!("{e:#}"),
    };
    let mut stats: HashMap<String, TensorStats> = tensors
        .iter()
        .map(|t| (t.clone(), TensorStats::new()))
        .collect();
    for pass in 0..2 {
        for x in inputs {
            let t = Tensor::from_shape(&[1, 3, h, w], x).map_err(engine)?;
            let out = plan.run(tvec!(t.into())).map_err(engine)?;
            let has_input = stats.contains_key(&input_name);
            let mut observe = |name: &str, values: &[f32]| {
                let s = stats.get_mut(name).expect("every tensor has stats");
                if pass == 0 {
                    s.observe_range(values);
                } else {
                    s.observe_histogram(values);
                }
            };
            if has_input {
                observe(&input_name, x);
            }
            for (name, value) in exposed.iter().zip(out.iter().skip(1)) {
                let v = value.cast_to::<f32>().map_err(engine)?;
                let v = v.to_plain_array_view::<f32>().map_err(engine)?;
                match v.as_slice_memory_order() {
                    Some(s) => observe(name, s),
                    None => observe(name, &v.iter().copied().collect::<Vec<f32>>()),
                }
            }
            progress();
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> ModelContract {
        ModelContract::new(vec!["a".into(), "b".into()], 8)
    }

    fn write_png(p: &Path, shade: u8) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(12, 10, image::Rgb([shade, 100, 50]))
            .save(p)
            .unwrap();
    }

    #[test]
    fn labeled_folders_are_listed_and_subsets_are_stratified() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..30 {
            write_png(&d.path().join(format!("a/{i:02}.png")), i as u8);
        }
        for i in 0..10 {
            write_png(&d.path().join(format!("b/{i:02}.png")), i as u8);
        }
        let src = ImageSource {
            dir: d.path().into(),
            manifest: None,
        };
        let set = ImageSet::list(&src, &contract()).unwrap();
        assert!(set.is_labeled());
        assert_eq!(set.files.len(), 40);
        let sub = set.subset(8);
        assert_eq!(sub.files.len(), 8);
        assert_eq!(sub.files.iter().filter(|f| f.1 == Some(0)).count(), 6);
        assert_eq!(sub.files.iter().filter(|f| f.1 == Some(1)).count(), 2);
        // Deterministic, and the hash depends on the content.
        assert_eq!(sub.hash().unwrap(), set.subset(8).hash().unwrap());
        assert_ne!(sub.hash().unwrap(), set.subset(9).hash().unwrap());
        let x = sub.inputs(&contract(), &|| {}).unwrap();
        assert_eq!(x.len(), 8);
        assert_eq!(x[0].len(), 3 * 64);
    }

    #[test]
    fn unusable_folders_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let src = |p: &Path| ImageSource {
            dir: p.into(),
            manifest: None,
        };
        let e = ImageSet::list(&src(d.path()), &contract())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no pictures"), "{e}");
        let e = ImageSet::list(&src(&d.path().join("missing")), &contract())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("not a folder"), "{e}");
        write_png(&d.path().join("zebra/1.png"), 1);
        let e = ImageSet::list(&src(d.path()), &contract())
            .unwrap_err()
            .to_string();
        assert!(e.contains("zebra") && e.contains("not labels"), "{e}");
        // A file with a picture's name that is not a picture.
        let u = tempfile::tempdir().unwrap();
        std::fs::write(u.path().join("notes.jpg"), b"hello").unwrap();
        let set = ImageSet::list(&src(u.path()), &contract()).unwrap();
        let e = set.inputs(&contract(), &|| {}).unwrap_err().to_string();
        assert!(e.contains("notes.jpg") && e.contains("not an image"), "{e}");
    }

    #[test]
    fn manifests_select_one_split() {
        let d = tempfile::tempdir().unwrap();
        for (i, c) in ["a", "b", "a", "b"].iter().enumerate() {
            write_png(&d.path().join(format!("{c}/{i}.png")), i as u8);
        }
        let m = d.path().join("manifest.csv");
        // Readers check every listed file's digest, so the fixture lists the real ones.
        let digest = |f: &str| {
            leukoscope_model::manifest::sha256_hex(&std::fs::read(d.path().join(f)).unwrap())
        };
        std::fs::write(
            &m,
            format!(
                "file,sha256,class,split\na/0.png,{},a,train\nb/1.png,{},b,test\na/2.png,{},a,test\nb/3.png,{},b,train\n",
                digest("a/0.png"),
                digest("b/1.png"),
                digest("a/2.png"),
                digest("b/3.png")
            ),
        )
        .unwrap();
        let src = ImageSource {
            dir: d.path().into(),
            manifest: Some((m.clone(), "test".into())),
        };
        let set = ImageSet::list(&src, &contract()).unwrap();
        let names: Vec<_> = set.files.iter().map(|f| f.0.clone()).collect();
        assert_eq!(
            names,
            vec![d.path().join("b/1.png"), d.path().join("a/2.png")]
        );
        let bad = ImageSource {
            dir: d.path().into(),
            manifest: Some((m, "holdout".into())),
        };
        assert!(
            ImageSet::list(&bad, &contract())
                .unwrap_err()
                .to_string()
                .contains("holdout")
        );
    }
}
