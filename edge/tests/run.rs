//! `edge run` end to end: an MJPEG stream on stdin, a watched folder, the serial line on a
//! pseudo-terminal, signals, `kill -9`, and integrity refusals — checked against what the audit
//! database holds afterwards.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::{
    UNFAMILIAR_GREEN, held_field, held_tinted_field, normalized_brightness, scaled, smear_jpeg,
    write_familiar_model, write_fragile_model, write_model_with,
};
use edge::store::{SessionState, StopReason, Store, StoredDecision};
use sha2::{Digest, Sha256};

/// The tiny model: reddish smears are `Benign` (normal), bluish ones `Pro` (blast).
fn model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.onnx");
    write_model_with(&path, ["Benign", "Pro"], 60.0, true);
    path
}

fn benign(seed: u64) -> Vec<u8> {
    smear_jpeg(320, 240, seed, 20)
}

fn blast(seed: u64) -> Vec<u8> {
    smear_jpeg(320, 240, seed, -20)
}

fn blurred(seed: u64) -> Vec<u8> {
    let img = image::imageops::blur(&edge::quality::synthetic_smear(320, 240, seed), 3.0);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

fn black() -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&image::RgbImage::from_pixel(
            320,
            240,
            image::Rgb([4, 4, 4]),
        ))
        .unwrap();
    out
}

