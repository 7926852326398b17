//! Unit tests of the store: schema, round trips, states, recovery.

use super::*;
use chrono::{DateTime, TimeZone, Utc};

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_750_000_000_000 + ms).unwrap()
}

fn labels() -> Vec<String> {
    ["Benign", "Early", "Pre", "Pro"].map(String::from).to_vec()
}

fn new_session(slide: &str) -> NewSession {
    NewSession {
        slide_id: Some(slide.into()),
        started: t(0),
        model_sha256: "ab".repeat(32),
        model_variant: "mnv2-0.5-128".into(),
        labels: labels(),
        normal_labels: vec!["Benign".into()],
        software_version: "0.1.0".into(),
        rule: serde_json::json!({"min_confidence": 0.8}),
    }
}

fn frame(session: i64, seq: u64, decision: StoredDecision, label: Option<&str>) -> FrameRecord {
    let probabilities = match decision {
        StoredDecision::Retake => vec![],
        _ => {
            let mut p = vec![0.01f32; 4];
            let i = labels()
                .iter()
                .position(|l| Some(l.as_str()) == label)
                .unwrap_or(0);
            // Probabilities that agree with the decision (a recount decides fields from them).
            p[i] = if decision == StoredDecision::Uncertain {
                0.6
            } else {
                0.97
            };
            p
        }
    };
    FrameRecord {
        session,
        seq,
        time: t(100 * seq as i64 + 7),
        origin: "stdin".into(),
        sha256: format!("{seq:064x}"),
        width: 640,
        height: 480,
        quality: Some(Quality {
            focus: 123.5,
            mean: 180.25,
            p999: 250.0,
            clipped_fraction: 0.001,
            stained_fraction: 0.07,
        }),
        decision,
        retake_reason: (decision == StoredDecision::Retake).then(|| "focus".into()),
        label: label.map(String::from),
        confidence: (decision != StoredDecision::Retake).then_some(0.97),
        probabilities,
        model_sha256: "ab".repeat(32),
        software_version: "0.1.0".into(),
        kept_image: None,
        tile: None,
        field: Some(seq as u32),
        unfamiliarity: None,
        uncertain_reason: None,
    }
}

fn summary() -> SessionSummary {
    SessionSummary {
        counts: vec![("Benign".into(), 2), ("Pro".into(), 1)],
        good: 4,
        retakes: 1,
        uncertain: 1,
        fields: 0,
        blast_fields: 0,
        uncertain_fields: 0,
        unfamiliar_fields: 0,
        blast_fraction: 1.0 / 3.0,
        verdict: Some("refer".into()),
        dominant_subtype: Some("Pro".into()),
        fault: None,
    }
}

#[test]
fn a_new_database_has_the_schema_and_the_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("sub/audit.db")).unwrap();
    let q = |sql: &str| -> String {
        store
            .conn
            .query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    assert_eq!(q("PRAGMA journal_mode"), "Text(\"wal\")");
    assert_eq!(q("PRAGMA synchronous"), "Integer(2)"); // FULL
    assert_eq!(q("PRAGMA foreign_keys"), "Integer(1)");
    assert_eq!(
        q("PRAGMA user_version"),
        format!("Integer({SCHEMA_VERSION})")
    );
    assert_eq!(
        q("PRAGMA application_id"),
        format!("Integer({})", schema::APPLICATION_ID)
    );
    assert!(store.recovered_sessions().is_empty());
}

#[test]
fn frames_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("a.db")).unwrap();
    let s = store.begin_session(&new_session("S-1")).unwrap();
    let mut f = frame(s, 3, StoredDecision::Uncertain, Some("Early"));
    f.probabilities = vec![0.1, 0.45, 0.3, 0.15];
    f.confidence = Some(0.45);
    f.kept_image = Some(PathBuf::from("session-000001/000003.jpg"));
    f.tile = Some(2);
    f.quality.as_mut().unwrap().stained_fraction = f32::NAN;
    let id = store.record_frame(&f).unwrap();
    let back = store.frames(s).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].id, id);
    let g = &back[0].frame;
    assert!(g.quality.unwrap().stained_fraction.is_nan());
    // Everything else is equal (NaN != NaN, so compare with it replaced).
    let mut g2 = g.clone();
    g2.quality.as_mut().unwrap().stained_fraction = 0.0;
    f.quality.as_mut().unwrap().stained_fraction = 0.0;
    assert_eq!(g2, f);
    assert_eq!(back[0].image_evicted, None);
}

