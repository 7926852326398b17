//! Starting the device: the model loaded and self-tested, the database opened, the disk
//! checked, the flagged-pictures folder swept; a refusal is shown as a fault on every output.

use std::time::{Duration, Instant};

use hardware::DeviceStatus;
use tracing::{error, info, warn};

use super::model::{LoadedModel, load_model};
use super::{Device, FramePipeline, Framing, Outputs, RunError, RunSummary, selftest};
use crate::config::RunConfig;
use crate::flagged::{CapPolicy, FlaggedImages};
use crate::fleet::{BrokerSettings, Publisher, PublisherSettings};
use crate::store::Store;

impl Device {
    /// Starts the device: integrity, model choice, self-test, database. Each self-test result
    /// is logged and sent as a `SELFTEST` event; a failure also shows as a fault on the panel.
    pub fn start(config: RunConfig, mut outputs: Outputs) -> Result<Device, RunError> {
        outputs.refresh();
        let started = Instant::now();
        let result = Self::start_inner(&config, &mut outputs);
        match result {
            Ok((model, mut store, flagged, framing)) => {
                let publisher = start_publisher(&config, &mut store);
                let mut pipeline = FramePipeline::new(
                    &model.classifier,
                    config.quality.clone(),
                    config.decision.clone(),
                    framing,
                );
                if let Some(u) = config.source.um_per_px {
                    pipeline.watch_scale(u);
                }
                outputs.status = DeviceStatus::idle();
                outputs.refresh();
                Ok(Device {
                    config,
                    model,
                    pipeline,
                    store,
                    flagged,
                    outputs,
                    session: None,
                    fault: None,
                    started,
                    summary: RunSummary {
                        frames: 0,
                        recorded: 0,
                        undecodable: 0,
                        sessions: 0,
                        fault: None,
                        dropped: 0,
                        already_recorded: 0,
                    },
                    last_disk_check: None,
                    field_mode: crate::fields::FieldMode::Motion,
                    stopped_by_hand: false,
                    catch_up_unlogged: 0,
                    publisher,
                })
            }
            Err(e) => {
                outputs.show_fault(e.fault(), e.to_string());
                Err(e)
            }
        }
    }

    /// The start-up checks in order: model, database, disk; then the flagged-pictures folder.
    fn start_inner(
        config: &RunConfig,
        outputs: &mut Outputs,
    ) -> Result<(LoadedModel, Store, Option<FlaggedImages>, Framing), RunError> {
        let model = load_model(config)
            .map_err(|e| match e {
                RunError::ModelRefused(m) => m,
                other => other.to_string(),
            })
            .and_then(|model| {
                selftest::model_check(&model.classifier, &config.model).map(|d| (model, d))
            });
        selftest::report(
            outputs,
            "model",
            &model.as_ref().map(|(_, d)| d.clone()).map_err(Clone::clone),
        );
        let (model, _) = model.map_err(RunError::ModelRefused)?;
        let framing =
            Framing::from_config(&config.source, &model.classifier).map_err(RunError::Config)?;
        if let Framing::Scaled(cutter) = &framing {
            let f = cutter.framing();
            let (w, h) = (config.source.options.width, config.source.options.height);
            info!(
                "pixel size: camera {} µm/px, model {} µm/px: frames resampled ×{:.3} and cut \
                 into {}x{} px fields ({} per {w}x{h} frame)",
                f.camera_um_per_px,
                f.model_um_per_px,
                f.factor(),
                f.field_width,
                f.field_height,
                f.field_count(w, h)
            );
            let camera = config.source.spec.starts_with("v4l2:")
                || config.source.spec.starts_with("/dev/video");
            if camera {
                // The camera's mode is known before its first frame; other sources are checked
                // on their first frame.
                f.check_field_count(w, h).map_err(RunError::Config)?;
            }
        }
        // With fleet forwarding on, every change is also queued in the outbox (same transaction).
        let store = if config.fleet.enabled() {
            Store::open_with_outbox(&config.store.db, config.fleet.outbox_max_rows)
        } else {
            Store::open(&config.store.db)
        };
        let detail = match &store {
            Ok(_) => Ok(format!("{} writable", config.store.db.display())),
            Err(e) => Err(e.to_string()),
        };
        selftest::report(outputs, "database", &detail);
        let store = store?;
        let disk = selftest::disk_check(&config.store.db, config.store.min_free_mib);
        selftest::report(outputs, "disk", &disk);
        disk.map_err(RunError::SelfTest)?;
        if !store.recovered_sessions().is_empty() {
            warn!(
                sessions = ?store.recovered_sessions(),
                "sessions left open by an earlier run are marked interrupted; their frames are kept"
            );
        }
        let flagged = match &config.store.flagged_dir {
            Some(dir) => Some(open_flagged(dir, config, &store)?),
            None => None,
        };
        Ok((model, store, flagged, framing))
    }
}

/// Starts the fleet publisher when `[fleet] broker` is set, and lets the writer wake it. A
/// publisher that cannot start (a missing password file, an unreadable CA file) is logged as an
/// error and classifying goes on: the outbox keeps every result for when it is fixed.
fn start_publisher(config: &RunConfig, store: &mut Store) -> Option<Publisher> {
    let fleet = &config.fleet;
    let broker = match BrokerSettings::from_config(fleet) {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            error!("fleet forwarding off for this run: {e}; results wait in the outbox");
            return None;
        }
    };
    let settings = PublisherSettings {
        broker,
        site: fleet.site.clone(),
        device: fleet.device_name(),
        db: config.store.db.clone(),
        pictures: config
            .store
            .flagged_dir
            .clone()
            .filter(|_| fleet.send_pictures),
        status_interval: Duration::from_secs(fleet.status_interval_s.max(1)),
    };
    info!(
        "fleet forwarding to {} as {}/{} (outbox cap {} rows)",
        settings.broker.url, settings.site, settings.device, fleet.outbox_max_rows
    );
    match Publisher::start(settings) {
        Ok(p) => {
            store.set_outbox_notify(p.notifier());
            Some(p)
        }
        Err(e) => {
            error!("fleet forwarding off for this run: {e}; results wait in the outbox");
            None
        }
    }
}

/// Opens the flagged-pictures folder and removes the pictures no stored frame refers to. A
/// folder that belongs to another database refuses the start: keeping pictures there would
/// overwrite that database's, and sweeping would delete them.
fn open_flagged(
    dir: &std::path::Path,
    config: &RunConfig,
    store: &Store,
) -> Result<FlaggedImages, RunError> {
    let mut flagged = FlaggedImages::open(
        dir,
        store,
        config.store.flagged_cap_mib << 20,
        CapPolicy::EvictOldest,
    )
    .map_err(|e| RunError::SelfTest(e.to_string()))?;
    match flagged.sweep_orphans(store) {
        Ok(0) => {}
        Ok(n) => info!(
            "removed {n} kept pictures no frame refers to (a crash between the file and its row)"
        ),
        Err(e) => warn!("flagged pictures: {e}"),
    }
    Ok(flagged)
}
