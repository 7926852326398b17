//! The audit store as the device uses it: crash safety under `kill -9`, a full disk, kept
//! pictures under a size cap, exports and the session report.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{TimeZone, Utc};
use edge::audit::{self, ExportFormat};
use edge::flagged::{CapPolicy, FlaggedError, FlaggedImages, OWNER_FILE};
use edge::store::{
    FrameRecord, NewSession, Quality, SessionState, SessionSummary, StopReason, Store, StoreError,
    StoredDecision,
};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const CHILD_ENV: &str = "LEUKOSCOPE_STORE_TEST_CHILD";

fn labels() -> Vec<String> {
    ["Benign", "Early", "Pre", "Pro"].map(String::from).to_vec()
}

fn new_session(slide: &str) -> NewSession {
    NewSession {
        slide_id: Some(slide.into()),
        started: Utc::now(),
        model_sha256: "cd".repeat(32),
        model_variant: "test".into(),
        labels: labels(),
        normal_labels: vec!["Benign".into()],
        software_version: "0.0.0-test".into(),
        rule: serde_json::json!({"min_confidence": 0.8, "min_good_frames": 3}),
    }
}

/// A frame whose decision and label are derived from `seq` (every 7th a retake, every 5th
/// uncertain, every 4th a blast).
fn frame(session: i64, seq: u64) -> FrameRecord {
    let (decision, label) = if seq.is_multiple_of(7) {
        (StoredDecision::Retake, None)
    } else if seq.is_multiple_of(5) {
        (StoredDecision::Uncertain, Some(1))
    } else if seq.is_multiple_of(4) {
        (StoredDecision::Label, Some(3))
    } else {
        (StoredDecision::Label, Some(0))
    };
    let probabilities = match label {
        None => vec![],
        Some(i) => {
            let mut p = vec![0.02f32; 4];
            p[i] = if decision == StoredDecision::Uncertain {
                0.6
            } else {
                0.94
            };
            p
        }
    };
    FrameRecord {
        session,
        seq,
        time: Utc
            .timestamp_millis_opt(1_760_000_000_000 + seq as i64 * 50)
            .unwrap(),
        origin: "stdin".into(),
        sha256: format!("{:064x}", seq * 7919 + session as u64),
        width: 640,
        height: 480,
        quality: Some(Quality {
            focus: 100.0 + seq as f32,
            mean: 170.0,
            p999: 250.0,
            clipped_fraction: 0.0,
            stained_fraction: 0.05,
        }),
        decision,
        retake_reason: (decision == StoredDecision::Retake).then(|| "focus".into()),
        label: label.map(|i| labels()[i].clone()),
        confidence: label.map(|i| probabilities[i]),
        probabilities,
        model_sha256: "cd".repeat(32),
        software_version: "0.0.0-test".into(),
        kept_image: None,
        tile: None,
        field: Some(seq as u32),
        unfamiliarity: None,
        uncertain_reason: None,
    }
}

fn integrity_ok(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
}

// ---------------------------------------------------------------------------------------------
// kill -9