#[test]
fn has_frame_matches_origin_and_sha256_and_uses_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let mut store = Store::open(&path).unwrap();
    let s = store.begin_session(&new_session("S-1")).unwrap();
    let mut f = frame(s, 1, StoredDecision::Retake, None);
    f.origin = "/srv/in/a.jpg".into();
    store.record_frame(&f).unwrap();
    assert!(store.has_frame("/srv/in/a.jpg", &f.sha256).unwrap());
    assert!(!store.has_frame("/srv/in/a.jpg", &"0".repeat(64)).unwrap());
    assert!(!store.has_frame("/srv/in/b.jpg", &f.sha256).unwrap());
    let plan: String = store
        .conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT 1 FROM frames WHERE origin = 'x' AND sha256 = 'y'",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("frames_by_origin"), "{plan}");
    drop(store);
    // Reopening creates nothing twice and keeps the schema version.
    let store = Store::open(&path).unwrap();
    assert!(store.has_frame("/srv/in/a.jpg", &f.sha256).unwrap());
    assert_eq!(Store::schema_version(&path).unwrap(), SCHEMA_VERSION);
}

#[test]
fn times_are_stored_with_milliseconds_in_utc() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("a.db")).unwrap();
    let s = store.begin_session(&new_session("S")).unwrap();
    let mut f = frame(s, 1, StoredDecision::Retake, None);
    f.time = t(1) + chrono::Duration::microseconds(999);
    store.record_frame(&f).unwrap();
    let text: String = store
        .conn
        .query_row("SELECT time FROM frames", [], |r| r.get(0))
        .unwrap();
    assert_eq!(text, "2025-06-15T15:06:40.001Z");
    assert_eq!(store.frames(s).unwrap()[0].frame.time, t(1));
}

#[test]
fn closing_stores_the_summary_and_closed_sessions_take_no_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("a.db")).unwrap();
    let s = store.begin_session(&new_session("S")).unwrap();
    store
        .record_frame(&frame(s, 1, StoredDecision::Label, Some("Benign")))
        .unwrap();
    store
        .close_session_at(s, &summary(), StopReason::Button, t(5000))
        .unwrap();
    let row = store.session(s).unwrap();
    assert_eq!(row.state, SessionState::Closed);
    assert_eq!(row.stop_reason, Some(StopReason::Button));
    assert_eq!(row.stopped, Some(t(5000)));
    assert_eq!(row.verdict.as_deref(), Some("refer"));
    assert_eq!(row.dominant_subtype.as_deref(), Some("Pro"));
    let c = row.counts.unwrap();
    assert_eq!(c.counts, summary().counts);
    assert_eq!((c.good, c.retakes, c.uncertain), (4, 1, 1));
    assert_eq!(row.frames, 1);
    assert_eq!(row.rule["min_confidence"], 0.8);

    let e = store
        .record_frame(&frame(s, 2, StoredDecision::Label, Some("Benign")))
        .unwrap_err();
    assert!(
        matches!(e, StoreError::SessionNotOpen { id, state: SessionState::Closed } if id == s),
        "{e}"
    );
    let e = store
        .close_session(s, &summary(), StopReason::Command)
        .unwrap_err();
    assert!(matches!(e, StoreError::SessionNotOpen { .. }), "{e}");
    assert_eq!(store.frames(s).unwrap().len(), 1);
}