fn edge_run(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge"));
    c.arg("run")
        .arg("--model")
        .arg(dir.join("tiny.onnx"))
        .arg("--db")
        .arg(dir.join("audit.db"))
        .args(args)
        .env("RUST_LOG", "info");
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn an_mjpeg_stream_on_stdin_becomes_committed_rows_and_a_slide_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let mut stream = Vec::new();
    stream.extend_from_slice(b"camera start-up noise\xff\x00\xff");
    // Each field is held for two frames: the second, still, starts the field.
    for i in 0..6 {
        stream.extend(benign(i));
        stream.extend(benign(i));
    }
    stream.extend(blurred(100));
    let cut = blast(200);
    stream.extend_from_slice(&cut[..cut.len() / 2]); // truncated: the next SOI ends it
    for i in 0..4 {
        for _ in 0..2 {
            stream.extend(blast(300 + i));
            stream.extend_from_slice(b"\x00garbage between frames\xff\xd9");
        }
    }
    stream.extend(black());
    let stream_file = dir.path().join("stream.mjpeg");
    std::fs::write(&stream_file, &stream).unwrap();

    let out = edge_run(
        dir.path(),
        &[
            "--source",
            "-",
            "--flagged-dir",
            dir.path().join("flagged").to_str().unwrap(),
        ],
    )
    .stdin(File::open(&stream_file).unwrap())
    .output()
    .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{stdout}",
        text(&out.stderr)
    );

    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .collect();
    let retakes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("RETAKE "))
        .collect();
    assert_eq!(results.len(), 20, "{stdout}");
    assert_eq!(
        results
            .iter()
            .filter(|l| field(l, "label") == Some("Pro"))
            .count(),
        8
    );
    assert_eq!(
        retakes
            .iter()
            .map(|l| field(l, "reason").unwrap())
            .collect::<Vec<_>>(),
        ["focus", "exposure"]
    );
    let slide = stdout.lines().find(|l| l.starts_with("SLIDE ")).unwrap();
    assert_eq!(field(slide, "verdict"), Some("refer"), "{slide}");
    assert_eq!(field(slide, "count_pro"), Some("8"), "{slide}");
    assert_eq!(field(slide, "fields"), Some("10"), "{slide}");
    assert!(stdout.contains("SELFTEST check=model ok=true"), "{stdout}");

    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].state, SessionState::Closed);
    assert_eq!(sessions[0].stop_reason, Some(StopReason::SourceEnd));
    assert_eq!(sessions[0].dominant_subtype.as_deref(), Some("Pro"));
    let frames = store.frames(sessions[0].id).unwrap();
    assert_eq!(
        frames.len(),
        22,
        "every decoded frame is a row, retakes included"
    );
    // The first frame of each field is not yet still: it counts for no field.
    let fields: Vec<Option<u32>> = frames.iter().map(|r| r.frame.field).collect();
    assert_eq!(&fields[..4], &[None, Some(1), None, Some(2)]);
    let model_sha = hex::encode(Sha256::digest(std::fs::read(&model).unwrap()));
    for (i, row) in frames.iter().enumerate() {
        let f = &row.frame;
        assert_eq!(f.seq, i as u64 + 1);
        assert_eq!(f.model_sha256, model_sha);
        assert_eq!((f.width, f.height), (320, 240));
        assert!(f.quality.is_some());
        match f.decision {
            StoredDecision::Retake => assert!(f.probabilities.is_empty()),
            _ => {
                let sum: f32 = f.probabilities.iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "{f:?}");
            }
        }
    }
    // The frame hash is of the bytes as received: the first frame is benign(0) exactly.
    assert_eq!(
        frames[0].frame.sha256,
        hex::encode(Sha256::digest(benign(0)))
    );
    // Blast frames are flagged and their JPEG kept, normal frames are not.
    let kept: Vec<_> = frames
        .iter()
        .filter_map(|r| r.frame.kept_image.clone())
        .collect();
    assert_eq!(kept.len(), 8);
    for k in kept {
        let bytes = std::fs::read(dir.path().join("flagged").join(&k)).unwrap();
        assert!(image::load_from_memory(&bytes).is_ok(), "{}", k.display());
    }

    // The audit commands read the same database.
    let edge = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(args)
            .output()
            .unwrap()
    };
    let db = dir.path().join("audit.db");
    let listed = edge(&["sessions", "--db", db.to_str().unwrap()]);
    assert!(
        text(&listed.stdout).contains("REFER"),
        "{}",
        text(&listed.stdout)
    );
    let table = text(&listed.stdout);
    let header = table.lines().next().unwrap();
    assert!(header.contains("FRAMES  FIELDS"), "{table}");
    let row = table.lines().nth(1).unwrap();
    assert!(row.contains(" 22 ") && row.contains(" 10 "), "{table}");
    let csv = edge(&["export", "--db", db.to_str().unwrap(), "--session", "1"]);
    assert_eq!(text(&csv.stdout).lines().count(), 23);
    let csv = text(&csv.stdout);
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .contains(",slide_id,field,device,unfamiliarity,uncertain_reason,p_Benign"),
        "{csv}"
    );
    let report = dir.path().join("report");
    let made = edge(&[
        "report",
        "--db",
        db.to_str().unwrap(),
        "--session",
        "1",
        "--out",
        report.to_str().unwrap(),
        "--flagged-dir",
        dir.path().join("flagged").to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    assert!(report.join("report.html").exists());
}

/// `jpeg` with 8 bytes of its image data overwritten so that its structure stays whole but the
/// strict decoder refuses it (a lenient decoder renders such a picture with a smeared band).
fn corrupted(jpeg: &[u8]) -> Vec<u8> {
    let limits = leukoscope_model::picture::DecodeLimits::default();
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let data = sos + 14..jpeg.len() - 2;
    (0..500)
        .map(|i| {
            let at = data.start + (i * 7919) % (data.len() - 8);
            let mut c = jpeg.to_vec();
            for (k, b) in c[at..at + 8].iter_mut().enumerate() {
                *b = (i * 31 + k * 17) as u8 & 0x7F;
            }
            c
        })
        .find(|c| {
            leukoscope_model::picture::check(c, &limits).is_ok()
                && leukoscope_model::picture::decode(c, &limits).is_err()
        })
        .expect("some corruption of the image data is refused by the strict decoder")
}

#[test]
fn frames_that_are_not_whole_are_skipped_and_never_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let whole: Vec<Vec<u8>> = (0..4).map(|i| benign(40 + i)).collect();
    let cut = blast(50);
    let corrupt = corrupted(&blast(51));
    let mut stream = Vec::new();
    stream.extend(&whole[0]);
    stream.extend(&cut[..cut.len() / 2]); // truncated in the middle: the next SOI ends it
    stream.extend(&whole[1]);
    stream.extend(&corrupt);
    stream.extend(&whole[2]);
    stream.extend(&whole[3]);
    stream.extend(&cut[..cut.len() - 10]); // truncated by the end of the stream
    let stream_file = dir.path().join("stream.mjpeg");
    std::fs::write(&stream_file, &stream).unwrap();
    let out = edge_run(dir.path(), &["--source", "-"])
        .stdin(File::open(&stream_file).unwrap())
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("RESULT ")).count(),
        4,
        "{stdout}"
    );
    assert!(stderr.contains("skipped stdin#3: corrupt JPEG"), "{stderr}");
    assert!(
        stderr.contains("5 frames received, 4 recorded, 3 undecodable"),
        "{stderr}"
    );
    let hash = |b: &[u8]| hex::encode(Sha256::digest(b));
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let frames = store.frames(1).unwrap();
    let recorded: Vec<(u64, String)> = frames
        .iter()
        .map(|r| (r.frame.seq, r.frame.sha256.clone()))
        .collect();
    let expected: Vec<(u64, String)> = whole
        .iter()
        .enumerate()
        .map(|(i, w)| (i as u64 + 1, hash(w)))
        .collect();
    assert_eq!(recorded, expected);

    // The same pictures as files: the cut and corrupt ones are skipped, never rows.
    let files = tempfile::tempdir().unwrap();
    let pictures = files.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    std::fs::copy(&model, files.path().join("tiny.onnx")).unwrap();
    for (name, bytes) in [
        ("1.jpg", whole[0].clone()),
        ("2-cut.jpg", cut[..cut.len() / 2].to_vec()),
        ("3-corrupt.jpg", corrupt),
        ("4.jpg", whole[1].clone()),
        ("5-empty.jpg", Vec::new()),
    ] {
        std::fs::write(pictures.join(name), bytes).unwrap();
    }
    let out = edge_run(files.path(), &["--source", pictures.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("session(s) closed, 0 dropped, 0 already recorded"),
        "{stderr}"
    );
    for (name, why) in [
        ("2-cut.jpg", "truncated JPEG"),
        ("3-corrupt.jpg", "corrupt JPEG"),
        ("5-empty.jpg", "empty file"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("skipped") && l.contains(name) && l.contains(why)),
            "{name}: {stderr}"
        );
    }
    let store = Store::open_read_only(&files.path().join("audit.db")).unwrap();
    let names: Vec<String> = store
        .frames(1)
        .unwrap()
        .iter()
        .map(|r| {
            let name = Path::new(&r.frame.origin).file_name().unwrap();
            name.to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(names, ["1.jpg", "4.jpg"]);
}

/// A running `edge run` with a pipe on stdin and its stdout read line by line.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Running {
    fn spawn(mut command: Command, stderr: &Path) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Lines up to and including the first that satisfies `until`.
    fn read_until(&self, until: impl Fn(&str) -> bool, stderr: &Path) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = until(&line);
                    got.push(line);
                    if done {
                        return got;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "edge run did not print the expected line; got {got:?}\nstderr: {}",
                    std::fs::read_to_string(stderr).unwrap_or_default()
                ),
            }
        }
    }
}

#[test]
fn sigterm_finishes_the_frame_closes_the_session_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let log = dir.path().join("stderr.log");
    let mut run = Running::spawn(edge_run(dir.path(), &["--source", "-"]), &log);
    for i in 0..3 {
        run.send(&benign(i));
    }
    run.read_until(|l| l.starts_with("RESULT frame=3 "), &log);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let slide = run.read_until(|l| l.starts_with("SLIDE "), &log);
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{slide:?}");
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let s = &store.sessions().unwrap()[0];
    assert_eq!(s.state, SessionState::Closed);
    assert_eq!(s.stop_reason, Some(StopReason::Shutdown));
    assert_eq!(s.frames, 3);
    assert_eq!(s.verdict.as_deref(), Some("insufficient"));
}

