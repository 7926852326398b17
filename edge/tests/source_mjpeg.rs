//! MJPEG stream sources: a stream of JPEGs the test encodes itself, with garbage, a truncated frame
//! and an oversized non-frame in between, through a real pipe (`open_reader`) and through this
//! process's standard input (`--source -`, by running the test binary again as a child).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use edge::source::{self, FrameData, SourceEvent, SourceOptions, SourceSpec};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn jpeg(seed: u64, width: u32, height: u32) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let img = RgbImage::from_fn(width, height, |x, y| {
        let n: u8 = rng.random_range(0..40);
        image::Rgb([(x * 7) as u8 ^ n, (y * 5) as u8, n.wrapping_mul(3)])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

/// The good frames, and a stream holding them with bad parts in between.
fn stream() -> (Vec<Vec<u8>>, Vec<u8>, usize) {
    let good: Vec<Vec<u8>> = (0..8).map(|s| jpeg(s, 64 + 8 * s as u32, 48)).collect();
    let mut s = Vec::new();
    let mut bad = 0;
    s.extend(b"\n\x00garbage before the first frame");
    bad += 1;
    for (i, f) in good.iter().enumerate() {
        s.extend(f);
        match i {
            1 => {
                // Garbage with stray FF bytes between frames.
                s.extend([0xFF, 0x00, 0x12, 0xFF, 0xFF, 0x34]);
                bad += 1;
            }
            3 => {
                // A frame cut off in its image data, followed directly by the next frame.
                s.extend(&good[0][..good[0].len() / 2]);
                bad += 1;
            }
            5 => {
                // Something that starts like a JPEG and never ends (dropped at the size limit).
                s.extend([0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02]);
                s.extend(std::iter::repeat_n(0x11u8, 300_000));
                bad += 1;
            }
            _ => {}
        }
    }
    // A truncated frame at the very end.
    s.extend(&good[2][..100]);
    bad += 1;
    (good, s, bad)
}

fn opts() -> SourceOptions {
    SourceOptions {
        max_frame_bytes: 100_000,
        ..SourceOptions::default()
    }
}

/// Drains a source to its end: (frames in order, skipped reasons).
/// A frame as the tests look at it: sequence number, origin, bytes.
type Got = (u64, String, Vec<u8>);

fn collect(h: &source::SourceHandle) -> (Vec<Got>, Vec<String>) {
    let (mut frames, mut skipped) = (Vec::new(), Vec::new());
    loop {
        match h
            .recv_timeout(Duration::from_secs(30))
            .expect("source ended without End")
        {
            SourceEvent::Frame(f) => match f.data {
                FrameData::Encoded(b) => frames.push((f.seq, f.origin, b)),
                FrameData::Rgb(_) => panic!("a stream gives encoded frames"),
            },
            SourceEvent::Skipped { reason, .. } => skipped.push(reason),
            SourceEvent::End => return (frames, skipped),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn every_good_frame_comes_out_of_a_dirty_stream_through_a_pipe() {
    let (good, bytes, bad) = stream();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let h = source::open_reader(reader, "pipe", &opts()).unwrap();
    let w = std::thread::spawn(move || {
        // Odd chunk sizes so frames and markers straddle reads.
        for chunk in bytes.chunks(4093) {
            writer.write_all(chunk).unwrap();
        }
    });
    let (frames, skipped) = collect(&h);
    w.join().unwrap();
    assert_eq!(frames.len(), good.len(), "skipped: {skipped:?}");
    for (i, ((seq, origin, b), g)) in frames.iter().zip(&good).enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(origin, &format!("pipe#{}", i + 1));
        assert_eq!(b, g, "frame {i} differs");
        leukoscope_model::preprocess::decode_image_bytes(b).unwrap();
    }
    assert!(skipped.len() >= bad, "{skipped:?}");
    assert!(
        skipped.iter().any(|r| r.contains("size limit")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|r| r.contains("stream ended")),
        "{skipped:?}"
    );
    // After End the source is finished.
    assert!(matches!(
        h.recv_timeout(Duration::from_secs(5)),
        Err(source::RecvTimeoutError::Disconnected)
    ));
    h.stop();
}

/// In the child: read `--source -` and print one line per event.
#[test]
fn stdin_child() {
    if std::env::var_os("LEUKOSCOPE_STDIN_CHILD").is_none() {
        return;
    }
    let h = source::open(&SourceSpec::Stdin, &opts()).unwrap();
    let (frames, skipped) = collect(&h);
    for (seq, origin, b) in frames {
        println!("FRAME {seq} {origin} {}", b.len());
    }
    println!("SKIPPED {}", skipped.len());
    h.stop();
}

#[test]
fn the_stdin_source_reads_a_real_pipe() {
    let (good, bytes, bad) = stream();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stdin_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("LEUKOSCOPE_STDIN_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let w = std::thread::spawn(move || {
        for chunk in bytes.chunks(1000) {
            stdin.write_all(chunk).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // The test harness may print its own words before the first line on the same line.
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.find("FRAME ").map(|i| &l[i..]))
        .collect();
    let expected: Vec<String> = good
        .iter()
        .enumerate()
        .map(|(i, g)| format!("FRAME {} stdin#{} {}", i + 1, i + 1, g.len()))
        .collect();
    assert_eq!(lines, expected, "{text}");
    let skipped: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("SKIPPED "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(skipped >= bad);
}

#[test]
fn stop_returns_while_the_reader_is_blocked() {
    // The consumer stops while the reader thread is blocked in read(2) on a pipe whose writer is
    // still open: stop must return anyway (the thread is left to end when the pipe closes).
    let (reader, mut writer) = std::io::pipe().unwrap();
    let h = source::open_reader(reader, "pipe", &opts()).unwrap();
    writer.write_all(&jpeg(1, 32, 32)).unwrap();
    assert!(matches!(
        h.recv_timeout(Duration::from_secs(30)),
        Ok(SourceEvent::Frame(_))
    ));
    h.stop();
    drop(writer);
}
