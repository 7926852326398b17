//! Slide scans with the shipped int8 model on real pictures (the Taleqani test split of its
//! manifest), as a camera would show them: each picture a field held under the objective for a
//! few frames (±2 px jitter, sensor noise, exposure flicker, JPEG), piped into
//! `edge run --source -`. The verdict must count fields, not frames. Reported as ignored when
//! the dataset is not there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use leukoscope_model::manifest::{self, Split};
use leukoscope_model::seeded::SplitMix64;
use leukoscope_tests::{program, shared_data, workspace};
use libtest_mimic::{Arguments, Failed, Trial};

const MODEL: &str = "models/all-mnv2x075-224-int8.onnx";
const MANIFEST: &str = "models/all-mnv2x075-224.manifest.csv";

/// The test-split pictures of `class`, by name.
fn test_pictures(class: &str) -> Vec<PathBuf> {
    let rows = manifest::read(&workspace().join(MANIFEST)).expect("the shipped manifest");
    let data = shared_data().join("all-taleqani");
    let mut files: Vec<PathBuf> = rows
        .into_iter()
        .filter(|r| r.split == Split::Test && r.class == class)
        .map(|r| data.join(r.file))
        .collect();
    files.sort();
    files
}

/// `frames` camera frames of `picture` held still: 220 px windows moved by up to ±2 px, noise
/// of ±6 grey levels, a gain of ±4 %, JPEG quality 90.
fn held(picture: &Path, frames: usize, seed: u64) -> Vec<u8> {
    let img = image::open(picture).expect("a dataset picture").into_rgb8();
    let mut rng = SplitMix64::new(seed);
    let mut stream = Vec::new();
    for _ in 0..frames {
        let (dx, dy) = (rng.below(5) as u32, rng.below(5) as u32);
        let gain = 0.96 + rng.unit() * 0.08;
        let frame =
            image::RgbImage::from_fn(220, 220, |x, y| {
                let p = img.get_pixel(x + dx, y + dy);
                image::Rgb(p.0.map(|v| {
                    (f32::from(v) * gain + (rng.unit() - 0.5) * 12.0).clamp(0.0, 255.0) as u8
                }))
            });
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut stream, 90)
            .encode_image(&frame)
            .unwrap();
    }
    stream
}

/// Runs `edge run --source -` with the shipped model on `stream`; returns its `SLIDE` line.
fn slide_of(stream: Vec<u8>) -> Result<String, Failed> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(program("edge"))
        .args(["run", "--source", "-", "--model"])
        .arg(workspace().join(MODEL))
        .arg("--db")
        .arg(dir.path().join("audit.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("edge run: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&stream));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    feeder.join().unwrap().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "edge run failed\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    stdout
        .lines()
        .find(|l| l.starts_with("SLIDE "))
        .map(String::from)
        .ok_or_else(|| format!("no SLIDE line\n{stdout}").into())
}

fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn expect(slide: &str, key: &str, wanted: &str) -> Result<(), Failed> {
    match value(slide, key) {
        Some(v) if v == wanted => Ok(()),
        other => Err(format!("{key}={other:?}, expected {wanted}: {slide}").into()),
    }
}

fn fields_in(slide: &str, range: std::ops::RangeInclusive<u32>) -> Result<(), Failed> {
    let n: u32 = value(slide, "fields")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no fields= in {slide}"))?;
    if range.contains(&n) {
        Ok(())
    } else {
        Err(format!("fields={n}, expected {range:?}: {slide}").into())
    }
}

/// 30 distinct fields held 4 frames each; `blasts` of them are Pro-B pictures.
fn scan(blasts: usize) -> Vec<u8> {
    let benign = test_pictures("Benign");
    let pro = test_pictures("Pro");
    (0..30)
        .flat_map(|i| {
            let picture = if i % 10 == 5 && i / 10 < blasts {
                &pro[i / 10]
            } else {
                &benign[i]
            };
            held(picture, 4, i as u64)
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    let present = shared_data().join("all-taleqani").is_dir();
    let trials = vec![
        Trial::test(
            "one_field_held_for_60_frames_is_one_field_and_insufficient",
            || {
                let slide = slide_of(held(&test_pictures("Benign")[0], 60, 1))?;
                expect(&slide, "frames", "60")?;
                expect(&slide, "fields", "1")?;
                expect(&slide, "verdict", "insufficient")
            },
        ),
        Trial::test("a_benign_scan_of_30_fields_sees_no_blasts", || {
            let slide = slide_of(scan(0))?;
            fields_in(&slide, 27..=33)?;
            expect(&slide, "verdict", "no_blasts")
        }),
        Trial::test("the_same_scan_with_3_blast_fields_is_referred", || {
            let slide = slide_of(scan(3))?;
            fields_in(&slide, 27..=33)?;
            expect(&slide, "verdict", "refer")
        }),
    ];
    let trials = trials
        .into_iter()
        .map(|t| t.with_ignored_flag(!present))
        .collect();
    if !present {
        eprintln!(
            "no {} here: the slide scans are ignored",
            shared_data().join("all-taleqani").display()
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