#[test]
fn every_reported_result_survives_kill_9() {
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let db = dir.path().join("audit.db");
    let frames: Vec<Vec<u8>> = (0..8)
        .map(|i| if i % 3 == 0 { blast(i) } else { benign(i) })
        .collect();
    for round in 0..ROUNDS {
        let log = dir.path().join(format!("stderr-{round}.log"));
        let mut run = Running::spawn(edge_run(dir.path(), &["--source", "-"]), &log);
        // Feed frames from another thread until the pipe breaks (the process is killed).
        let mut stdin = run.stdin.take().unwrap();
        let feed = frames.clone();
        let feeder = std::thread::spawn(move || {
            for jpeg in feed.iter().cycle() {
                if stdin.write_all(jpeg).is_err() {
                    break;
                }
            }
        });
        let wanted = 1 + round % 6;
        let lines = run.read_until(
            |l| {
                l.starts_with("RESULT ")
                    && field(l, "frame").is_some_and(|f| f.parse::<usize>().unwrap() >= wanted)
            },
            &log,
        );
        run.child.kill().unwrap(); // SIGKILL
        run.child.wait().unwrap();
        feeder.join().unwrap();
        // Whatever else reached stdout before the kill was reported too.
        let mut reported: Vec<String> = lines;
        reported.extend(run.lines.try_iter());
        let reported: Vec<(u64, String)> = reported
            .iter()
            .filter(|l| l.starts_with("RESULT "))
            .map(|l| {
                (
                    field(l, "frame").unwrap().parse().unwrap(),
                    field(l, "label").unwrap().to_string(),
                )
            })
            .collect();
        assert!(reported.len() >= wanted);

        let store = Store::open_read_only(&db)
            .unwrap_or_else(|e| panic!("round {round}: the database does not open: {e}"));
        let sessions = store.sessions().unwrap();
        assert_eq!(sessions.len(), round + 1, "round {round}");
        let last = sessions.last().unwrap();
        let stored = store.frames(last.id).unwrap();
        for (seq, label) in &reported {
            let row = stored
                .iter()
                .find(|r| r.frame.seq == *seq)
                .unwrap_or_else(|| panic!("round {round}: reported frame {seq} is not stored"));
            assert_eq!(row.frame.label.as_deref(), Some(label.as_str()));
        }
        // The session the previous kill left open was marked interrupted at this start.
        for s in &sessions[..round] {
            assert_eq!(s.state, SessionState::Interrupted, "round {round}: {s:?}");
        }
    }
}

#[test]
fn a_watched_folder_is_classified_as_files_arrive() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    std::fs::write(incoming.join("before.jpg"), benign(1)).unwrap();
    let log = dir.path().join("stderr.log");
    let watch = format!("watch:{}", incoming.display());
    let mut run = Running::spawn(edge_run(dir.path(), &["--source", &watch]), &log);
    run.read_until(|l| l.starts_with("SELFTEST check=camera"), &log);
    // Written in two steps, as a slow writer would: read once complete, exactly once.
    let bytes = blast(2);
    let mut f = File::create(incoming.join("a.jpg")).unwrap();
    f.write_all(&bytes[..bytes.len() / 2]).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    f.write_all(&bytes[bytes.len() / 2..]).unwrap();
    drop(f);
    std::fs::write(incoming.join("notes.txt"), "not a picture").unwrap();
    std::fs::write(
        incoming.join("fake.jpg"),
        b"a text file named like a picture",
    )
    .unwrap();
    std::fs::write(incoming.join("b.jpg"), benign(3)).unwrap();
    run.read_until(|l| l.starts_with("RESULT frame=3 "), &log);
    // Let a fourth result appear if one were (wrongly) coming, then stop.
    std::thread::sleep(Duration::from_millis(500));
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let mut got: Vec<(String, String)> = store
        .frames(1)
        .unwrap()
        .into_iter()
        .map(|r| {
            let name = Path::new(&r.frame.origin).file_name().unwrap();
            (name.to_string_lossy().into_owned(), r.frame.label.unwrap())
        })
        .collect();
    got.sort();
    // Files arrive in any order; the file already there is caught up (the database does not
    // have it), the fake one is not a row.
    assert_eq!(
        got,
        [
            ("a.jpg".into(), "Pro".into()),
            ("b.jpg".into(), "Benign".into()),
            ("before.jpg".into(), "Benign".into())
        ]
    );
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("fake.jpg"), "{stderr}");
}

/// Reads the technician's end of the serial line into `received` until it holds `needle`
/// (60 s at most); returns everything received so far.
fn serial_until(
    technician: &mut serialport::TTYPort,
    received: &mut String,
    needle: &str,
    log: &Path,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 1024];
    while !received.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on the serial line; got {received:?}\nstderr: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        match technician.read(&mut buf) {
            Ok(n) => received.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    received.clone()
}

#[test]
fn a_technician_drives_sessions_over_the_serial_line() {
    use serialport::{SerialPort, TTYPort};
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let (mut technician, device_side) = TTYPort::pair().expect("pseudo-terminal pair");
    technician.set_timeout(Duration::from_millis(20)).unwrap();
    let path = device_side.name().unwrap();
    let log = dir.path().join("stderr.log");
    let mut run = Running::spawn(
        edge_run(
            dir.path(),
            &[
                "--source",
                "-",
                "--serial",
                &path,
                "--no-auto-start",
                "--quiet",
            ],
        ),
        &log,
    );
    let mut received = String::new();
    let mut read_until = |technician: &mut TTYPort, needle: &str| {
        serial_until(technician, &mut received, needle, &log)
    };
    read_until(&mut technician, "SELFTEST check=camera ok=true");
    technician.write_all(b"ping\r\n").unwrap();
    read_until(&mut technician, "PONG");
    technician.write_all(b"FROB ; rm -rf /\n").unwrap();
    read_until(&mut technician, "ERR code=unknown_command");
    // Without a session (no auto start) frames are not classified.
    run.send(&benign(1));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("no slide session")
    {
        assert!(
            Instant::now() < deadline,
            "the frame without a session was not refused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    technician.write_all(b"START slide-42\n").unwrap();
    read_until(&mut technician, "OK command=START detail=slide-42");
    run.send(&blast(2));
    run.send(&benign(3));
    read_until(
        &mut technician,
        "RESULT frame=2 slide=slide-42 label=Benign",
    );
    technician.write_all(b"STATUS\nMODEL\n").unwrap();
    let seen = read_until(&mut technician, "MODEL name=tiny.onnx");
    assert!(
        seen.contains("STATUS state=screening slide=slide-42 frames=2"),
        "{seen}"
    );
    technician.write_all(b"STOP\n").unwrap();
    let seen = read_until(&mut technician, "SLIDE slide=slide-42");
    assert!(
        seen.contains("RESULT frame=1 slide=slide-42 label=Pro"),
        "{seen}"
    );
    drop(run.stdin.take()); // end of stream: the program exits
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].slide_id.as_deref(), Some("slide-42"));
    assert_eq!(sessions[0].stop_reason, Some(StopReason::Command));
    assert_eq!(sessions[0].frames, 2);
    drop(device_side);
}

