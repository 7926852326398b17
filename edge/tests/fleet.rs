//! Fleet forwarding end to end with a real broker: each test starts its own Mosquitto on a free
//! loopback port, real `edge run` kits (the tiny model, synthetic smears on stdin) and a real
//! `edge fleet collect`, stops and kills them, and compares the collector's database with the
//! kit's. Without the `mosquitto` binary the broker tests are reported as *ignored* (libtest-mimic
//! harness), never silently passed; `LEUKOSCOPE_REQUIRE_MOSQUITTO=1` (set by `.ci/run`) makes a
//! missing broker a failure.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{smear_jpeg, write_model_with};
use edge::store::{SessionState, StopReason, Store, StoredDecision};
use libtest_mimic::{Arguments, Failed, Trial};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

fn main() {
    let args = Arguments::from_args();
    let have = mosquitto().is_some();
    let require = std::env::var("LEUKOSCOPE_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1");
    if !have {
        eprintln!(
            "mosquitto not installed (apt-get install mosquitto): the fleet broker tests are \
             reported as ignored{}",
            if require {
                "; LEUKOSCOPE_REQUIRE_MOSQUITTO=1: they fail"
            } else {
                ""
            }
        );
    }
    let broker = |name: &'static str, f: fn()| {
        Trial::test(name, move || {
            if mosquitto().is_none() {
                return Err(Failed::from(
                    "mosquitto not installed and LEUKOSCOPE_REQUIRE_MOSQUITTO=1",
                ));
            }
            f();
            Ok(())
        })
        .with_ignored_flag(!have && !require)
    };
    let tests = vec![
        Trial::test(
            "outbox_prunes_sent_rows_first_and_never_drops_unsent",
            || {
                outbox_prunes_sent_rows_first_and_never_drops_unsent();
                Ok(())
            },
        ),
        broker(
            "a_session_reaches_the_collector_exactly",
            a_session_reaches_the_collector_exactly,
        ),
        broker(
            "a_broker_outage_mid_session_loses_nothing_and_never_stalls_the_kit",
            a_broker_outage_mid_session_loses_nothing_and_never_stalls_the_kit,
        ),
        broker(
            "a_kit_killed_mid_publish_sends_its_backlog_once_after_restart",
            a_kit_killed_mid_publish_sends_its_backlog_once_after_restart,
        ),
        broker(
            "a_collector_killed_mid_stream_misses_and_doubles_nothing",
            a_collector_killed_mid_stream_misses_and_doubles_nothing,
        ),
        broker(
            "tls_with_a_password_works_and_a_wrong_password_is_reported_while_screening_goes_on",
            tls_with_a_password_works_and_a_wrong_password_is_reported_while_screening_goes_on,
        ),
        broker(
            "the_bench_moves_a_backlog_through_publisher_and_collector",
            the_bench_moves_a_backlog_through_publisher_and_collector,
        ),
        Trial::test("a_full_outbox_stops_recording_like_a_full_disk", || {
            a_full_outbox_stops_recording_like_a_full_disk();
            Ok(())
        }),
    ];
    libtest_mimic::run(&args, tests).exit();
}

