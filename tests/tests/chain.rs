//! The whole chain on a small seeded synthetic dataset, through the programs a user runs:
//! `trainer fit` → `trainer export` → `quantize` → `edge classify` and `edge run` on an MJPEG
//! stream → rows in the audit database with the expected labels.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use edge::store::{SessionState, Store};
use leukoscope_tests::{program, run, text};

/// A synthetic smear field tinted towards red (`Benign`) or blue (`Pro`), as JPEG.
fn smear(width: u32, height: u32, seed: u64, class: &str) -> Vec<u8> {
    let shift: i16 = if class == "Benign" { 28 } else { -28 };
    let mut img = edge::quality::synthetic_smear(width, height, seed);
    for px in img.pixels_mut() {
        px[0] = (i16::from(px[0]) + shift).clamp(0, 255) as u8;
        px[2] = (i16::from(px[2]) - shift).clamp(0, 255) as u8;
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

fn dataset(root: &Path) {
    for (c, class) in ["Benign", "Pro"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..30u64 {
            std::fs::write(
                dir.join(format!("{i:03}.jpg")),
                smear(96, 96, 1000 * c as u64 + i, class),
            )
            .unwrap();
        }
    }
}

#[test]
fn train_export_quantize_classify_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    dataset(&dir.path().join("data"));

    let out = run(
        "trainer",
        &[
            "fit",
            "--data",
            &path("data"),
            "--model",
            "cnn",
            "--size",
            "32",
            // 60 pictures of 32x32 at batch 8: the tiny CNN separates the tints after ~8 epochs.
            "--epochs",
            "15",
            "--batch",
            "8",
            "--lr",
            "2e-3",
            "--no-augment",
            "--seed",
            "7",
            "--out",
            &path("run"),
        ],
    );
    assert!(out.status.success(), "trainer fit\n{}", text(&out));

    let out = run(
        "trainer",
        &[
            "export",
            "--run",
            &path("run"),
            "--out",
            &path("models/m-f32.onnx"),
        ],
    );
    assert!(out.status.success(), "trainer export\n{}", text(&out));

    let out = run(
        "quantize",
        &[
            "--model",
            &path("models/m-f32.onnx"),
            "--calibration",
            &path("data"),
            "--samples",
            "20",
            "--bench-runs",
            "3",
            "--out",
            &path("models/m-int8.onnx"),
        ],
    );
    assert!(out.status.success(), "quantize\n{}", text(&out));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("models/m-int8.quantization.json")).unwrap(),
    )
    .unwrap();
    assert!(report.is_object());

    // edge classify with the int8 model: new pictures of each class get their label.
    let pictures = dir.path().join("new");
    std::fs::create_dir_all(&pictures).unwrap();
    for (i, class) in ["Benign", "Pro", "Benign", "Pro"].iter().enumerate() {
        std::fs::write(
            pictures.join(format!("{i}-{class}.jpg")),
            smear(96, 96, 9000 + i as u64, class),
        )
        .unwrap();
    }
    let out = run(
        "edge",
        &[
            "classify",
            "--model",
            &path("models/m-int8.onnx"),
            "--format",
            "jsonl",
            &path("new"),
        ],
    );
    assert!(out.status.success(), "edge classify\n{}", text(&out));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let file = row["path"].as_str().unwrap();
        let expected = if file.contains("Benign") {
            "Benign"
        } else {
            "Pro"
        };
        assert_eq!(row["label"], expected, "{row}");
    }

    // edge run on an MJPEG stream, both variants given: rows in the database.
    let classes = [
        "Pro", "Benign", "Benign", "Pro", "Benign", "Benign", "Benign", "Pro",
    ];
    let stream: Vec<u8> = classes
        .iter()
        .enumerate()
        .flat_map(|(i, class)| smear(320, 240, 5000 + i as u64, class))
        .collect();
    std::fs::write(dir.path().join("stream.mjpeg"), &stream).unwrap();
    let out = Command::new(program("edge"))
        .args([
            "run",
            "--source",
            "-",
            "--model",
            &path("models"),
            "--db",
            &path("audit.db"),
        ])
        .stdin(File::open(dir.path().join("stream.mjpeg")).unwrap())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "edge run\n{}", text(&out));
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].state, SessionState::Closed);
    let labels: Vec<String> = store
        .frames(sessions[0].id)
        .unwrap()
        .into_iter()
        .map(|r| {
            r.frame
                .label
                .unwrap_or_else(|| format!("{:?}", r.frame.decision))
        })
        .collect();
    assert_eq!(labels, classes, "{}", text(&out));
}