/// Not a test: the process `kill_9_at_any_moment_loses_no_reported_result` starts and kills.
/// It records frames forever and prints `committed <id> <seq>` after each `record_frame`.
#[test]
#[ignore = "child process of the kill -9 test"]
fn child_writer_for_kill_9() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut store = Store::open(Path::new(&db)).unwrap();
    let s = store.begin_session(&new_session("kill")).unwrap();
    let mut out = std::io::stdout().lock();
    for seq in 1.. {
        let id = store.record_frame(&frame(s, seq)).unwrap();
        use std::io::Write;
        writeln!(out, "committed {id} {seq} {s}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_at_any_moment_loses_no_reported_result() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut rng = StdRng::seed_from_u64(9);
    let mut reported: Vec<(i64, u64, i64)> = Vec::new();
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_writer_for_kill_9",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wanted = rng.random_range(1..40usize);
        let mut got = 0;
        while got < wanted {
            let Some(line) = lines.next() else { break };
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("committed ") {
                let v: Vec<i64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                reported.push((v[0], v[1] as u64, v[2]));
                got += 1;
            }
        }
        // The child is in the middle of its next commit (or between two): kill it there.
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Results it reported after our last read may exist too; only reported ones must.
        assert!(got > 0, "round {round}: the child reported nothing");

        integrity_ok(&db);
        let store = Store::open(&db).unwrap();
        assert_eq!(
            store.recovered_sessions().len(),
            1,
            "round {round}: the killed session is recovered"
        );
        for &(id, seq, session) in &reported {
            let frames = store.frames(session).unwrap();
            let f = frames
                .iter()
                .find(|f| f.id == id)
                .unwrap_or_else(|| panic!("round {round}: reported frame {id} lost"));
            assert_eq!(f.frame, frame(session, seq));
        }
        let sessions = store.sessions().unwrap();
        assert_eq!(sessions.len(), round + 1);
        assert!(
            sessions
                .iter()
                .all(|s| s.state == SessionState::Interrupted)
        );
    }
    eprintln!(
        "{ROUNDS} kill -9 rounds, {} reported results all present",
        reported.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Disk full

/// Records frames until the store fails; returns the committed ids and the error.
fn fill(store: &mut Store, session: i64) -> (Vec<i64>, StoreError) {
    let mut ids = Vec::new();
    for seq in 1..1_000_000 {
        match store.record_frame(&frame(session, seq)) {
            Ok(id) => ids.push(id),
            Err(e) => return (ids, e),
        }
    }
    panic!("never full");
}

#[test]
fn a_database_at_its_size_limit_reports_disk_full_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut store = Store::open(&db).unwrap();
    let s = store.begin_session(&new_session("full")).unwrap();
    store.record_frame(&frame(s, 0)).unwrap();
    // SQLite's own size limit stands in for a full disk: the same SQLITE_FULL error.
    let pages = store.pragma_for_tests("page_count", 0).unwrap_or(0);
    let pages = if pages > 0 { pages } else { 8 };
    store.pragma_for_tests("max_page_count", pages + 4).unwrap();
    let (ids, e) = fill(&mut store, s);
    assert!(e.is_disk_full(), "{e}");
    assert!(e.to_string().contains("disk full"), "{e}");
    assert!(!ids.is_empty());
    // Still readable, everything committed is there, and the session can still be read.
    let frames = store.frames(s).unwrap();
    assert_eq!(frames.len(), ids.len() + 1);
    drop(store);
    integrity_ok(&db);
    let store = Store::open(&db).unwrap();
    assert_eq!(store.frames(s).unwrap().len(), ids.len() + 1);
    assert_eq!(store.session(s).unwrap().state, SessionState::Interrupted);
}

/// A tmpfs of 1 MiB mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root: mounts a tmpfs (CI runs it as root: cargo test -- --ignored as_root)"]
fn a_full_file_system_reports_disk_full_keeps_data_and_recovers_when_space_is_freed_as_root() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(dir.path()).expect("mounting a tmpfs needs root");
    let db = fs.0.join("audit.db");
    let mut store = Store::open(&db).unwrap();
    let s = store.begin_session(&new_session("full")).unwrap();
    // Leave little room, then fill it.
    let filler = fs.0.join("filler");
    let mut size = 1024 * 1024;
    while size > 0 && std::fs::write(&filler, vec![0u8; size]).is_err() {
        size -= 16 * 1024;
    }
    let _ = std::fs::remove_file(&filler);
    std::fs::write(&filler, vec![0u8; size.saturating_sub(96 * 1024)]).unwrap();
    let (ids, e) = fill(&mut store, s);
    assert!(e.is_disk_full(), "expected DiskFull, got: {e}");
    assert!(!ids.is_empty(), "some frames fit before the disk was full");
    assert_eq!(store.frames(s).unwrap().len(), ids.len());
    integrity_ok(&db);
    // Free the space: recording works again and nothing was lost.
    std::fs::remove_file(&filler).unwrap();
    store.record_frame(&frame(s, 999_999)).unwrap();
    assert_eq!(store.frames(s).unwrap().len(), ids.len() + 1);
    let summary = SessionSummary {
        counts: vec![],
        good: 0,
        retakes: 0,
        uncertain: 0,
        fields: 0,
        blast_fields: 0,
        uncertain_fields: 0,
        unfamiliar_fields: 0,
        blast_fraction: 0.0,
        verdict: Some("insufficient".into()),
        dominant_subtype: None,
        fault: None,
    };
    store.close_session(s, &summary, StopReason::Fault).unwrap();
    drop(store);
    integrity_ok(&db);
    eprintln!("tmpfs: {} frames recorded before SQLITE_FULL", ids.len());
}

