//! `edge fleet bench`: what the publisher and the collector sustain on this machine, and the
//! latency from a kit's commit to the collector's commit, through a running broker.
//!
//! In a scratch folder: a kit database with the outbox on and one session, a collector (in
//! this process, its own client id) writing a central database.
//! 1. **Throughput**: `results` frame rows are committed with the publisher stopped (a backlog,
//!    as after an outage); then the publisher starts. Publisher results/s = rows until the
//!    broker acknowledged the last; collector results/s = rows until the collector committed
//!    the last (both from the publisher's start).
//! 2. **Latency**: with both running, `latency_results` frames are committed one by one at
//!    `rate` per second; each one's latency is the collector's commit time minus the kit's
//!    commit time (the outbox row's `created`), both in milliseconds on this machine's clock.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::collector::{CollectOptions, collect};
use super::publisher::{Publisher, PublisherSettings};
use super::{BrokerSettings, FleetError};
use crate::store::{FrameRecord, NewSession, Quality, Store, StoredDecision};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Rows of the throughput backlog.
    pub results: usize,
    /// Rows of the latency run.
    pub latency_results: usize,
    /// Commits per second during the latency run.
    pub rate: f64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Rows of the backlog.
    pub results: usize,
    /// Results per second the publisher sent (acknowledged by the broker).
    pub publisher_per_s: f64,
    /// Results per second the collector committed.
    pub collector_per_s: f64,
    /// Rows of the latency run and their commit rate.
    pub latency_results: usize,
    /// Commits per second during the latency run.
    pub rate: f64,
    /// Commit → collector commit, median, ms.
    pub latency_ms_p50: f64,
    /// Commit → collector commit, 99th percentile, ms.
    pub latency_ms_p99: f64,
    /// Largest, ms.
    pub latency_ms_max: f64,
}

const LABELS: [&str; 4] = ["Benign", "Early", "Pre", "Pro"];

fn frame(session: i64, seq: u64) -> FrameRecord {
    FrameRecord {
        session,
        seq,
        time: Utc::now(),
        origin: "bench".into(),
        sha256: format!("{seq:064x}"),
        width: 640,
        height: 480,
        quality: Some(Quality {
            focus: 250.0,
            mean: 0.6,
            p999: 0.95,
            clipped_fraction: 0.0,
            stained_fraction: 0.08,
        }),
        decision: StoredDecision::Label,
        retake_reason: None,
        label: Some("Benign".into()),
        confidence: Some(0.97),
        probabilities: vec![0.97, 0.01, 0.01, 0.01],
        model_sha256: "0".repeat(64),
        software_version: crate::run::SOFTWARE_VERSION.into(),
        kept_image: None,
        tile: None,
        field: Some(u32::try_from(seq).unwrap_or(u32::MAX)),
        unfamiliarity: None,
        uncertain_reason: None,
    }
}