fn mosquitto() -> Option<PathBuf> {
    let p = PathBuf::from(MOSQUITTO);
    p.is_file().then_some(p)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it is true; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Mosquitto of a test: its own config, port and persistence folder.
struct Broker {
    dir: PathBuf,
    port: u16,
    extra: String,
    child: Option<Child>,
}

impl Broker {
    fn start(dir: &Path, extra: &str) -> Broker {
        let mut b = Broker {
            dir: dir.to_path_buf(),
            port: free_port(),
            extra: extra.to_string(),
            child: None,
        };
        b.restart();
        b
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port with the same persistence).
    fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {} 127.0.0.1\npersistence true\npersistence_location {}/\n\
             max_queued_messages 100000\nuser root\n",
            self.port,
            self.dir.display()
        );
        if self.extra.is_empty() {
            text.push_str("allow_anonymous true\n");
        } else {
            text.push_str(&self.extra);
        }
        std::fs::write(&conf, text).unwrap();
        let log = File::create(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), "mosquitto listens", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// SIGTERM (it saves its state) and wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sigterm(&c);
            c.wait().unwrap();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// `edge fleet collect` into `db`, with its stderr in `log`; returns once it has subscribed
/// (or, restarted, once its kept session is back).
struct Collector {
    child: Child,
}

impl Collector {
    fn start(url: &str, db: &Path, log: &Path, args: &[&str]) -> Collector {
        let child = Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(["fleet", "collect", "--broker", url, "--db"])
            .arg(db)
            .args(["--client-id", "test-collector"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(20), "the collector subscribes", || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.contains("subscribed to") || text.contains("session kept by the broker: true")
        });
        Collector { child }
    }

    fn stop(mut self) {
        sigterm(&self.child);
        self.child.wait().unwrap();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.onnx");
    if !path.exists() {
        write_model_with(&path, ["Benign", "Pro"], 60.0, true);
    }
    path
}

fn benign(seed: u64) -> Vec<u8> {
    smear_jpeg(320, 240, seed, 20)
}

fn blast(seed: u64) -> Vec<u8> {
    smear_jpeg(320, 240, seed, -20)
}

/// Picture `i` of a stream: every third a blast.
fn picture(i: u64) -> Vec<u8> {
    if i.is_multiple_of(3) {
        blast(i)
    } else {
        benign(i)
    }
}

/// A kit config: its site and name, and what else the test adds.
fn kit_config(dir: &Path, device: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{device}.toml"));
    std::fs::write(
        &path,
        format!("[fleet]\nsite = \"clinic\"\ndevice = \"{device}\"\n{extra}"),
    )
    .unwrap();
    path
}

/// `edge run` of a kit reading MJPEG on stdin.
fn edge_run(dir: &Path, config: &Path, db: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge"));
    c.arg("run")
        .arg("--config")
        .arg(config)
        .arg("--model")
        .arg(model(dir))
        .arg("--db")
        .arg(db)
        .args(["--source", "-", "--policy", "all"])
        .args(args)
        .env("RUST_LOG", "info");
    c
}

/// A running kit: stdin piped, stdout lines on a channel.
struct Kit {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: PathBuf,
}

impl Kit {
    fn spawn(mut command: Command, log: &Path) -> Kit {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(log).unwrap())
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
        Kit {
            stdin: child.stdin.take(),
            child,
            lines,
            log: log.to_path_buf(),
        }
    }

    fn send(&mut self, jpeg: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(jpeg).unwrap();
        stdin.flush().unwrap();
    }

    /// Lines up to the first `RESULT frame=<seq>` (within `limit`).
    fn result(&self, seq: u64, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(&format!("RESULT frame={seq} "));
                    got.push(line);
                    if done {
                        return got;
                    }
                }
                Err(_) => panic!(
                    "no RESULT frame={seq} within {limit:?}; got {got:?}\nstderr: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }

    /// Closes stdin (the source ends, the session closes) and waits for the exit status.
    fn finish(mut self) -> (i32, Vec<String>) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), self.lines.try_iter().collect())
    }
}

/// A frame as compared across the two databases.
#[derive(Debug, Clone, PartialEq)]
struct Result1 {
    seq: u64,
    decision: StoredDecision,
    label: Option<String>,
    probabilities: Vec<u32>,
}

/// Every frame of a database by (session's id on the kit, frame's id on the kit).
fn frames_by_kit_id(store: &Store) -> BTreeMap<i64, Result1> {
    let mut out = BTreeMap::new();
    for s in store.sessions().unwrap() {
        for f in store.frames(s.id).unwrap() {
            let id = f.device_frame.unwrap_or(f.id);
            let r = Result1 {
                seq: f.frame.seq,
                decision: f.frame.decision,
                label: f.frame.label.clone(),
                probabilities: f.frame.probabilities.iter().map(|p| p.to_bits()).collect(),
            };
            assert!(out.insert(id, r).is_none(), "frame {id} twice");
        }
    }
    out
}