#[test]
fn a_model_that_does_not_match_its_pin_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let config = dir.path().join("leukoscope.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npaths = [{:?}]\n[model.sha256]\n\"tiny.onnx\" = \"{}\"\n",
            model.display(),
            "0".repeat(64)
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_edge"));
    let out = command
        .args(["run", "--config", config.to_str().unwrap(), "--source", "-"])
        .arg("--db")
        .arg(dir.path().join("audit.db"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("tiny.onnx") && err.contains("sha256"), "{err}");
    assert!(
        text(&out.stdout).contains("SELFTEST check=model ok=false"),
        "{}",
        text(&out.stdout)
    );

    // With the right pin it starts (and ends with the empty stream).
    let digest = hex::encode(Sha256::digest(std::fs::read(&model).unwrap()));
    std::fs::write(
        &config,
        format!(
            "[model]\npaths = [{:?}]\n[model.sha256]\n\"tiny.onnx\" = \"{digest}\"\n",
            model.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["run", "--config", config.to_str().unwrap(), "--source", "-"])
        .arg("--db")
        .arg(dir.path().join("audit.db"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_missing_camera_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let out = edge_run(
        dir.path(),
        &["--source", "v4l2:/dev/video-leukoscope-missing"],
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("/dev/video-leukoscope-missing"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bench_pipeline_commits_every_frame_of_each_stream() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["bench", "--model", model.to_str().unwrap()])
        .args([
            "--runs",
            "3",
            "--warmup",
            "1",
            "--pipeline",
            "--frames",
            "6",
        ])
        .args(["--resolutions", "160x120,320x240", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = v["pipeline"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    for (s, w) in streams.iter().zip([160, 320]) {
        assert_eq!(s["width"], w);
        assert_eq!(s["recorded"], 6, "{s}");
        assert!(s["fps"].as_f64().unwrap() > 0.0);
    }
    assert!(v["stages"]["inference_ms_p50"].as_f64().unwrap() > 0.0);
}

#[test]
fn tiled_frames_give_one_recorded_result_per_tile() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let stream: Vec<u8> = [benign(1), blast(2)].concat();
    let stream_file = dir.path().join("stream.mjpeg");
    std::fs::write(&stream_file, &stream).unwrap();
    let flagged = dir.path().join("flagged");
    let out = edge_run(
        dir.path(),
        &[
            "--source",
            "-",
            "--tile",
            "160",
            "--flagged-dir",
            flagged.to_str().unwrap(),
        ],
    )
    .stdin(File::open(&stream_file).unwrap())
    .output()
    .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{stdout}",
        text(&out.stderr)
    );
    // 320×240 frames hold a 2×1 grid of 160 px tiles, each gated and classified on its own
    // (a tile without stained cells is a retake, the other tile of its frame still counts).
    let mut seen = Vec::new();
    for l in stdout.lines() {
        let frame = field(l, "frame");
        if l.starts_with("RESULT ") {
            let expected = if frame == Some("1") { "Benign" } else { "Pro" };
            assert_eq!(field(l, "label"), Some(expected), "{l}");
        } else if l.starts_with("RETAKE ") {
            assert_eq!(field(l, "reason"), Some("empty"), "{l}");
        } else {
            continue;
        }
        seen.push((
            frame.unwrap().to_string(),
            field(l, "tile").unwrap().to_string(),
        ));
    }
    let expected: Vec<(String, String)> = [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(seen, expected, "{stdout}");
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let rows = store.frames(1).unwrap();
    let tiles: Vec<(u64, Option<u32>)> = rows.iter().map(|r| (r.frame.seq, r.frame.tile)).collect();
    assert_eq!(
        tiles,
        [(1, Some(0)), (1, Some(1)), (2, Some(0)), (2, Some(1))]
    );
    // A flagged tile keeps the tile's own pixels.
    let kept = rows
        .iter()
        .find_map(|r| r.frame.kept_image.as_ref())
        .expect("a blast tile kept");
    let tile = image::open(flagged.join(kept)).unwrap();
    assert_eq!((tile.width(), tile.height()), (160, 160));
}

/// Runs `edge run --source -` on `stream` (the tiny model) and returns stdout and the database.
fn run_stream(dir: &Path, stream: &[u8]) -> (String, Store) {
    let stream_file = dir.join("stream.mjpeg");
    std::fs::write(&stream_file, stream).unwrap();
    let out = edge_run(dir, &["--source", "-"])
        .stdin(File::open(&stream_file).unwrap())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{stdout}",
        text(&out.stderr)
    );
    (
        stdout,
        Store::open_read_only(&dir.join("audit.db")).unwrap(),
    )
}

#[test]
fn one_field_held_for_60_noisy_jittered_frames_is_one_field_and_insufficient() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let (stdout, store) = run_stream(dir.path(), &held_field(5, 20, 60, 1).concat());
    let slide = stdout.lines().find(|l| l.starts_with("SLIDE ")).unwrap();
    assert_eq!(field(slide, "frames"), Some("60"), "{slide}");
    assert_eq!(field(slide, "fields"), Some("1"), "{slide}");
    assert_eq!(field(slide, "verdict"), Some("insufficient"), "{slide}");
    let s = &store.sessions().unwrap()[0];
    assert_eq!(s.counts.as_ref().unwrap().fields, Some(1));
    assert_eq!(s.verdict.as_deref(), Some("insufficient"));
}

/// A scan of 30 distinct fields held 4 frames each; the fields in `blasts` are blast fields.
fn scan(blasts: &[usize]) -> Vec<u8> {
    (0..30)
        .flat_map(|i| {
            let shift = if blasts.contains(&i) { -20 } else { 20 };
            held_field(1000 + i as u64, shift, 4, i as u64)
        })
        .flatten()
        .collect()
}

#[test]
fn a_scan_of_30_fields_is_judged_by_its_fields() {
    for (blasts, verdict) in [(vec![], "no_blasts"), (vec![4, 15, 26], "refer")] {
        let dir = tempfile::tempdir().unwrap();
        model(dir.path());
        let (stdout, store) = run_stream(dir.path(), &scan(&blasts));
        let slide = stdout.lines().find(|l| l.starts_with("SLIDE ")).unwrap();
        let fields: u32 = field(slide, "fields").unwrap().parse().unwrap();
        assert!((27..=33).contains(&fields), "{slide}");
        assert_eq!(field(slide, "frames"), Some("120"), "{slide}");
        assert_eq!(field(slide, "verdict"), Some(verdict), "{slide}");
        // Every frame row records its field; fields are numbered in scan order.
        let rows = store.frames(1).unwrap();
        let numbers: Vec<u32> = rows.iter().filter_map(|r| r.frame.field).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
        // A field whose frames all failed the gate is seen but not good.
        let seen = numbers.last().copied().unwrap();
        assert!(
            (fields..=33).contains(&seen),
            "{seen} fields seen, {fields} good"
        );
        let s = &store.sessions().unwrap()[0];
        let counts = s.counts.as_ref().unwrap();
        assert_eq!(counts.fields, Some(fields));
        assert_eq!(counts.blast_fields, Some(blasts.len() as u32));
    }
}

/// A scan of 30 distinct fields held 4 frames each, all benign-coloured; the fields in
/// `unfamiliar` are tinted green (unfamiliar to [`write_familiar_model`]'s score).
fn tinted_scan(unfamiliar: &[usize]) -> Vec<u8> {
    (0..30)
        .flat_map(|i| {
            let green = if unfamiliar.contains(&i) {
                UNFAMILIAR_GREEN
            } else {
                0
            };
            held_tinted_field(1000 + i as u64, 20, green, 4, i as u64)
        })
        .flatten()
        .collect()
}

#[test]
fn a_scan_of_mostly_unfamiliar_fields_is_unfamiliar_and_every_row_keeps_its_score() {
    let unfamiliar: Vec<usize> = (10..30).collect();
    for (tinted, verdict) in [(vec![], "no_blasts"), (unfamiliar, "unfamiliar")] {
        let dir = tempfile::tempdir().unwrap();
        let threshold =
            write_familiar_model(&dir.path().join("tiny.onnx"), ["Benign", "Pro"], 60.0);
        let (stdout, store) = run_stream(dir.path(), &tinted_scan(&tinted));
        let slide = stdout.lines().find(|l| l.starts_with("SLIDE ")).unwrap();
        assert_eq!(field(slide, "verdict"), Some(verdict), "{slide}");
        let fields: u32 = field(slide, "fields").unwrap().parse().unwrap();
        assert!((27..=33).contains(&fields), "{slide}");

        let rows = store.frames(1).unwrap();
        let classified: Vec<_> = rows
            .iter()
            .filter(|r| r.frame.decision != StoredDecision::Retake)
            .collect();
        assert!(classified.len() > 100, "{} classified", classified.len());
        // Every classified row has its score; the reason says which were unfamiliar.
        for r in &classified {
            let score = r
                .frame
                .unfamiliarity
                .expect("a score for every classified frame");
            let is_unfamiliar = score > threshold;
            assert_eq!(
                r.frame.uncertain_reason,
                is_unfamiliar.then_some(edge::classify::UncertainReason::Unfamiliar),
                "frame {}: score {score} (threshold {threshold})",
                r.frame.seq
            );
            if is_unfamiliar {
                assert_eq!(r.frame.decision, StoredDecision::Uncertain);
                assert_eq!(r.frame.label.as_deref(), Some("Benign"));
            }
        }
        let unfamiliar_rows = classified
            .iter()
            .filter(|r| r.frame.uncertain_reason.is_some())
            .count();
        let results: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("RESULT "))
            .collect();
        let flagged = results
            .iter()
            .filter(|l| field(l, "reason") == Some("unfamiliar"))
            .count();
        assert_eq!(flagged, unfamiliar_rows, "{stdout}");
        assert!(
            results
                .iter()
                .filter(|l| field(l, "reason").is_some())
                .all(|l| field(l, "decision") == Some("uncertain"))
        );

        let s = &store.sessions().unwrap()[0];
        let counts = s.counts.as_ref().unwrap();
        assert_eq!(s.verdict.as_deref(), Some(verdict));
        if tinted.is_empty() {
            assert_eq!(unfamiliar_rows, 0);
            assert_eq!(counts.unfamiliar_fields, Some(0));
            assert_eq!(field(slide, "unfamiliar"), None, "{slide}");
            assert_eq!(counts.blast_fields, Some(0));
        } else {
            assert!(unfamiliar_rows >= 70, "{unfamiliar_rows} unfamiliar rows");
            let n: u32 = field(slide, "unfamiliar").unwrap().parse().unwrap();
            assert!((18..=22).contains(&n), "{slide}");
            assert_eq!(counts.unfamiliar_fields, Some(n));
            // Unfamiliar fields are uncertain fields, never counted as cells.
            assert!(counts.uncertain_fields.unwrap() >= n);
            assert_eq!(counts.blast_fields, Some(0));
        }

        // The export and the report show them.
        let export = Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(["export", "--session", "1", "--format", "csv", "--db"])
            .arg(dir.path().join("audit.db"))
            .output()
            .unwrap();
        assert!(export.status.success(), "{}", text(&export.stderr));
        let csv = text(&export.stdout);
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
        let (score_col, reason_col) = (column("unfamiliarity"), column("uncertain_reason"));
        let reasons = csv
            .lines()
            .skip(1)
            .filter(|l| l.split(',').nth(reason_col) == Some("unfamiliar"))
            .count();
        assert_eq!(reasons, unfamiliar_rows, "{csv}");
        assert!(
            csv.lines()
                .skip(1)
                .filter(|l| !l.contains(",retake,"))
                .all(|l| l
                    .split(',')
                    .nth(score_col)
                    .is_some_and(|v| v.parse::<f32>().is_ok())),
            "{csv}"
        );
        if !tinted.is_empty() {
            let report = dir.path().join("report");
            let out = Command::new(env!("CARGO_BIN_EXE_edge"))
                .args(["report", "--session", "1", "--db"])
                .arg(dir.path().join("audit.db"))
                .arg("--out")
                .arg(&report)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            let md = std::fs::read_to_string(report.join("report.md")).unwrap();
            assert!(md.contains("UNFAMILIAR - NOT VALIDATED"), "{md}");
            assert!(md.contains(&format!("- Unfamiliar (the model was not validated for such pictures): {unfamiliar_rows}")), "{md}");
        }
    }
}

#[test]
fn sessions_follow_slides_and_an_inference_error_leaves_no_verdict() {
    use serialport::{SerialPort, TTYPort};
    let dir = tempfile::tempdir().unwrap();
    // Frames at 75 % of their brightness break the model (NaN); the gate still passes them.
    let normal = held_field(4, 20, 1, 0).remove(0);
    let dark = scaled(&normal, 0.75);
    let dim = (normalized_brightness(&normal) + normalized_brightness(&dark)) / 2.0;
    write_fragile_model(&dir.path().join("tiny.onnx"), ["Benign", "Pro"], dim);
    let (mut technician, device_side) = TTYPort::pair().expect("pseudo-terminal pair");
    technician.set_timeout(Duration::from_millis(20)).unwrap();
    let path = device_side.name().unwrap();
    let log = dir.path().join("stderr.log");
    let mut run = Running::spawn(
        edge_run(dir.path(), &["--source", "-", "--serial", &path]),
        &log,
    );
    let mut received = String::new();
    let mut read_until = |technician: &mut TTYPort, needle: &str| {
        serial_until(technician, &mut received, needle, &log)
    };
    let wait_log = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(needle)
        {
            assert!(Instant::now() < deadline, "no {needle:?} in the log");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    read_until(&mut technician, "SELFTEST check=camera ok=true");
    // auto_start opens the run's first session.
    for jpeg in held_field(1, 20, 3, 0) {
        run.send(&jpeg);
    }
    read_until(&mut technician, "RESULT frame=3 ");
    technician.write_all(b"STOP\n").unwrap();
    read_until(&mut technician, "SLIDE ");
    // After STOP the device waits for START: frames open no session.
    run.send(&held_field(2, 20, 1, 0)[0]);
    wait_log("no slide session");
    technician.write_all(b"START slide-2\n").unwrap();
    read_until(&mut technician, "OK command=START detail=slide-2");
    for jpeg in held_field(3, 20, 2, 0) {
        run.send(&jpeg);
    }
    read_until(&mut technician, "RESULT frame=2 slide=slide-2");
    // A frame the model answers with NaN: the scan stops with no verdict.
    run.send(&dark);
    let seen = read_until(&mut technician, "SLIDE slide=slide-2 verdict=incomplete");
    assert!(seen.contains("ERROR code=internal"), "{seen}");
    let slide = seen
        .lines()
        .find(|l| l.contains("SLIDE slide=slide-2"))
        .unwrap();
    assert!(field(slide, "reason").is_some(), "{slide}");
    // A refused START answers ERR.
    technician.write_all(b"START slide-3\n").unwrap();
    let seen = read_until(&mut technician, "ERR code=refused");
    assert!(!seen.contains("OK command=START detail=slide-3"), "{seen}");
    drop(run.stdin.take());
    let status = run.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a fault that stopped classifying exits 1"
    );
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions[0].stop_reason, Some(StopReason::Command));
    let faulted = &sessions[1];
    assert_eq!(faulted.state, SessionState::Closed);
    assert_eq!(faulted.stop_reason, Some(StopReason::Fault));
    assert_eq!(faulted.verdict, None, "no verdict is stored after a fault");
    assert!(
        faulted.fault.as_deref().unwrap().contains("non-finite"),
        "{faulted:?}"
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["sessions", "--db"])
        .arg(dir.path().join("audit.db"))
        .output()
        .unwrap();
    let table = text(&listed.stdout);
    assert!(
        table.contains("INCOMPLETE - RESCAN (no verdict: "),
        "{table}"
    );
    // Every RESULT sent is in the database.
    let results = received
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .count();
    let stored: u64 = sessions.iter().map(|s| s.frames).sum();
    assert_eq!(results as u64, stored);
    drop(device_side);
}

#[test]
fn a_failed_final_commit_shows_no_verdict_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let log = dir.path().join("stderr.log");
    let mut run = Running::spawn(edge_run(dir.path(), &["--source", "-"]), &log);
    for jpeg in held_field(7, 20, 4, 0) {
        run.send(&jpeg);
    }
    let mut lines = run.read_until(|l| l.starts_with("RESULT frame=4 "), &log);
    // Another writer marks the session interrupted behind the device's back, so its closing
    // commit finds nothing to close and fails.
    let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute("UPDATE sessions SET state = 'interrupted'", [])
        .unwrap();
    drop(db);
    drop(run.stdin.take()); // end of stream: the session closes
    lines.extend(run.lines.iter());
    let status = run.child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!lines.iter().any(|l| l.starts_with("SLIDE ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("ERROR ")), "{lines:?}");
    for headline in ["NO BLASTS SEEN", "INSUFFICIENT", "REFER"] {
        assert!(!stderr.contains(headline), "{stderr}");
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
}

/// A tmpfs of `size` mounted on `dir` for a test (needs root); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `edge run --source -` with the tiny model of `dir`, its database at `db` and a config file
/// holding `config`.
fn edge_run_with_db(dir: &Path, db: &Path, config: &str) -> Command {
    let file = dir.join("leukoscope.toml");
    std::fs::write(&file, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_edge"));
    command
        .args(["run", "--source", "-", "--model"])
        .arg(dir.join("tiny.onnx"))
        .arg("--db")
        .arg(db)
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "info");
    command
}

#[test]
#[ignore = "needs root: mounts a tmpfs (CI runs it as root: cargo test -- --ignored as_root)"]
fn a_full_disk_stops_classifying_says_so_and_keeps_every_reported_result_as_root() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let fs = Tmpfs::mount(&disk, "1m").expect("mounting a tmpfs needs root");
    let db = fs.0.join("audit.db");
    let log = dir.path().join("stderr.log");
    // The free-space floor is off so the database itself runs into the full disk.
    let command = edge_run_with_db(dir.path(), &db, "[store]\nmin_free_mib = 0\n");
    let mut run = Running::spawn(command, &log);
    let mut stdin = run.stdin.take().unwrap();
    let frames: Vec<Vec<u8>> = (0..4).map(blast).collect();
    let feeder = std::thread::spawn(move || {
        for jpeg in frames.iter().cycle().take(5000) {
            if stdin.write_all(jpeg).is_err() {
                break;
            }
        }
        // Dropping stdin ends the stream.
    });
    let lines = run.read_until(|l| l.starts_with("ERROR code=disk_full"), &log);
    feeder.join().unwrap();
    let status = run.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a fault that stopped classifying exits 1"
    );
    let reported: Vec<u64> = lines
        .iter()
        .filter(|l| l.starts_with("RESULT "))
        .map(|l| field(l, "frame").unwrap().parse().unwrap())
        .collect();
    assert!(
        reported.len() > 5,
        "some results fit before the disk was full"
    );
    // Everything reported is stored, and the database opens and reads cleanly.
    let store = Store::open_read_only(&db).unwrap();
    let stored: Vec<u64> = store
        .frames(1)
        .unwrap()
        .iter()
        .map(|r| r.frame.seq)
        .collect();
    for seq in &reported {
        assert!(stored.contains(seq), "reported frame {seq} is not stored");
    }
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("disk full"), "{stderr}");
}

#[test]
#[ignore = "needs root: mounts a tmpfs (CI runs it as root: cargo test -- --ignored as_root)"]
fn the_free_space_floor_ends_the_scan_with_no_verdict_as_root() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let fs = Tmpfs::mount(&disk, "16m").expect("mounting a tmpfs needs root");
    let db = fs.0.join("audit.db");
    let log = dir.path().join("stderr.log");
    let command = edge_run_with_db(dir.path(), &db, "[store]\nmin_free_mib = 8\n");
    let mut run = Running::spawn(command, &log);
    let mut stdin = run.stdin.take().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = stop.clone();
    let frames: Vec<Vec<u8>> = (0..6).flat_map(|i| held_field(i, 20, 3, i)).collect();
    let feeder = std::thread::spawn(move || {
        for jpeg in frames.iter().cycle() {
            if feeding.load(Ordering::SeqCst) || stdin.write_all(jpeg).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let mut lines = run.read_until(|l| l.starts_with("RESULT frame=5 "), &log);
    // Leave 4 MiB free: below the 8 MiB floor, with room for the database to close the session.
    let free = nix::sys::statvfs::statvfs(&fs.0).unwrap();
    let free_bytes = free.blocks_available() as u64 * free.fragment_size() as u64;
    let filler = vec![0u8; (free_bytes - 4 * 1024 * 1024) as usize];
    std::fs::write(fs.0.join("filler"), filler).unwrap();
    lines.extend(run.read_until(|l| l.starts_with("SLIDE "), &log));
    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    let status = run.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a fault that stopped classifying exits 1"
    );
    let slide = lines.iter().find(|l| l.starts_with("SLIDE ")).unwrap();
    assert_eq!(field(slide, "verdict"), Some("incomplete"), "{slide}");
    assert!(
        lines.iter().any(|l| l.starts_with("ERROR code=disk_full")),
        "{lines:?}"
    );
    let store = Store::open_read_only(&db).unwrap();
    let s = &store.sessions().unwrap()[0];
    assert_eq!(s.stop_reason, Some(StopReason::Fault));
    assert_eq!(s.verdict, None);
    let stored: Vec<u64> = store
        .frames(s.id)
        .unwrap()
        .iter()
        .map(|r| r.frame.seq)
        .collect();
    for l in lines.iter().filter(|l| l.starts_with("RESULT ")) {
        let seq: u64 = field(l, "frame").unwrap().parse().unwrap();
        assert!(stored.contains(&seq), "reported frame {seq} is not stored");
    }
}

/// Waits (60 s at most) until the file at `path` contains `needle`; returns its text.
fn wait_for_log(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// The summary line's `N dropped` and `N already recorded`.
fn summary_counts(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains(" frames received, "))
        .unwrap_or_else(|| panic!("no summary line in\n{stderr}"));
    let count = |what: &str| -> u64 {
        let before = line.split(what).next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    (count(" dropped"), count(" already recorded"))
}

#[test]
fn policy_latest_drops_waiting_frames_and_classifies_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let log = dir.path().join("stderr.log");
    let frames: Vec<Vec<u8>> = (0..40).map(|i| benign(700 + i)).collect();
    // More than a pipe buffer (64 KiB) beyond a few frames: while the device is held in a
    // commit, the reader must read (and the mailbox replace) most of them.
    let bytes: usize = frames[1..].iter().map(Vec::len).sum();
    assert!(bytes > 64 * 1024 + 4 * frames[1].len(), "{bytes}");
    let mut run = Running::spawn(
        edge_run(dir.path(), &["--source", "-", "--policy", "latest"]),
        &log,
    );
    run.send(&frames[0]);
    run.read_until(|l| l.starts_with("RESULT frame=1 "), &log);
    // A slow consumer, deterministically: the test holds the database's write lock, so the
    // device's next commit waits (its busy timeout is 5 s) while the stream is written.
    let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    for f in &frames[1..] {
        run.send(f);
    }
    drop(run.stdin.take()); // the end of the stream
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    run.read_until(|l| l.starts_with("SLIDE "), &log);
    let status = run.child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let (dropped, _) = summary_counts(&stderr);
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let rows = store.frames(1).unwrap();
    assert!(dropped >= 1, "{stderr}");
    assert_eq!(rows.len() as u64 + dropped, frames.len() as u64, "{stderr}");
    let hash = |b: &[u8]| hex::encode(Sha256::digest(b));
    assert_eq!(
        rows.last().unwrap().frame.sha256,
        hash(frames.last().unwrap()),
        "the last frame sent is classified"
    );
    assert_eq!(rows[0].frame.sha256, hash(&frames[0]));
}

#[test]
fn policy_all_classifies_every_frame_of_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let frames: Vec<Vec<u8>> = (0..40).map(|i| benign(700 + i)).collect();
    let stream_file = dir.path().join("stream.mjpeg");
    std::fs::write(&stream_file, frames.concat()).unwrap();
    // The whole stream is there at once and every frame costs a commit: the consumer is the
    // slow side, and `all` holds the reader back instead of dropping.
    let out = edge_run(dir.path(), &["--source", "-", "--policy", "all"])
        .stdin(File::open(&stream_file).unwrap())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(summary_counts(&stderr), (0, 0), "{stderr}");
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let got: Vec<String> = store
        .frames(1)
        .unwrap()
        .iter()
        .map(|r| r.frame.sha256.clone())
        .collect();
    let sent: Vec<String> = frames
        .iter()
        .map(|f| hex::encode(Sha256::digest(f)))
        .collect();
    assert_eq!(got, sent);
    // `latest` is for live streams: on files it is a clear error before anything starts.
    let out = edge_run(
        dir.path(),
        &[
            "--source",
            dir.path().to_str().unwrap(),
            "--policy",
            "latest",
        ],
    )
    .output()
    .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("source.policy"), "{stderr}");
}

#[test]
fn keep_running_stays_up_after_a_finite_source_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let pictures = dir.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    for i in 0..3 {
        std::fs::write(pictures.join(format!("{i}.jpg")), benign(20 + i)).unwrap();
    }
    let log = dir.path().join("stderr.log");
    let mut run = Running::spawn(
        edge_run(
            dir.path(),
            &["--source", pictures.to_str().unwrap(), "--keep-running"],
        ),
        &log,
    );
    run.read_until(|l| l.starts_with("RESULT frame=3 "), &log);
    // The source's end closes the session and is logged; the program stays up.
    run.read_until(|l| l.starts_with("SLIDE "), &log);
    wait_for_log(&log, "source ended; still running");
    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    assert_eq!(store.frames(1).unwrap().len(), 3);
    assert_eq!(
        store.sessions().unwrap()[0].stop_reason,
        Some(StopReason::SourceEnd)
    );
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "edge run --keep-running exited after its source ended:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    sigterm(&run.child);
    let status = run.child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("3 frames received, 3 recorded, 0 undecodable, 1 session(s) closed"),
        "{stderr}"
    );
}

