//! Faults: what each one is, how it shows on every output, and which ones stop classifying (a
//! full disk, a full fleet outbox, a database or an inference error: frames are then dropped, never half-recorded;
//! everything stored is kept, and the open session closes at once with reason `fault` and no
//! verdict: `SLIDE verdict=incomplete`).

use std::time::{Duration, Instant};

use hardware::Fault;
use tracing::{error, info};

use super::{Device, RunError, selftest};
use crate::store::{StopReason, StoreError};

impl RunError {
    /// The fault a start-up refusal shows.
    pub(super) fn fault(&self) -> Fault {
        match self {
            RunError::ModelRefused(_) => Fault::ModelRefused,
            RunError::Store(StoreError::DiskFull { .. }) => Fault::DiskFull,
            RunError::Store(StoreError::OutboxFull { .. }) => Fault::OutboxFull,
            RunError::Source(_) => Fault::CameraLost,
            _ => Fault::Internal,
        }
    }
}

impl Device {
    /// Logs `fault`, keeps it, and shows and sends it.
    pub(super) fn set_fault(&mut self, fault: Fault, message: String) {
        error!("{}: {message}", fault.describe());
        self.fault = Some((fault, message.clone()));
        self.outputs.show_fault(fault, message);
    }

    /// A fault that stops classifying: it is shown on every output, then the open session (if
    /// any) closes with reason `fault` and no verdict (`SLIDE verdict=incomplete`).
    pub(super) fn stop_for_fault(&mut self, fault: Fault, message: String) {
        self.set_fault(fault, message.clone());
        self.close_session_for(StopReason::Fault, Some(message));
    }

    /// The database refused a write: classifying stops, and the open session closes with no
    /// verdict.
    pub(super) fn store_failed(&mut self, e: StoreError) {
        let fault = match e {
            StoreError::DiskFull { .. } => Fault::DiskFull,
            StoreError::OutboxFull { .. } => Fault::OutboxFull,
            _ => Fault::Internal,
        };
        self.stop_for_fault(
            fault,
            format!("{e}; classifying stopped, everything stored so far is kept"),
        );
    }

    /// The free-space floor, checked at most every 5 s; below it is a disk-full fault.
    pub(super) fn check_disk(&mut self) {
        if self
            .last_disk_check
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.last_disk_check = Some(Instant::now());
        if let Err(message) =
            selftest::disk_check(&self.config.store.db, self.config.store.min_free_mib)
        {
            self.stop_for_fault(Fault::DiskFull, message);
        }
    }

    /// The camera came back: a camera-lost fault is cleared.
    pub(super) fn camera_restored(&mut self) {
        if matches!(self.fault, Some((Fault::CameraLost, _))) {
            info!("camera back");
            self.fault = None;
            self.outputs.status.phase = self.phase();
        }
    }

    /// Disk-full, outbox-full and database faults stop classifying until restart.
    pub(super) fn classifying_stopped(&self) -> bool {
        matches!(
            self.fault,
            Some((Fault::DiskFull | Fault::OutboxFull | Fault::Internal, _))
        )
    }
}