fn open(db: &Path) -> Option<Store> {
    Store::open_read_only(db).ok()
}

fn central_frames(db: &Path) -> usize {
    open(db).map_or(0, |s| frames_by_kit_id(&s).len())
}

fn unsent(db: &Path) -> u64 {
    open(db).map_or(u64::MAX, |s| s.outbox_backlog().unwrap().unsent)
}

/// The collector's database holds exactly the kit's sessions (same state, verdict, counts) and
/// frames (same decisions, labels, probabilities), each once.
fn assert_same(kit_db: &Path, central_db: &Path, device: &str) {
    let kit = Store::open_read_only(kit_db).unwrap();
    let central = Store::open_read_only(central_db).unwrap();
    let kit_sessions = kit.sessions().unwrap();
    let central_sessions = central.sessions().unwrap();
    assert_eq!(kit_sessions.len(), central_sessions.len(), "sessions");
    for (k, c) in kit_sessions.iter().zip(&central_sessions) {
        assert_eq!(c.device.as_deref(), Some(device));
        assert_eq!(c.site.as_deref(), Some("clinic"));
        assert_eq!(c.device_session, Some(k.id));
        assert_eq!(c.state, k.state, "session {}", k.id);
        assert_eq!(c.stop_reason, k.stop_reason);
        assert_eq!(c.verdict, k.verdict);
        assert_eq!(c.labels, k.labels);
        assert_eq!(c.frames, k.frames, "frames of session {}", k.id);
        let counts = |s: &edge::store::SessionRow| {
            s.counts
                .as_ref()
                .map(|c| (c.counts.clone(), c.good, c.retakes, c.uncertain, c.fields))
        };
        assert_eq!(counts(c), counts(k), "counts of session {}", k.id);
    }
    assert_eq!(frames_by_kit_id(&central), frames_by_kit_id(&kit));
}

fn a_session_reaches_the_collector_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Broker::start(d, "");
    let central = d.join("central.db");
    let pictures = d.join("pictures");
    let collector = Collector::start(
        &broker.url(),
        &central,
        &d.join("collect.log"),
        &["--pictures", pictures.to_str().unwrap()],
    );
    // Flagged frames' pictures are kept on the kit and sent with their results.
    let config = kit_config(d, "kit-a", "send_pictures = true\n");
    let kit_db = d.join("kit.db");
    let log = d.join("kit.log");
    let flagged = d.join("flagged");
    let mut kit = Kit::spawn(
        edge_run(
            d,
            &config,
            &kit_db,
            &[
                "--fleet-broker",
                &broker.url(),
                "--flagged-dir",
                flagged.to_str().unwrap(),
            ],
        ),
        &log,
    );
    const N: u64 = 6;
    for i in 1..=N {
        kit.send(&picture(i));
    }
    kit.result(N, Duration::from_secs(30));
    let (code, _) = kit.finish();
    assert_eq!(code, 0, "{}", std::fs::read_to_string(&log).unwrap());
    wait_until(
        Duration::from_secs(20),
        "the session and its frames arrive",
        || {
            open(&central).is_some_and(|s| {
                s.sessions()
                    .unwrap()
                    .first()
                    .is_some_and(|s| s.state == SessionState::Closed && s.frames == N)
            })
        },
    );
    assert_same(&kit_db, &central, "kit-a");
    assert_eq!(unsent(&kit_db), 0);
    // The blast frames' pictures came along, byte for byte.
    let kit_store = Store::open_read_only(&kit_db).unwrap();
    let central_store = Store::open_read_only(&central).unwrap();
    let kit_frames = kit_store.frames(1).unwrap();
    let central_frames = central_store.frames(1).unwrap();
    let kept = kit_frames
        .iter()
        .filter(|f| f.frame.kept_image.is_some())
        .count();
    assert_eq!(kept, 2, "pictures 3 and 6 are blasts");
    for (k, c) in kit_frames.iter().zip(&central_frames) {
        match (&k.frame.kept_image, &c.frame.kept_image) {
            (Some(kp), Some(cp)) => {
                assert_eq!(cp, &Path::new("kit-a").join(kp));
                assert_eq!(
                    std::fs::read(pictures.join(cp)).unwrap(),
                    std::fs::read(flagged.join(kp)).unwrap()
                );
            }
            (None, None) => {}
            other => panic!("kept pictures differ: {other:?}"),
        }
    }
    drop((kit_store, central_store));
    // The status message said the kit went offline with nothing left to send.
    wait_until(Duration::from_secs(10), "the kit's status", || {
        open(&central).is_some_and(|s| {
            s.fleet_devices()
                .unwrap()
                .first()
                .is_some_and(|k| k.state == "offline" && k.backlog == Some(0))
        })
    });
    collector.stop();
    // The review commands read the collector's database and show the kit.
    let edge = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(args)
            .arg("--db")
            .arg(&central)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let sessions = edge(&["sessions"]);
    assert!(
        sessions.lines().next().unwrap().contains("DEVICE"),
        "{sessions}"
    );
    assert!(sessions.contains("kit-a"), "{sessions}");
    let csv = edge(&["export", "--session", "1", "--format", "csv"]);
    assert!(csv.lines().nth(1).unwrap().contains(",kit-a,"), "{csv}");
    let report = d.join("report");
    edge(&[
        "report",
        "--session",
        "1",
        "--out",
        report.to_str().unwrap(),
        "--flagged-dir",
        pictures.to_str().unwrap(),
    ]);
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("kit-a (site clinic, session 1 on the kit)"),
        "{md}"
    );
    let status = edge(&["fleet", "status"]);
    assert!(
        status.contains("clinic") && status.contains("kit-a") && status.contains("offline"),
        "{status}"
    );
}

