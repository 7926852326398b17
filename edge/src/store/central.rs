//! A collector's database (`edge fleet collect`): every kit's sessions and frames in the same
//! tables as on a kit, with the `device`, `site`, `device_session` and `device_frame` columns
//! set; the message ids applied (`fleet_messages`), so a message delivered twice is applied
//! once; and what each kit last said about itself (`fleet_devices`).

use chrono::Utc;
use rusqlite::{OptionalExtension, params};

use super::rows::{counts_json, json_strings};
use super::{FrameRow, SessionRow, Store, StoreError, format_time};

/// One message a collector received, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Its message id (`<device>/<kind>/<row id>[/<change>]`), stable across retries.
    pub message_id: String,
    /// The kit that sent it.
    pub device: String,
    /// The kit's site.
    pub site: String,
    /// What it carries.
    pub kind: ReceivedKind,
}

/// What a received message carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceivedKind {
    /// A session as the kit stores it (`id` is the kit's session id).
    Session(Box<SessionRow>),
    /// A frame result as the kit stores it (`id` the kit's frame id, `session` the kit's session
    /// id; `kept_image` as the collector keeps it, or none).
    Frame(Box<FrameRow>),
    /// A kit's status: `online` or `offline`, its unsent outbox rows and its clock.
    Status {
        /// `online` or `offline`.
        state: String,
        /// Unsent outbox rows (none in a last will).
        backlog: Option<u64>,
        /// The kit's time when it sent the status.
        time: Option<String>,
    },
}

/// A kit as the collector knows it (`edge fleet status`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FleetDevice {
    /// The kit.
    pub device: String,
    /// Its site.
    pub site: String,
    /// `online` or `offline`, from its last status message.
    pub state: String,
    /// Unsent outbox rows it last reported.
    pub backlog: Option<u64>,
    /// The time in its last status message.
    pub status_time: Option<String>,
    /// When the collector last heard from it (any message).
    pub last_seen: String,
    /// Its sessions in this database.
    pub sessions: u64,
    /// Its frame results in this database.
    pub frames: u64,
}

impl Store {
    /// Applies received messages in one committed transaction; a message whose id was applied
    /// before is dropped. Returns how many were new. A status message is not deduplicated (the
    /// latest wins).
    pub fn apply_received(&mut self, batch: &[Received]) -> Result<usize, StoreError> {
        self.in_transaction("apply fleet messages", |store| {
            let now = format_time(&Utc::now());
            let mut new = 0;
            for m in batch {
                store.device_seen(m, &now)?;
                if let ReceivedKind::Status {
                    state,
                    backlog,
                    time,
                } = &m.kind
                {
                    store
                        .conn
                        .execute(
                            "UPDATE fleet_devices SET state = ?2, backlog = ?3, status_time = ?4
                             WHERE device = ?1",
                            params![
                                m.device,
                                state,
                                backlog.and_then(|b| i64::try_from(b).ok()),
                                time
                            ],
                        )
                        .map_err(|e| store.err("record a kit's status", e))?;
                    continue;
                }
                let fresh = store
                    .conn
                    .prepare_cached(
                        "INSERT INTO fleet_messages (message_id, received) VALUES (?1, ?2)
                         ON CONFLICT DO NOTHING",
                    )
                    .and_then(|mut st| st.execute(params![m.message_id, now]))
                    .map_err(|e| store.err("record a message id", e))?;
                if fresh == 0 {
                    continue;
                }
                new += 1;
                match &m.kind {
                    ReceivedKind::Session(s) => store.upsert_session(m, s)?,
                    ReceivedKind::Frame(f) => store.insert_device_frame(m, f)?,
                    ReceivedKind::Status { .. } => {}
                }
            }
            Ok(new)
        })
    }