// ---------------------------------------------------------------------------------------------
// Kept pictures

fn picture(seed: u64, w: u32, h: u32) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    RgbImage::from_fn(w, h, |x, y| {
        let n: u8 = rng.random_range(0..40);
        image::Rgb([
            (x * 255 / w) as u8 / 2 + n,
            (y * 255 / h) as u8 / 2 + n,
            160 + n,
        ])
    })
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .unwrap();
    out
}

#[test]
fn kept_pictures_stay_under_the_cap_by_evicting_closed_sessions_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("audit.db")).unwrap();
    let bytes = jpeg(&picture(1, 320, 240));
    let cap = bytes.len() as u64 * 5 + 10;
    let mut kept = FlaggedImages::open(
        &dir.path().join("flagged"),
        &store,
        cap,
        CapPolicy::EvictOldest,
    )
    .unwrap();

    // Session 1: four pictures, closed.
    let a = store.begin_session(&new_session("A")).unwrap();
    for seq in 1..=4 {
        let rel = kept
            .keep_encoded(&mut store, a, seq, None, &bytes)
            .unwrap()
            .unwrap();
        assert_eq!(rel, PathBuf::from(format!("session-{a:06}/{seq:06}.jpg")));
        let mut f = frame(a, seq);
        f.kept_image = Some(rel);
        store.record_frame(&f).unwrap();
    }
    let summary = SessionSummary {
        counts: vec![],
        good: 0,
        retakes: 0,
        uncertain: 0,
        fields: 0,
        blast_fields: 0,
        uncertain_fields: 0,
        unfamiliar_fields: 0,
        blast_fraction: 0.0,
        verdict: Some("insufficient".into()),
        dominant_subtype: None,
        fault: None,
    };
    store
        .close_session(a, &summary, StopReason::Command)
        .unwrap();

    // Session 2 (open): six pictures; the cap holds five, so session 1's oldest go first.
    let b = store.begin_session(&new_session("B")).unwrap();
    for seq in 1..=6 {
        let rel = kept
            .keep_encoded(&mut store, b, seq, Some(1), &bytes)
            .unwrap();
        if let Some(rel) = &rel {
            assert!(kept.resolve(rel).is_file());
        }
        let mut f = frame(b, seq);
        f.kept_image = rel;
        store.record_frame(&f).unwrap();
        assert!(kept.used_bytes() <= cap);
    }
    let fa = store.frames(a).unwrap();
    let fb = store.frames(b).unwrap();
    // All of session 1 evicted (DB updated, files gone), session 2 keeps five, the sixth
    // could not be kept (only open-session pictures left).
    assert!(
        fa.iter()
            .all(|f| f.frame.kept_image.is_none() && f.image_evicted.is_some())
    );
    assert_eq!(
        fb.iter().filter(|f| f.frame.kept_image.is_some()).count(),
        5
    );
    assert!(fb[5].frame.kept_image.is_none());
    assert!(
        !dir.path()
            .join(format!("flagged/session-{a:06}/000001.jpg"))
            .exists()
    );
    // Every reference in the database points at a file.
    for f in fa.iter().chain(&fb) {
        if let Some(rel) = &f.frame.kept_image {
            assert!(kept.resolve(rel).is_file(), "{}", rel.display());
        }
    }
}