#[test]
fn unknown_sessions_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("a.db")).unwrap();
    for e in [
        store.session(42).unwrap_err(),
        store.frames(42).unwrap_err(),
        store
            .record_frame(&frame(42, 1, StoredDecision::Retake, None))
            .unwrap_err(),
        store
            .close_session(42, &summary(), StopReason::Idle)
            .unwrap_err(),
    ] {
        assert!(
            matches!(e, StoreError::UnknownSession { id: 42, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("no session 42"), "{e}");
    }
}

#[test]
fn probabilities_must_match_the_labels() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("a.db")).unwrap();
    let s = store.begin_session(&new_session("S")).unwrap();
    let mut f = frame(s, 1, StoredDecision::Label, Some("Benign"));
    f.probabilities.pop();
    let e = store.record_frame(&f).unwrap_err();
    assert!(
        e.to_string().contains("3 probabilities for 4 labels"),
        "{e}"
    );
    assert!(store.frames(s).unwrap().is_empty());
}

#[test]
fn last_frames_are_the_newest_in_recording_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("a.db")).unwrap();
    let a = store.begin_session(&new_session("A")).unwrap();
    for seq in 1..=3 {
        store
            .record_frame(&frame(a, seq, StoredDecision::Retake, None))
            .unwrap();
    }
    store
        .close_session(a, &summary(), StopReason::Idle)
        .unwrap();
    let b = store.begin_session(&new_session("B")).unwrap();
    for seq in 1..=2 {
        store
            .record_frame(&frame(b, seq, StoredDecision::Label, Some("Pre")))
            .unwrap();
    }
    let last: Vec<(i64, u64)> = store
        .last_frames(3)
        .unwrap()
        .iter()
        .map(|f| (f.frame.session, f.frame.seq))
        .collect();
    assert_eq!(last, vec![(a, 3), (b, 1), (b, 2)]);
    assert_eq!(store.last_frames(100).unwrap().len(), 5);
    assert!(store.last_frames(0).unwrap().is_empty());
}

#[test]
fn last_events_answer_last_from_the_database_after_a_restart() {
    use hardware::{Event, LineFormat};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    {
        let mut store = Store::open(&path).unwrap();
        let a = store.begin_session(&new_session("S-1")).unwrap();
        store
            .record_frame(&frame(a, 1, StoredDecision::Retake, None))
            .unwrap();
        store
            .record_frame(&frame(a, 2, StoredDecision::Label, Some("Benign")))
            .unwrap();
        store
            .record_frame(&frame(a, 3, StoredDecision::Label, Some("Pro")))
            .unwrap();
        let mut uncertain = frame(a, 4, StoredDecision::Uncertain, Some("Pre"));
        uncertain.tile = Some(2);
        uncertain.confidence = Some(0.6);
        store.record_frame(&uncertain).unwrap();
    }
    // A restart: a new store on the same file.
    let store = Store::open(&path).unwrap();
    let lines: Vec<String> = store
        .last_events(3)
        .unwrap()
        .iter()
        .map(|e| e.to_line(LineFormat::Text))
        .collect();
    assert_eq!(
        lines,
        vec![
            "RESULT frame=2 slide=S-1 label=Benign confidence=0.970 decision=normal time=2025-06-15T15:06:40.207Z",
            "RESULT frame=3 slide=S-1 label=Pro confidence=0.970 decision=blast time=2025-06-15T15:06:40.307Z",
            "RESULT frame=4 slide=S-1 label=Pre confidence=0.600 decision=uncertain time=2025-06-15T15:06:40.407Z tile=2",
        ]
    );
    let all = store.last_events(100).unwrap();
    assert_eq!(all.len(), 4);
    assert!(matches!(all[0], Event::Retake { frame: 1, .. }), "{all:?}");
    assert!(store.last_events(0).unwrap().is_empty());
}