    /// Notes that a kit was heard from (creates its `fleet_devices` row).
    fn device_seen(&self, m: &Received, now: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO fleet_devices (device, site, state, last_seen)
                 VALUES (?1, ?2, 'online', ?3)
                 ON CONFLICT (device) DO UPDATE SET site = excluded.site,
                    last_seen = excluded.last_seen",
            )
            .and_then(|mut st| st.execute(params![m.device, m.site, now]))
            .map_err(|e| self.err("record a kit", e))?;
        Ok(())
    }

    /// Inserts or updates a kit's session; a closed or interrupted session never goes back to
    /// open (messages may arrive out of order after a redelivery).
    fn upsert_session(&self, m: &Received, s: &SessionRow) -> Result<(), StoreError> {
        let c = s.counts.as_ref();
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (slide_id, started, stopped, state, stop_reason,
                    model_sha256, model_variant, labels, normal_labels, software_version, rule,
                    counts, good, retakes, uncertain, blast_fraction, verdict, dominant_subtype,
                    fields, blast_fields, uncertain_fields, fault, device, site, device_session,
                    unfamiliar_fields)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)
                 ON CONFLICT (device, device_session) WHERE device IS NOT NULL DO UPDATE SET
                    slide_id = excluded.slide_id, started = excluded.started,
                    stopped = excluded.stopped, state = excluded.state,
                    stop_reason = excluded.stop_reason, model_sha256 = excluded.model_sha256,
                    model_variant = excluded.model_variant, labels = excluded.labels,
                    normal_labels = excluded.normal_labels,
                    software_version = excluded.software_version, rule = excluded.rule,
                    counts = excluded.counts, good = excluded.good, retakes = excluded.retakes,
                    uncertain = excluded.uncertain, blast_fraction = excluded.blast_fraction,
                    verdict = excluded.verdict, dominant_subtype = excluded.dominant_subtype,
                    fields = excluded.fields, blast_fields = excluded.blast_fields,
                    uncertain_fields = excluded.uncertain_fields, fault = excluded.fault,
                    site = excluded.site, unfamiliar_fields = excluded.unfamiliar_fields
                 WHERE sessions.state = 'open' OR excluded.state != 'open'",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.slide_id,
                    format_time(&s.started),
                    s.stopped.as_ref().map(format_time),
                    s.state.as_str(),
                    s.stop_reason.map(|r| r.as_str()),
                    s.model_sha256,
                    s.model_variant,
                    json_strings(&s.labels),
                    json_strings(&s.normal_labels),
                    s.software_version,
                    s.rule.to_string(),
                    c.map(|c| counts_json(&c.counts)),
                    c.map(|c| c.good),
                    c.map(|c| c.retakes),
                    c.map(|c| c.uncertain),
                    c.map(|c| c.blast_fraction).filter(|f| f.is_finite()),
                    s.verdict,
                    s.dominant_subtype,
                    c.and_then(|c| c.fields),
                    c.and_then(|c| c.blast_fields),
                    c.and_then(|c| c.uncertain_fields),
                    s.fault,
                    m.device,
                    m.site,
                    s.id,
                    c.and_then(|c| c.unfamiliar_fields),
                ])
            })
            .map_err(|e| self.err("store a kit's session", e))?;
        Ok(())
    }

    /// Inserts a kit's frame result under its session (a placeholder session, open and without
    /// labels, when the frame arrives before its session: the session's message fills it in).
    fn insert_device_frame(&self, m: &Received, row: &FrameRow) -> Result<(), StoreError> {
        let f = &row.frame;
        let e = |e| self.err("store a kit's frame", e);
        let session: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM sessions WHERE device = ?1 AND device_session = ?2")
            .and_then(|mut st| {
                st.query_row(params![m.device, f.session], |r| r.get(0))
                    .optional()
            })
            .map_err(e)?;
        let session = match session {
            Some(id) => id,
            None => {
                self.conn
                    .execute(
                        "INSERT INTO sessions (started, state, model_sha256, model_variant,
                            labels, normal_labels, software_version, rule, device, site,
                            device_session)
                         VALUES (?1, 'open', ?2, '', '[]', '[]', ?3, '{}', ?4, ?5, ?6)",
                        params![
                            format_time(&f.time),
                            f.model_sha256,
                            f.software_version,
                            m.device,
                            m.site,
                            f.session
                        ],
                    )
                    .map_err(e)?;
                self.conn.last_insert_rowid()
            }
        };
        let q = f.quality;
        let probabilities = serde_json::to_string(&f.probabilities)
            .map_err(|err| self.invalid("probabilities", err.to_string()))?;
        self.conn
            .prepare_cached(
                "INSERT INTO frames (session_id, seq, tile, time, origin, sha256, width, height,
                    focus, mean, p999, clipped_fraction, stained_fraction, decision,
                    retake_reason, label, confidence, probabilities, model_sha256,
                    software_version, kept_image, image_evicted, field, device, device_frame,
                    unfamiliarity, uncertain_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    session,
                    i64::try_from(f.seq).unwrap_or(i64::MAX),
                    f.tile,
                    format_time(&f.time),
                    f.origin,
                    f.sha256,
                    f.width,
                    f.height,
                    q.map(|q| q.focus),
                    q.map(|q| q.mean),
                    q.map(|q| q.p999),
                    q.map(|q| q.clipped_fraction),
                    q.map(|q| q.stained_fraction),
                    f.decision.as_str(),
                    f.retake_reason,
                    f.label,
                    f.confidence,
                    probabilities,
                    f.model_sha256,
                    f.software_version,
                    f.kept_image
                        .as_ref()
                        .map(|p| p.to_string_lossy().replace('\\', "/")),
                    row.image_evicted.as_ref().map(format_time),
                    f.field,
                    m.device,
                    row.id,
                    f.unfamiliarity,
                    f.uncertain_reason.map(|r| r.as_str()),
                ])
            })
            .map_err(e)?;
        Ok(())
    }

    /// Every kit heard from, with its last status and what this database holds of it.
    pub fn fleet_devices(&self) -> Result<Vec<FleetDevice>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT d.device, d.site, d.state, d.backlog, d.status_time, d.last_seen,
                    (SELECT count(*) FROM sessions s WHERE s.device = d.device),
                    (SELECT count(*) FROM frames f WHERE f.device = d.device)
                 FROM fleet_devices d ORDER BY d.site, d.device",
            )
            .map_err(|e| self.err("list the kits", e))?;
        st.query_map([], |r| {
            Ok(FleetDevice {
                device: r.get(0)?,
                site: r.get(1)?,
                state: r.get(2)?,
                backlog: r.get::<_, Option<i64>>(3)?.map(|b| b.max(0) as u64),
                status_time: r.get(4)?,
                last_seen: r.get(5)?,
                sessions: r.get::<_, i64>(6)?.max(0) as u64,
                frames: r.get::<_, i64>(7)?.max(0) as u64,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err("list the kits", e))
    }

    /// When the collector committed each message id (the bench's latency).
    pub fn received_times(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT message_id, received FROM fleet_messages")
            .map_err(|e| self.err("read message ids", e))?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("read message ids", e))
    }

    /// How many message ids the collector has committed.
    pub fn received_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM fleet_messages", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err("count message ids", e))
    }
}