#[test]
fn stop_keeping_policy_never_evicts() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("audit.db")).unwrap();
    let img = picture(2, 64, 48);
    let mut kept =
        FlaggedImages::open(&dir.path().join("f"), &store, 1, CapPolicy::StopKeeping).unwrap();
    let s = store.begin_session(&new_session("A")).unwrap();
    assert_eq!(kept.keep_rgb(&mut store, s, 1, None, &img).unwrap(), None);
    let mut kept = FlaggedImages::open(
        &dir.path().join("f"),
        &store,
        1 << 20,
        CapPolicy::StopKeeping,
    )
    .unwrap();
    let rel = kept
        .keep_rgb(&mut store, s, 1, None, &img)
        .unwrap()
        .unwrap();
    let back = image::open(kept.resolve(&rel)).unwrap();
    assert_eq!((back.width(), back.height()), (64, 48));
    // Reopening measures what is there.
    let again = FlaggedImages::open(
        &dir.path().join("f"),
        &store,
        1 << 20,
        CapPolicy::StopKeeping,
    )
    .unwrap();
    assert_eq!(
        again.used_bytes(),
        std::fs::metadata(kept.resolve(&rel)).unwrap().len()
    );
}

#[test]
fn orphans_are_swept_but_foreign_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("audit.db")).unwrap();
    let root = dir.path().join("f");
    let mut kept = FlaggedImages::open(&root, &store, 1 << 20, CapPolicy::EvictOldest).unwrap();
    let s = store.begin_session(&new_session("A")).unwrap();
    let bytes = jpeg(&picture(3, 32, 32));
    let recorded = kept
        .keep_encoded(&mut store, s, 1, None, &bytes)
        .unwrap()
        .unwrap();
    let mut f = frame(s, 1);
    f.kept_image = Some(recorded.clone());
    store.record_frame(&f).unwrap();
    // A crash after keeping but before recording:
    let orphan = kept
        .keep_encoded(&mut store, s, 2, None, &bytes)
        .unwrap()
        .unwrap();
    std::fs::write(root.join(format!("session-{s:06}/000003.jpg.tmp")), b"half").unwrap();
    std::fs::write(root.join("README.txt"), b"not ours").unwrap();
    std::fs::create_dir_all(root.join("photos")).unwrap();
    std::fs::write(root.join("photos/000001.jpg"), b"not ours").unwrap();

    assert_eq!(kept.sweep_orphans(&store).unwrap(), 2);
    assert!(kept.resolve(&recorded).is_file());
    assert!(!kept.resolve(&orphan).exists());
    assert!(root.join("README.txt").is_file());
    assert!(root.join("photos/000001.jpg").is_file());
    assert_eq!(kept.used_bytes(), bytes.len() as u64);
    let e = kept
        .keep_encoded(&mut store, s, 4, None, b"not a picture")
        .unwrap_err();
    assert!(e.to_string().contains("not a picture"), "{e}");
}

