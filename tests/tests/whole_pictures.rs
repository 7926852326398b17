//! Only whole pictures, on the real datasets: every picture of `all-taleqani` and `cnmc-2019`
//! passes the completeness check and decodes to exactly the pixels the `image` crate gives (the
//! strict decoder refuses none of them), and the first 3,000 bytes of a dataset picture get an
//! error from `edge classify` with the shipped model, not a label. Reported as ignored when a
//! dataset is not there.

use std::path::{Path, PathBuf};

use leukoscope_model::picture::{DecodeLimits, decode};
use leukoscope_tests::{run, shared_data, shipped_models, text};
use libtest_mimic::{Arguments, Failed, Trial};

fn pictures(root: &Path) -> Vec<PathBuf> {
    let mut files = leukoscope_model::images::expand_paths(&[root.to_path_buf()]);
    files.sort();
    files
}

/// Every picture below `root` decodes, and to the `image` crate's pixels (two threads).
fn all_whole(root: PathBuf) -> Result<(), Failed> {
    let files = pictures(&root);
    if files.is_empty() {
        return Err(format!("no pictures under {}", root.display()).into());
    }
    let check = |part: &[PathBuf]| -> Vec<String> {
        let mut wrong = Vec::new();
        for f in part {
            let bytes = match std::fs::read(f) {
                Ok(b) => b,
                Err(e) => {
                    wrong.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            match decode(&bytes, &DecodeLimits::default()) {
                Err(e) => wrong.push(format!("{}: {e}", f.display())),
                Ok(ours) => {
                    let theirs = image::load_from_memory(&bytes).map(|i| i.into_rgb8());
                    if theirs.ok().as_ref() != Some(&ours) {
                        wrong.push(format!("{}: other pixels than image's", f.display()));
                    }
                }
            }
        }
        wrong
    };
    let (a, b) = files.split_at(files.len() / 2);
    let wrong: Vec<String> = std::thread::scope(|s| {
        let first = s.spawn(|| check(a));
        let mut w = check(b);
        w.extend(first.join().expect("the checking thread ends"));
        w
    });
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {}:\n{}", wrong.len(), files.len(), wrong.join("\n")).into())
    }
}

/// The case: a dataset JPEG cut to its first 3,000 bytes got `label=Pro
/// confidence=0.909`.
fn cut_picture_gets_no_result(model: PathBuf, data: PathBuf) -> Result<(), Failed> {
    let first = pictures(&data.join("Pro"))
        .into_iter()
        .next()
        .ok_or("no Pro pictures")?;
    let bytes = std::fs::read(&first).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..3000.min(bytes.len() / 2)]).map_err(|e| e.to_string())?;
    let out = run(
        "edge",
        &[
            "classify",
            "--model",
            model.to_str().unwrap(),
            "--format",
            "jsonl",
            first.to_str().unwrap(),
            cut.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not JSON lines: {e}\n{}", text(&out)))?;
    let ok = out.status.code() == Some(2)
        && rows.len() == 2
        && rows[0]["label"] == "Pro"
        && rows[1]["label"].is_null()
        && rows[1]["confidence"].is_null()
        && rows[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cut.jpg") && e.contains("truncated JPEG"));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected the whole picture labelled and an error row\n{}",
            text(&out)
        )
        .into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let mut tests = Vec::new();
    for name in ["all-taleqani", "cnmc-2019"] {
        let root = shared_data().join(name);
        let present = root.is_dir();
        if !present {
            eprintln!(
                "{} not found (set LEUKOSCOPE_DATA): its check is reported as ignored",
                root.display()
            );
        }
        tests.push(
            Trial::test(format!("every_{name}_picture_is_whole"), move || {
                all_whole(root)
            })
            .with_ignored_flag(!present),
        );
    }
    let taleqani = shared_data().join("all-taleqani");
    if let Some(model) = shipped_models().into_iter().find(|m| m.data == taleqani) {
        let present = model.data.is_dir();
        tests.push(
            Trial::test(
                "a_cut_dataset_picture_gets_an_error_not_a_label",
                move || cut_picture_gets_no_result(model.path, model.data),
            )
            .with_ignored_flag(!present),
        );
    }
    libtest_mimic::run(&args, tests).exit();
}