#[test]
fn open_sessions_are_marked_interrupted_with_recounted_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let s;
    {
        let mut store = Store::open(&path).unwrap();
        s = store.begin_session(&new_session("S")).unwrap();
        for (seq, d, l) in [
            (1, StoredDecision::Label, Some("Benign")),
            (2, StoredDecision::Label, Some("Pro")),
            (3, StoredDecision::Label, Some("Benign")),
            (4, StoredDecision::Uncertain, Some("Early")),
            (5, StoredDecision::Retake, None),
            (6, StoredDecision::Label, Some("Pro")),
        ] {
            store.record_frame(&frame(s, seq, d, l)).unwrap();
        }
        // Dropped without closing: as after a crash.
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.recovered_sessions(), &[s]);
    let row = store.session(s).unwrap();
    assert_eq!(row.state, SessionState::Interrupted);
    assert_eq!(row.verdict, None);
    assert_eq!(row.stop_reason, None);
    assert_eq!(row.stopped, Some(t(607)));
    let c = row.counts.unwrap();
    assert_eq!(
        c.counts,
        vec![
            ("Benign".into(), 2),
            ("Early".into(), 0),
            ("Pre".into(), 0),
            ("Pro".into(), 2)
        ]
    );
    assert_eq!((c.good, c.retakes, c.uncertain), (5, 1, 1));
    // One field per frame here: 5 good fields, 2 of the 4 confident ones blasts.
    assert_eq!(
        (c.fields, c.blast_fields, c.uncertain_fields),
        (Some(5), Some(2), Some(1))
    );
    assert!((c.blast_fraction - 0.5).abs() < 1e-12);
    drop(store);
    // Nothing left to recover the next time.
    assert!(Store::open(&path).unwrap().recovered_sessions().is_empty());
}

#[test]
fn a_second_writer_is_refused_but_readers_are_welcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let mut writer = Store::open(&path).unwrap();
    let s = writer.begin_session(&new_session("S")).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::Busy { .. }), "{e}");
    let reader = Store::open_read_only(&path).unwrap();
    writer
        .record_frame(&frame(s, 1, StoredDecision::Retake, None))
        .unwrap();
    // The reader sees committed frames and leaves the open session alone.
    assert_eq!(reader.frames(s).unwrap().len(), 1);
    assert_eq!(reader.session(s).unwrap().state, SessionState::Open);
    drop(writer);
    // After the writer is gone, a reader still does not recover anything.
    let reader2 = Store::open_read_only(&path).unwrap();
    assert_eq!(reader2.session(s).unwrap().state, SessionState::Open);
}

#[test]
fn foreign_and_newer_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let e = Store::open(&foreign).unwrap_err();
    assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");

    let newer = dir.path().join("newer.db");
    drop(Store::open(&newer).unwrap());
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let e = Store::open(&newer).unwrap_err();
    assert!(
        matches!(e, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1),
        "{e}"
    );

    let e = Store::open_read_only(&newer).unwrap_err();
    assert!(matches!(e, StoreError::TooNew { .. }), "{e}");

    // An older one is not "newer": reading it waits for the writer's migration, and says so.
    let older = dir.path().join("older.db");
    drop(Store::open(&older).unwrap());
    rusqlite::Connection::open(&older)
        .unwrap()
        .pragma_update(None, "user_version", 2)
        .unwrap();
    let e = Store::open_read_only(&older).unwrap_err();
    assert!(
        matches!(e, StoreError::NotMigrated { found: 2, .. })
            && e.to_string().contains("edge run` migrates it"),
        "{e}"
    );

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let e = Store::open(&garbage).unwrap_err();
    assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");

    let e = Store::open_read_only(&dir.path().join("missing.db")).unwrap_err();
    assert!(e.to_string().contains("missing.db"), "{e}");
}

#[test]
fn text_enums_round_trip() {
    for r in [
        StopReason::Command,
        StopReason::Button,
        StopReason::Idle,
        StopReason::Shutdown,
        StopReason::SourceEnd,
        StopReason::Fault,
    ] {
        assert_eq!(r.as_str().parse::<StopReason>().unwrap(), r);
    }
    assert!("later".parse::<StopReason>().is_err());
    assert_eq!(
        "retake".parse::<StoredDecision>().unwrap(),
        StoredDecision::Retake
    );
}