fn a_broker_outage_mid_session_loses_nothing_and_never_stalls_the_kit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = Broker::start(d, "");
    let central = d.join("central.db");
    let collector = Collector::start(&broker.url(), &central, &d.join("collect.log"), &[]);
    let config = kit_config(d, "kit-b", "");
    let kit_db = d.join("kit.db");
    let log = d.join("kit.log");
    let mut kit = Kit::spawn(
        edge_run(d, &config, &kit_db, &["--fleet-broker", &broker.url()]),
        &log,
    );
    for i in 1..=3 {
        kit.send(&picture(i));
    }
    kit.result(3, Duration::from_secs(30));
    wait_until(Duration::from_secs(20), "3 frames collected", || {
        central_frames(&central) == 3
    });
    broker.stop();
    // The broker is gone: every frame is still classified, committed and shown at once.
    for i in 4..=7 {
        kit.send(&picture(i));
        kit.result(i, Duration::from_secs(10));
    }
    let during = Store::open_read_only(&kit_db).unwrap();
    assert_eq!(frames_by_kit_id(&during).len(), 7);
    assert!(during.outbox_backlog().unwrap().unsent >= 4);
    drop(during);
    assert_eq!(central_frames(&central), 3);
    broker.restart();
    for i in 8..=9 {
        kit.send(&picture(i));
    }
    kit.result(9, Duration::from_secs(10));
    wait_until(Duration::from_secs(40), "the kit's backlog is sent", || {
        unsent(&kit_db) == 0
    });
    let (code, _) = kit.finish();
    assert_eq!(code, 0);
    wait_until(Duration::from_secs(20), "everything collected", || {
        open(&central).is_some_and(|s| {
            s.sessions()
                .unwrap()
                .first()
                .is_some_and(|s| s.state == SessionState::Closed && s.frames == 9)
        })
    });
    assert_same(&kit_db, &central, "kit-b");
    collector.stop();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("result(s) wait in the outbox"), "{log}");
}