#[test]
fn a_restarted_watch_catches_up_on_pictures_that_arrived_while_it_was_down() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path());
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    for (name, seed) in [("a1.jpg", 1), ("a2.jpg", 2), ("a3.jpg", 3)] {
        std::fs::write(incoming.join(name), benign(seed)).unwrap();
    }
    let watch = format!("watch:{}", incoming.display());
    let run_until_results = |n: usize, log: &Path| -> String {
        let mut run = Running::spawn(edge_run(dir.path(), &["--source", &watch]), log);
        run.read_until(|l| l.starts_with(&format!("RESULT frame={n} ")), log);
        sigterm(&run.child);
        let status = run.child.wait().unwrap();
        let stderr = std::fs::read_to_string(log).unwrap();
        assert_eq!(status.code(), Some(0), "{stderr}");
        stderr
    };
    let first = run_until_results(3, &dir.path().join("first.log"));
    assert_eq!(summary_counts(&first), (0, 0), "{first}");

    // While the service is down: two new pictures, and a2 replaced under the same name.
    std::fs::write(incoming.join("a2.jpg"), blast(22)).unwrap();
    std::fs::write(incoming.join("a4.jpg"), benign(4)).unwrap();
    std::fs::write(incoming.join("a5.jpg"), blast(5)).unwrap();
    // Sorted by name, a5 comes last: when its result is out, a1 and a3 have been skipped.
    let second = run_until_results(3, &dir.path().join("second.log"));
    assert_eq!(summary_counts(&second), (0, 2), "{second}");
    assert!(
        second.contains("already in the database skipped"),
        "{second}"
    );

    let store = Store::open_read_only(&dir.path().join("audit.db")).unwrap();
    let rows = |session| -> Vec<(String, String)> {
        store
            .frames(session)
            .unwrap()
            .iter()
            .map(|r| {
                let name = Path::new(&r.frame.origin).file_name().unwrap();
                (name.to_string_lossy().into_owned(), r.frame.sha256.clone())
            })
            .collect()
    };
    let hash = |b: &[u8]| hex::encode(Sha256::digest(b));
    let names = |rows: &[(String, String)]| -> Vec<String> {
        let mut n: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&rows(1)), ["a1.jpg", "a2.jpg", "a3.jpg"]);
    let again = rows(2);
    assert_eq!(names(&again), ["a2.jpg", "a4.jpg", "a5.jpg"]);
    let a2 = again.iter().find(|(n, _)| n == "a2.jpg").unwrap();
    assert_eq!(
        a2.1,
        hash(&blast(22)),
        "the replaced picture, classified again"
    );
    assert_eq!(store.sessions().unwrap().len(), 2);
}
