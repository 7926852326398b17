//! Folder and file sources: `watch:DIR` (files renamed in, files written slowly, non-image
//! content, names that are ignored, files already there) and `PATH...` (pictures that are not
//! whole are skipped with the reason, never frames).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use edge::source::{self, FrameData, SourceError, SourceEvent, SourceOptions, SourceSpec};
use image::RgbImage;

fn jpeg(seed: u8) -> Vec<u8> {
    let img = RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(seed), (y * 3) as u8, seed])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

fn opts() -> SourceOptions {
    SourceOptions {
        poll_interval_ms: 20,
        ..SourceOptions::default()
    }
}

/// The next event that is not a timeout, waiting long enough for any scan.
fn next(h: &source::SourceHandle) -> SourceEvent {
    h.recv_timeout(Duration::from_secs(20)).expect("no event")
}

fn encoded(e: SourceEvent) -> (String, Vec<u8>) {
    match e {
        SourceEvent::Frame(f) => match f.data {
            FrameData::Encoded(b) => (f.origin, b),
            FrameData::Rgb(_) => panic!("files are encoded"),
        },
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn name(origin: &str) -> &str {
    Path::new(origin).file_name().unwrap().to_str().unwrap()
}

#[test]
fn watch_reads_new_complete_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("old.jpg"), jpeg(1)).unwrap();
    let no_catch_up = SourceOptions {
        catch_up: false,
        ..opts()
    };
    let h = source::open(&SourceSpec::Watch { dir: d.into() }, &no_catch_up).unwrap();

    // Ignored names: no event at all (checked below: the next event is the renamed file).
    std::fs::write(d.join("readme.txt"), b"not a picture").unwrap();
    std::fs::write(d.join(".hidden.jpg"), jpeg(2)).unwrap();

    // Delivered atomically: written under a temporary name, renamed in.
    let a = jpeg(3);
    std::fs::write(d.join(".a.jpg.tmp"), &a).unwrap();
    std::fs::rename(d.join(".a.jpg.tmp"), d.join("a.jpg")).unwrap();
    let (origin, bytes) = encoded(next(&h));
    assert_eq!(name(&origin), "a.jpg");
    assert_eq!(bytes, a);

    // Written slowly: the first half, a pause of many scans, then the rest. The source must not
    // hand over the half file.
    let b = jpeg(4);
    let mut f = std::fs::File::create(d.join("b.jpg")).unwrap();
    f.write_all(&b[..b.len() / 2]).unwrap();
    f.flush().unwrap();
    assert!(matches!(
        h.recv_timeout(Duration::from_millis(400)),
        Err(source::RecvTimeoutError::Timeout)
    ));
    f.write_all(&b[b.len() / 2..]).unwrap();
    drop(f);
    let (origin, bytes) = encoded(next(&h));
    assert_eq!(name(&origin), "b.jpg");
    assert_eq!(bytes, b);

    // An image name with other content: skipped, with the reason.
    std::fs::write(d.join("c.jpg"), b"this is text, not a JPEG").unwrap();
    match next(&h) {
        SourceEvent::Skipped { origin, reason } => {
            assert_eq!(name(&origin), "c.jpg");
            assert!(reason.contains("not an image"), "{reason}");
        }
        other => panic!("expected Skipped, got {other:?}"),
    }

    // The folder disappears and comes back.
    std::fs::remove_dir_all(d).unwrap();
    assert!(matches!(next(&h), SourceEvent::Lost { .. }));
    std::fs::create_dir(d).unwrap();
    assert!(matches!(next(&h), SourceEvent::Restored));
    let e = jpeg(5);
    std::fs::write(d.join("e.png.jpg"), &e).unwrap();
    let (origin, bytes) = encoded(next(&h));
    assert_eq!((name(&origin), bytes), ("e.png.jpg", e));
    h.stop();
}

#[test]
fn watch_existing_reads_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let old = jpeg(6);
    std::fs::write(dir.path().join("old.jpg"), &old).unwrap();
    let o = SourceOptions {
        watch_existing: true,
        ..opts()
    };
    let h = source::open(
        &SourceSpec::Watch {
            dir: dir.path().into(),
        },
        &o,
    )
    .unwrap();
    assert_eq!(encoded(next(&h)).1, old);
    h.stop();
}

#[test]
fn catch_up_marks_the_pictures_there_at_start_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let old = jpeg(7);
    std::fs::write(dir.path().join("old.jpg"), &old).unwrap();
    let h = source::open(
        &SourceSpec::Watch {
            dir: dir.path().into(),
        },
        &opts(),
    )
    .unwrap();
    let first = match next(&h) {
        SourceEvent::Frame(f) => f,
        other => panic!("expected the picture already there, got {other:?}"),
    };
    assert_eq!(name(&first.origin), "old.jpg");
    assert!(first.catch_up);
    let new = jpeg(8);
    std::fs::write(dir.path().join("new.jpg"), &new).unwrap();
    match next(&h) {
        SourceEvent::Frame(f) => {
            assert_eq!(name(&f.origin), "new.jpg");
            assert!(!f.catch_up, "a file that arrives after the start is new");
        }
        other => panic!("expected the new picture, got {other:?}"),
    }
    h.stop();
}

#[test]
fn a_missing_watch_folder_is_an_error_naming_it() {
    let e = source::open(&"watch:/no/such/folder".parse().unwrap(), &opts())
        .err()
        .unwrap();
    assert!(matches!(e, SourceError::Folder { .. }));
    assert!(e.to_string().contains("/no/such/folder"), "{e}");
}

#[test]
fn files_and_folders_are_read_in_order_and_bad_ones_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/2.jpg"), jpeg(7)).unwrap();
    std::fs::write(d.join("sub/1.jpg"), jpeg(8)).unwrap();
    std::fs::write(d.join("sub/notes.txt"), b"ignored in folders").unwrap();
    std::fs::write(d.join("broken.png"), b"\x89PNG but not really").unwrap();
    let whole = jpeg(9);
    std::fs::write(d.join("cut.jpg"), &whole[..whole.len() - 40]).unwrap();
    std::fs::write(d.join("empty.jpg"), b"").unwrap();
    let spec = SourceSpec::Files(vec![
        d.join("sub"),
        d.join("missing.jpg"),
        d.join("broken.png"),
        d.join("cut.jpg"),
        d.join("empty.jpg"),
    ]);
    let h = source::open(&spec, &SourceOptions::default()).unwrap();
    let mut seen = Vec::new();
    loop {
        match next(&h) {
            SourceEvent::Frame(f) => seen.push(format!("frame {} {}", f.seq, name(&f.origin))),
            SourceEvent::Skipped { origin, reason } => seen.push(format!(
                "skipped {}: {}",
                name(&origin),
                reason.split(':').next().unwrap()
            )),
            SourceEvent::End => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "frame 1 1.jpg",
            "frame 2 2.jpg",
            "skipped missing.jpg: cannot read",
            "skipped broken.png: corrupt PNG",
            "skipped cut.jpg: truncated JPEG",
            "skipped empty.jpg: empty file (0 bytes)",
        ]
    );
}

#[test]
fn a_missing_camera_is_an_error_naming_the_device() {
    let e = source::open(&"v4l2:/dev/video-not-here".parse().unwrap(), &opts())
        .err()
        .unwrap();
    let text = e.to_string();
    assert!(matches!(e, SourceError::Camera { .. }), "{text}");
    assert!(text.contains("/dev/video-not-here"), "{text}");
}