fn a_kit_killed_mid_publish_sends_its_backlog_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Broker::start(d, "");
    let central = d.join("central.db");
    let collector = Collector::start(&broker.url(), &central, &d.join("collect.log"), &[]);
    let config = kit_config(d, "kit-c", "");
    let kit_db = d.join("kit.db");
    let url = broker.url();
    let run = || edge_run(d, &config, &kit_db, &["--fleet-broker", &url]);
    let mut kit = Kit::spawn(run(), &d.join("kit-1.log"));
    let mut stdin = kit.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 1.. {
            if stdin.write_all(&picture(i)).is_err() {
                break;
            }
        }
    });
    kit.result(8, Duration::from_secs(30));
    kit.child.kill().unwrap(); // SIGKILL, while results are being published
    kit.child.wait().unwrap();
    feeder.join().unwrap();
    // Restarted: the killed session is marked interrupted, a new one screens two frames.
    let mut kit = Kit::spawn(run(), &d.join("kit-2.log"));
    kit.send(&picture(100));
    kit.send(&picture(101));
    kit.result(2, Duration::from_secs(30));
    let (code, _) = kit.finish();
    assert_eq!(code, 0);
    let kit_store = Store::open_read_only(&kit_db).unwrap();
    let total = frames_by_kit_id(&kit_store).len();
    let sessions = kit_store.sessions().unwrap();
    assert_eq!(sessions[0].state, SessionState::Interrupted);
    assert_eq!(sessions[1].state, SessionState::Closed);
    drop(kit_store);
    wait_until(Duration::from_secs(30), "every result collected", || {
        open(&central).is_some_and(|s| {
            let sessions = s.sessions().unwrap();
            sessions.len() == 2
                && sessions[0].state == SessionState::Interrupted
                && sessions[1].state == SessionState::Closed
                && frames_by_kit_id(&s).len() == total
        })
    });
    assert_same(&kit_db, &central, "kit-c");
    collector.stop();
}

fn a_collector_killed_mid_stream_misses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Broker::start(d, "");
    let central = d.join("central.db");
    let collect_log = d.join("collect-1.log");
    let collector = Collector::start(&broker.url(), &central, &collect_log, &[]);
    let config = kit_config(d, "kit-d", "");
    let kit_db = d.join("kit.db");
    let log = d.join("kit.log");
    let mut kit = Kit::spawn(
        edge_run(d, &config, &kit_db, &["--fleet-broker", &broker.url()]),
        &log,
    );
    const N: u64 = 40;
    let mut stdin = kit.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 1..=N {
            stdin.write_all(&picture(i)).unwrap();
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    wait_until(
        Duration::from_secs(30),
        "the first frames collected",
        || central_frames(&central) >= 3,
    );
    let mut collector = collector;
    collector.child.kill().unwrap(); // SIGKILL, mid-stream
    collector.child.wait().unwrap();
    let at_kill = central_frames(&central);
    assert!(
        at_kill < N as usize,
        "the stream ended before the collector was killed"
    );
    feeder.join().unwrap();
    kit.result(N, Duration::from_secs(30));
    let (code, _) = kit.finish();
    assert_eq!(code, 0);
    // Everything reached the broker while the collector was down; it holds it for the
    // collector's kept session.
    assert_eq!(unsent(&kit_db), 0);
    let collector = Collector::start(&broker.url(), &central, &d.join("collect-2.log"), &[]);
    wait_until(Duration::from_secs(30), "the rest collected", || {
        open(&central).is_some_and(|s| {
            s.sessions()
                .unwrap()
                .first()
                .is_some_and(|s| s.state == SessionState::Closed && s.frames == N)
        })
    });
    assert_same(&kit_db, &central, "kit-d");
    collector.stop();
}

/// A CA, a server certificate for localhost signed by it, with openssl.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=leukoscope test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&ca);
    let mut req = vec!["req", "-subj", "/CN=localhost"];
    req.extend(ec);
    req.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&req);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
}