#[test]
fn two_databases_sharing_a_folder_the_second_is_refused_and_nothing_of_the_first_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("flagged");
    let (a_db, b_db) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let mut a = Store::open(&a_db).unwrap();
    let mut b = Store::open(&b_db).unwrap();
    let mut kept_a = FlaggedImages::open(&root, &a, 1 << 20, CapPolicy::EvictOldest).unwrap();
    let owner = std::fs::read(root.join(OWNER_FILE)).unwrap();
    let mut expected = std::fs::canonicalize(&a_db).unwrap().into_os_string();
    expected.push("\n");
    assert_eq!(owner, expected.as_encoded_bytes());

    let s = a.begin_session(&new_session("A")).unwrap();
    let bytes = jpeg(&picture(4, 32, 32));
    let recorded = kept_a
        .keep_encoded(&mut a, s, 1, None, &bytes)
        .unwrap()
        .unwrap();
    let mut f = frame(s, 1);
    f.kept_image = Some(recorded.clone());
    a.record_frame(&f).unwrap();
    // Kept but not yet recorded (a's own sweep would remove it; b must never).
    let pending = kept_a
        .keep_encoded(&mut a, s, 2, None, &bytes)
        .unwrap()
        .unwrap();

    let refused = FlaggedImages::open(&root, &b, 1 << 20, CapPolicy::EvictOldest).unwrap_err();
    assert!(matches!(refused, FlaggedError::NotOurs { .. }), "{refused}");
    let message = refused.to_string();
    for part in ["a.db", "b.db", OWNER_FILE, "flagged"] {
        assert!(message.contains(part), "{part} missing from: {message}");
    }
    // Nor may b use a's folder through a's handle.
    let err = kept_a.sweep_orphans(&b).unwrap_err();
    assert!(matches!(err, FlaggedError::NotOurs { .. }), "{err}");
    let sb = b.begin_session(&new_session("B")).unwrap();
    let err = kept_a
        .keep_encoded(&mut b, sb, 1, None, &bytes)
        .unwrap_err();
    assert!(matches!(err, FlaggedError::NotOurs { .. }), "{err}");
    assert!(kept_a.resolve(&recorded).is_file());
    assert!(kept_a.resolve(&pending).is_file());

    // The owner opens it again, and its sweep works as before.
    drop(kept_a);
    let mut kept_a = FlaggedImages::open(&root, &a, 1 << 20, CapPolicy::EvictOldest).unwrap();
    assert_eq!(kept_a.sweep_orphans(&a).unwrap(), 1);
    assert!(kept_a.resolve(&recorded).is_file());
}