/// Runs the measurement against `broker` in `scratch` (created; left for inspection).
pub fn run(
    broker: &BrokerSettings,
    scratch: &Path,
    options: &BenchOptions,
) -> Result<BenchResult, FleetError> {
    std::fs::create_dir_all(scratch).map_err(|source| FleetError::Io {
        path: scratch.to_path_buf(),
        source,
    })?;
    let tag = format!("{}-{}", std::process::id(), Utc::now().timestamp_millis());
    let kit_db = scratch.join(format!("kit-{tag}.db"));
    let central_db = scratch.join(format!("central-{tag}.db"));
    let site = format!("bench-{tag}");
    let device = "bench-kit".to_string();
    let total = options.results + options.latency_results;
    let mut kit = Store::open_with_outbox(&kit_db, (total as u64 + 16) * 2)?;
    let session = kit.begin_session(&NewSession {
        slide_id: Some("bench".into()),
        started: Utc::now(),
        model_sha256: "0".repeat(64),
        model_variant: "bench".into(),
        labels: LABELS.map(String::from).to_vec(),
        normal_labels: vec!["Benign".into()],
        software_version: crate::run::SOFTWARE_VERSION.into(),
        rule: serde_json::json!({}),
    })?;

    // The collector, subscribed before anything is published.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut collect_options =
        CollectOptions::new(broker.clone(), central_db.clone(), Some(site.clone()));
    collect_options.client_id = format!("leukoscope-bench-collector-{tag}");
    collect_options.ready = Some(ready_tx);
    let collector = {
        let stop = stop.clone();
        std::thread::spawn(move || collect(&collect_options, &stop))
    };
    if ready_rx.recv_timeout(Duration::from_secs(15)).is_err() {
        stop.store(true, Ordering::SeqCst);
        let _ = collector.join();
        return Err(FleetError::Broker {
            url: broker.url.to_string(),
            reason: "the bench's collector did not subscribe within 15 s".into(),
        });
    }

    // 1. Throughput: a backlog, then the publisher.
    for seq in 1..=options.results as u64 {
        kit.record_frame(&frame(session, seq))?;
    }
    let settings = PublisherSettings {
        broker: broker.clone(),
        site: site.clone(),
        device: device.clone(),
        db: kit_db.clone(),
        pictures: None,
        status_interval: Duration::from_secs(60),
    };
    let started = Instant::now();
    let publisher = Publisher::start(settings)?;
    kit.set_outbox_notify(publisher.notifier());
    let central = wait_for_central(&central_db)?;
    let expected = options.results + 1; // the session's message too
    let (mut published, mut collected) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while (published.is_none() || collected.is_none()) && Instant::now() < deadline {
        if collector.is_finished() {
            return Err(collector_ended(collector, broker));
        }
        if published.is_none() && kit.outbox_backlog()?.unsent == 0 {
            published = Some(started.elapsed());
        }
        if collected.is_none() && received(&central)? >= expected {
            collected = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let timed_out = || FleetError::Broker {
        url: broker.url.to_string(),
        reason: "the bench's results did not all arrive within 600 s".into(),
    };
    let per_s = |d: Option<Duration>| {
        d.map(|d| options.results as f64 / d.as_secs_f64())
            .ok_or_else(timed_out)
    };
    let publisher_per_s = per_s(published)?;
    let collector_per_s = per_s(collected)?;

    // 2. Latency: paced commits with both ends running.
    let gap = Duration::from_secs_f64(1.0 / options.rate.max(0.1));
    let first = options.results as u64 + 1;
    let t0 = Instant::now();
    for (i, seq) in (first..first + options.latency_results as u64).enumerate() {
        let due = t0 + gap * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        kit.record_frame(&frame(session, seq))?;
    }
    let expected = expected + options.latency_results;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received(&central)? < expected {
        if collector.is_finished() {
            return Err(collector_ended(collector, broker));
        }
        if Instant::now() > deadline {
            return Err(timed_out());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    publisher.stop(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let _ = collector.join();

    let committed = outbox_times(&kit_db)?;
    let mut latencies: Vec<f64> = Vec::new();
    for (id, received) in central.received_times()? {
        let Some(row) = id
            .strip_prefix(&format!("{device}/frame/"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        // Rows of the latency run only (the frame ids after the backlog's).
        if row <= options.results as i64 {
            continue;
        }
        if let (Some(c), Ok(r)) = (committed.get(&row), DateTime::parse_from_rfc3339(&received)) {
            latencies.push((r.with_timezone(&Utc) - *c).num_milliseconds() as f64);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    Ok(BenchResult {
        results: options.results,
        publisher_per_s,
        collector_per_s,
        latency_results: latencies.len(),
        rate: options.rate,
        latency_ms_p50: pick(0.5),
        latency_ms_p99: pick(0.99),
        latency_ms_max: pick(1.0),
    })
}

/// Why the bench's collector ended before the end.
fn collector_ended(
    collector: std::thread::JoinHandle<Result<super::CollectSummary, FleetError>>,
    broker: &BrokerSettings,
) -> FleetError {
    match collector.join() {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => FleetError::Broker {
            url: broker.url.to_string(),
            reason: "the bench's collector stopped early".into(),
        },
        Err(_) => FleetError::Broker {
            url: broker.url.to_string(),
            reason: "the bench's collector panicked".into(),
        },
    }
}

/// The collector's database, once it exists (read-only).
fn wait_for_central(path: &Path) -> Result<Store, FleetError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_read_only(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Message ids the collector has committed.
fn received(central: &Store) -> Result<usize, FleetError> {
    Ok(central.received_count()? as usize)
}

/// Frame row id → when its outbox row was committed, on the kit.
fn outbox_times(
    kit_db: &Path,
) -> Result<std::collections::HashMap<i64, DateTime<Utc>>, FleetError> {
    let store = Store::open_read_only(kit_db)?;
    Ok(store
        .outbox_created()?
        .into_iter()
        .filter(|(kind, _, _)| kind == "frame")
        .map(|(_, row, created)| (row, created))
        .collect())
}