fn tls_with_a_password_works_and_a_wrong_password_is_reported_while_screening_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let passwords = d.join("passwd");
    for (i, (user, pass)) in [("kit", "s3cret"), ("review", "r3view")].iter().enumerate() {
        let mut c = Command::new("mosquitto_passwd");
        c.arg("-b");
        if i == 0 {
            c.arg("-c");
        }
        let out = c.arg(&passwords).args([user, pass]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let broker = Broker::start(
        d,
        &format!(
            "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
            passwords.display(),
            d.join("ca.crt").display(),
            d.join("server.crt").display(),
            d.join("server.key").display()
        ),
    );
    let url = format!("mqtts://localhost:{}", broker.port);
    std::fs::write(d.join("review.pass"), "r3view\n").unwrap();
    let central = d.join("central.db");
    let ca = d.join("ca.crt");
    let collector = Collector::start(
        &url,
        &central,
        &d.join("collect.log"),
        &[
            "--ca-file",
            ca.to_str().unwrap(),
            "--username",
            "review",
            "--password-file",
            d.join("review.pass").to_str().unwrap(),
        ],
    );
    let tls = |password: &str| {
        format!(
            "broker = \"{url}\"\nca_file = \"ca.crt\"\nusername = \"kit\"\npassword = \"{password}\"\n"
        )
    };
    let config = kit_config(d, "kit-e", &tls("s3cret"));
    let kit_db = d.join("kit.db");
    let mut kit = Kit::spawn(edge_run(d, &config, &kit_db, &[]), &d.join("kit.log"));
    for i in 1..=3 {
        kit.send(&picture(i));
    }
    kit.result(3, Duration::from_secs(30));
    assert_eq!(kit.finish().0, 0);
    wait_until(Duration::from_secs(20), "the session over TLS", || {
        open(&central).is_some_and(|s| {
            s.sessions()
                .unwrap()
                .first()
                .is_some_and(|s| s.state == SessionState::Closed && s.frames == 3)
        })
    });
    assert_same(&kit_db, &central, "kit-e");
    collector.stop();

    // A wrong password: said in the log, by `edge sync` and `edge check`; screening goes on.
    let wrong = kit_config(d, "kit-w", &tls("wrong"));
    let wrong_db = d.join("wrong.db");
    let log = d.join("wrong.log");
    let mut kit = Kit::spawn(edge_run(d, &wrong, &wrong_db, &[]), &log);
    for i in 1..=3 {
        kit.send(&picture(i));
    }
    kit.result(3, Duration::from_secs(30));
    wait_until(Duration::from_secs(20), "the refusal in the log", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("bad user name or password")
    });
    let (code, lines) = kit.finish();
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        frames_by_kit_id(&Store::open_read_only(&wrong_db).unwrap()).len(),
        3
    );
    let mut wrong_text = std::fs::read_to_string(&wrong).unwrap();
    wrong_text.push_str(&format!("[store]\ndb = \"{}\"\n", wrong_db.display()));
    std::fs::write(&wrong, wrong_text).unwrap();
    let sync = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["sync", "--config"])
        .arg(&wrong)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&sync.stdout);
    assert_eq!(sync.status.code(), Some(1), "{text}");
    assert!(text.contains("bad user name or password"), "{text}");
    assert!(text.contains("unsent of"), "{text}");
    assert!(!text.contains("outbox: 0 unsent"), "{text}");
    let check = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["check", "--timeout", "1", "--source", "-", "--config"])
        .arg(&wrong)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("fleet broker"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("WARN") && line.contains("bad user name or password"),
        "{line}"
    );
}

/// `edge fleet bench` (a small run): a backlog sent at once through a publisher and a collector
/// in one process (the collector takes it in batches), then paced results; every figure is
/// there.
fn the_bench_moves_a_backlog_through_publisher_and_collector() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "");
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["fleet", "bench", "--broker", &broker.url()])
        .args([
            "--results",
            "600",
            "--latency-results",
            "20",
            "--rate",
            "100",
        ])
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "publisher_per_s",
        "collector_per_s",
        "latency_ms_p50",
        "latency_ms_p99",
    ] {
        let v = r[key].as_f64().unwrap_or_else(|| panic!("{key}: {r}"));
        assert!(v.is_finite() && v >= 0.0, "{key}: {r}");
    }
    assert_eq!(r["latency_results"], 20, "{r}");
}