#[test]
fn an_interrupted_claim_is_renewed_and_a_vanished_one_stops_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("flagged");
    let store = Store::open(&dir.path().join("audit.db")).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    // A power cut while claiming leaves an empty owner file.
    std::fs::write(root.join(OWNER_FILE), b"").unwrap();
    let mut kept = FlaggedImages::open(&root, &store, 1 << 20, CapPolicy::EvictOldest).unwrap();
    assert!(!std::fs::read(root.join(OWNER_FILE)).unwrap().is_empty());
    kept.sweep_orphans(&store).unwrap();
    // Another disk mounted over the folder would have no (or another) owner file.
    std::fs::remove_file(root.join(OWNER_FILE)).unwrap();
    let err = kept.sweep_orphans(&store).unwrap_err().to_string();
    assert!(err.contains(OWNER_FILE), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Export, listing, report

/// A closed session with `n` frames, some of them with kept pictures; returns the store, the
/// session id and the flagged folder.
fn populated(dir: &Path, n: u64) -> (Store, i64, PathBuf) {
    let mut store = Store::open(&dir.join("audit.db")).unwrap();
    let root = dir.join("flagged");
    let mut kept = FlaggedImages::open(&root, &store, 1 << 24, CapPolicy::EvictOldest).unwrap();
    let s = store.begin_session(&new_session("SLIDE,7")).unwrap();
    for seq in 1..=n {
        let mut f = frame(s, seq);
        let blast = f.decision == StoredDecision::Label && f.label.as_deref() != Some("Benign");
        if blast || f.decision == StoredDecision::Uncertain {
            f.kept_image = kept
                .keep_rgb(&mut store, s, seq, None, &picture(seq, 400, 300))
                .unwrap();
        }
        store.record_frame(&f).unwrap();
    }
    let frames = store.frames(s).unwrap();
    let count = |d: StoredDecision, l: Option<&str>| {
        frames
            .iter()
            .filter(|f| f.frame.decision == d && (l.is_none() || f.frame.label.as_deref() == l))
            .count() as u32
    };
    let benign = count(StoredDecision::Label, Some("Benign"));
    let pro = count(StoredDecision::Label, Some("Pro"));
    let summary = SessionSummary {
        counts: vec![
            ("Benign".into(), benign),
            ("Early".into(), 0),
            ("Pre".into(), 0),
            ("Pro".into(), pro),
        ],
        good: benign + pro + count(StoredDecision::Uncertain, None),
        retakes: count(StoredDecision::Retake, None),
        uncertain: count(StoredDecision::Uncertain, None),
        fields: 0,
        blast_fields: 0,
        uncertain_fields: 0,
        unfamiliar_fields: 0,
        blast_fraction: f64::from(pro) / f64::from(benign + pro),
        verdict: Some("refer".into()),
        dominant_subtype: Some("Pro".into()),
        fault: None,
    };
    store
        .close_session(s, &summary, StopReason::Button)
        .unwrap();
    (store, s, root)
}

#[test]
fn csv_export_has_a_stable_header_and_one_row_per_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, _) = populated(dir.path(), 30);
    let mut out = Vec::new();
    audit::export_session(&store, s, ExportFormat::Csv, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut header: Vec<String> = audit::CSV_COLUMNS.iter().map(|c| c.to_string()).collect();
    header.extend(["p_Benign", "p_Early", "p_Pre", "p_Pro"].map(String::from));
    assert_eq!(lines[0], header.join(","));
    assert_eq!(lines.len(), 31);
    let frames = store.frames(s).unwrap();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (line, f) in lines[1..].iter().zip(&frames) {
        // The slide id "SLIDE,7" is quoted; split on commas outside quotes.
        let cells = split_csv(line);
        assert_eq!(cells.len(), header.len(), "{line}");
        assert_eq!(cells[col("frame_id")], f.id.to_string());
        assert_eq!(cells[col("seq")], f.frame.seq.to_string());
        assert_eq!(cells[col("decision")], f.frame.decision.as_str());
        assert_eq!(cells[col("sha256")], f.frame.sha256);
        assert_eq!(cells[col("slide_id")], "SLIDE,7");
        for (i, p) in f.frame.probabilities.iter().enumerate() {
            assert_eq!(cells[col("p_Benign") + i].parse::<f32>().unwrap(), *p);
        }
        if f.frame.decision == StoredDecision::Retake {
            assert_eq!(cells[col("p_Pro")], "");
            assert_eq!(cells[col("retake_reason")], "focus");
        }
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

#[test]
fn json_export_holds_the_session_and_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, _) = populated(dir.path(), 12);
    let mut out = Vec::new();
    audit::export_session(&store, s, ExportFormat::Json, &mut out).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["session"]["id"], s);
    assert_eq!(doc["session"]["state"], "closed");
    assert_eq!(doc["session"]["stop_reason"], "button");
    assert_eq!(doc["session"]["verdict"], "refer");
    let frames = doc["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 12);
    let stored = store.frames(s).unwrap();
    for (j, f) in frames.iter().zip(&stored) {
        assert_eq!(j["id"], f.id);
        assert_eq!(j["seq"], f.frame.seq);
        assert_eq!(j["decision"], f.frame.decision.as_str());
        assert_eq!(
            j["probabilities"].as_array().unwrap().len(),
            f.frame.probabilities.len()
        );
        assert!(j["time"].as_str().unwrap().ends_with('Z'));
    }
    // Unknown ids are errors naming the id.
    let e =
        audit::export_session(&store, s + 100, ExportFormat::Json, &mut Vec::new()).unwrap_err();
    assert!(
        e.to_string().contains(&format!("no session {}", s + 100)),
        "{e}"
    );
}

#[test]
fn the_sessions_table_lists_every_session_with_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, s, _) = populated(dir.path(), 10);
    let open = store.begin_session(&new_session("next")).unwrap();
    store.record_frame(&frame(open, 1)).unwrap();
    let rows = audit::list_sessions(&store).unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![s, open]);
    let mut out = Vec::new();
    audit::write_sessions_table(&rows, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("VERDICT"),
        "{text}"
    );
    assert!(
        lines[1].contains("BLASTS SEEN - REFER (Pro)") && lines[1].contains("closed"),
        "{text}"
    );
    assert!(
        lines[2].contains("open") && lines[2].contains("no verdict yet"),
        "{text}"
    );
}