#[test]
fn unfamiliar_frames_keep_their_score_and_reason_through_last_and_recovery() {
    use hardware::LineFormat;
    use leukoscope_screening::UncertainReason;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let s;
    {
        let mut store = Store::open(&path).unwrap();
        s = store.begin_session(&new_session("S-1")).unwrap();
        let mut familiar = frame(s, 1, StoredDecision::Label, Some("Benign"));
        familiar.unfamiliarity = Some(1.5);
        store.record_frame(&familiar).unwrap();
        // Confident blast probabilities, but unfamiliar: uncertain, never a blast field.
        for seq in 2..=3 {
            let mut f = frame(s, seq, StoredDecision::Label, Some("Pro"));
            f.decision = StoredDecision::Uncertain;
            f.unfamiliarity = Some(42.25);
            f.uncertain_reason = Some(UncertainReason::Unfamiliar);
            store.record_frame(&f).unwrap();
        }
        let back = store.frames(s).unwrap();
        assert_eq!(back[0].frame, familiar);
        assert_eq!(back[1].frame.unfamiliarity, Some(42.25));
        assert_eq!(
            back[1].frame.uncertain_reason,
            Some(UncertainReason::Unfamiliar)
        );
        let lines: Vec<String> = store
            .last_events(2)
            .unwrap()
            .iter()
            .map(|e| e.to_line(LineFormat::Text))
            .collect();
        assert_eq!(
            lines,
            vec![
                "RESULT frame=2 slide=S-1 label=Pro confidence=0.970 decision=uncertain time=2025-06-15T15:06:40.207Z reason=unfamiliar",
                "RESULT frame=3 slide=S-1 label=Pro confidence=0.970 decision=uncertain time=2025-06-15T15:06:40.307Z reason=unfamiliar",
            ]
        );
        // A reason the schema does not know is refused.
        let e = store.conn.execute(
            "UPDATE frames SET uncertain_reason = 'bored' WHERE seq = 1",
            [],
        );
        assert!(e.is_err());
        // Dropped without closing: as after a crash.
    }
    let store = Store::open(&path).unwrap();
    let c = store.session(s).unwrap().counts.unwrap();
    assert_eq!((c.good, c.uncertain), (3, 2));
    assert_eq!(
        (
            c.fields,
            c.blast_fields,
            c.uncertain_fields,
            c.unfamiliar_fields
        ),
        (Some(3), Some(0), Some(2), Some(2))
    );
}

#[test]
fn a_version_2_database_is_migrated_and_its_rows_read_without_scores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.execute_batch(schema::MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.execute(
            "INSERT INTO sessions (id, started, state, model_sha256, model_variant, labels,
                normal_labels, software_version, rule, counts, good, retakes, uncertain,
                blast_fraction, verdict, fields, blast_fields, uncertain_fields, stopped,
                stop_reason)
             VALUES (1, '2025-06-15T15:06:40.000Z', 'closed', 'ab', 'v', '[\"Benign\",\"Pro\"]',
                '[\"Benign\"]', '0.1.0', '{}', '{\"Benign\":1,\"Pro\":0}', 1, 0, 0, 0.0,
                'insufficient', 1, 0, 0, '2025-06-15T15:06:41.000Z', 'command')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO frames (session_id, seq, time, origin, sha256, width, height, decision,
                label, confidence, probabilities, model_sha256, software_version, field)
             VALUES (1, 1, '2025-06-15T15:06:40.500Z', 'stdin', 'cd', 8, 8, 'label', 'Benign',
                0.9, '[0.9,0.1]', 'ab', '0.1.0', 1)",
            [],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(Store::schema_version(&path).unwrap(), SCHEMA_VERSION);
    let session = store.session(1).unwrap();
    assert_eq!(session.verdict.as_deref(), Some("insufficient"));
    assert_eq!(session.counts.unwrap().unfamiliar_fields, None);
    let frames = store.frames(1).unwrap();
    assert_eq!(
        (
            frames[0].frame.unfamiliarity,
            frames[0].frame.uncertain_reason
        ),
        (None, None)
    );
}