fn a_full_outbox_stops_recording_like_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Nobody listens there: nothing is ever acknowledged.
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let config = kit_config(d, "kit-f", "outbox_max_rows = 5\n");
    let kit_db = d.join("kit.db");
    let log = d.join("kit.log");
    let mut kit = Kit::spawn(
        edge_run(d, &config, &kit_db, &["--fleet-broker", &url]),
        &log,
    );
    for i in 1..=4 {
        kit.send(&picture(i));
    }
    kit.result(4, Duration::from_secs(30));
    for i in 5..=7 {
        kit.send(&picture(i));
    }
    let (code, lines) = kit.finish();
    assert_eq!(code, 1, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ERROR code=outbox_full")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("SLIDE ") && l.contains("verdict=incomplete")),
        "{lines:?}"
    );
    let store = Store::open_read_only(&kit_db).unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].stop_reason, Some(StopReason::Fault));
    // Every reported result is kept, and queued: the session's open and close, four frames.
    assert_eq!(store.frames(sessions[0].id).unwrap().len(), 4);
    let backlog = store.outbox_backlog().unwrap();
    assert_eq!((backlog.unsent, backlog.rows), (6, 6));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("outbox full"), "{log}");
}

/// The cap: sent rows go first (oldest first); unsent ones are never dropped, a frame is
/// refused instead; a session's close is queued even over the cap.
fn outbox_prunes_sent_rows_first_and_never_drops_unsent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kit.db");
    let mut store = Store::open_with_outbox(&db, 10).unwrap();
    let session = store
        .begin_session(&edge::store::NewSession {
            slide_id: Some("s".into()),
            started: chrono::Utc::now(),
            model_sha256: "0".repeat(64),
            model_variant: "t".into(),
            labels: vec!["Benign".into(), "Pro".into()],
            normal_labels: vec!["Benign".into()],
            software_version: "t".into(),
            rule: serde_json::json!({}),
        })
        .unwrap();
    let frame = |seq: u64| edge::store::FrameRecord {
        session,
        seq,
        time: chrono::Utc::now(),
        origin: "t".into(),
        sha256: format!("{seq:064x}"),
        width: 8,
        height: 8,
        quality: None,
        decision: StoredDecision::Label,
        retake_reason: None,
        label: Some("Benign".into()),
        confidence: Some(0.9),
        probabilities: vec![0.9, 0.1],
        model_sha256: "0".repeat(64),
        software_version: "t".into(),
        kept_image: None,
        tile: None,
        field: None,
        unfamiliarity: None,
        uncertain_reason: None,
    };
    for seq in 1..=9 {
        store.record_frame(&frame(seq)).unwrap();
    }
    // Ten rows, none sent: the next frame is refused and nothing is dropped.
    let e = store.record_frame(&frame(10)).unwrap_err();
    assert!(e.is_outbox_full(), "{e}");
    assert_eq!(store.frames(session).unwrap().len(), 9);
    let mut publisher = Store::open_publisher(&db).unwrap();
    let first: Vec<i64> = publisher
        .outbox_pending(0, 4)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    publisher.mark_sent(&first).unwrap();
    // Four sent rows make room: they go, oldest first, and the frame is recorded.
    store.record_frame(&frame(10)).unwrap();
    let pending = publisher.outbox_pending(0, 100).unwrap();
    assert_eq!(pending.first().map(|e| e.id), Some(5));
    let b = store.outbox_backlog().unwrap();
    assert!(b.rows <= 10 && b.unsent == 7, "{b:?}");
    // The close of a session goes in over the cap.
    for seq in 11..=13 {
        let _ = store.record_frame(&frame(seq));
    }
    let summary = edge::store::SessionSummary {
        counts: vec![("Benign".into(), 0), ("Pro".into(), 0)],
        good: 0,
        retakes: 0,
        uncertain: 0,
        fields: 0,
        blast_fields: 0,
        uncertain_fields: 0,
        unfamiliar_fields: 0,
        blast_fraction: 0.0,
        verdict: None,
        dominant_subtype: None,
        fault: None,
    };
    store
        .close_session(session, &summary, StopReason::Command)
        .unwrap();
    let b = store.outbox_backlog().unwrap();
    assert_eq!(b.unsent, b.rows, "{b:?}");
    assert!(b.rows >= 11, "{b:?}");
}