#[test]
fn the_session_report_shows_counts_verdict_and_flagged_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s, flagged) = populated(dir.path(), 40);
    let out = dir.path().join("report");
    let files = audit::write_session_report(&store, s, &out, Some(&flagged)).unwrap();
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    let html = std::fs::read_to_string(&files.html).unwrap();
    for doc in [&md, &html] {
        assert!(doc.contains("BLASTS SEEN - REFER (Pro)"), "verdict missing");
        assert!(doc.contains("screening aid, not a diagnosis"));
        assert!(doc.contains(&"cd".repeat(32)), "model sha256 missing");
        assert!(doc.contains("0.0.0-test"), "software version missing");
    }
    let row = store.session(s).unwrap();
    let counts = row.counts.unwrap();
    assert!(
        md.contains(&format!("| Pro | {} |", counts.counts[3].1)),
        "{md}"
    );
    assert!(md.contains(&format!(
        "Retakes (failed the quality gate): {} (focus {})",
        counts.retakes, counts.retakes
    )));
    // Flagged frames: blasts first, at most 12, each a small JPEG; the HTML embeds them.
    let flagged_frames = store
        .frames(s)
        .unwrap()
        .into_iter()
        .filter(|f| f.frame.kept_image.is_some())
        .count();
    assert_eq!(
        files.thumbnails.len(),
        flagged_frames.min(audit::MAX_THUMBNAILS)
    );
    for t in &files.thumbnails {
        let img = image::open(t).unwrap();
        assert!(img.width().max(img.height()) <= 192);
    }
    assert_eq!(
        html.matches("data:image/jpeg;base64,").count(),
        files.thumbnails.len()
    );
    assert!(html.contains("data:image/png;base64,"));
    let chart = image::open(&files.chart).unwrap();
    assert_eq!((chart.width(), chart.height()), (900, 520));

    // Without the flagged folder, the report still works and says why pictures are missing.
    let files = audit::write_session_report(&store, s, &dir.path().join("r2"), None).unwrap();
    assert!(files.thumbnails.is_empty());
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(md.contains("picture unavailable: flagged-images folder not given"));
}

#[test]
fn an_interrupted_session_reports_no_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let s = {
        let mut store = Store::open(&db).unwrap();
        let s = store.begin_session(&new_session("cut")).unwrap();
        for seq in 1..=9 {
            store.record_frame(&frame(s, seq)).unwrap();
        }
        s
    };
    let store = Store::open(&db).unwrap();
    let files = audit::write_session_report(&store, s, &dir.path().join("r"), None).unwrap();
    let md = std::fs::read_to_string(files.markdown).unwrap();
    assert!(
        md.contains("no verdict (session interrupted: scan again)"),
        "{md}"
    );
    assert!(md.contains("recomputed from the recorded frames"));
}

// ---------------------------------------------------------------------------------------------
// Measurement (not a pass/fail test)

/// How long a committed `record_frame` takes here (WAL, synchronous=FULL).
/// `cargo test -p edge --test store -- --ignored --nocapture commit_latency`
/// (`LEUKOSCOPE_DB_DIR` puts the database on another file system, e.g. the SD card).
#[test]
#[ignore = "measurement; run by hand"]
fn commit_latency() {
    let tmp = tempfile::tempdir_in(
        std::env::var_os("LEUKOSCOPE_DB_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
    )
    .unwrap();
    let mut store = Store::open(&tmp.path().join("audit.db")).unwrap();
    let s = store.begin_session(&new_session("bench")).unwrap();
    let n = 1000;
    let mut times = Vec::with_capacity(n);
    for seq in 1..=n as u64 {
        let t0 = Instant::now();
        store.record_frame(&frame(s, seq)).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / n as f64;
    eprintln!(
        "record_frame on {}: {n} commits, mean {mean:.3} ms, median {:.3} ms, p99 {:.3} ms, max {:.3} ms ({:.0} commits/s)",
        tmp.path().display(),
        times[n / 2],
        times[n * 99 / 100],
        times[n - 1],
        1e3 / mean
    );
}
