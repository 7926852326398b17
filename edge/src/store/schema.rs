//! The database schema and its migrations.
//!
//! The schema version is SQLite's `user_version`. [`MIGRATIONS`]`[i]` takes a database from
//! version `i` to `i + 1`; each runs in its own transaction together with the version bump, so a
//! crash during a migration leaves the previous version intact. A later release appends a
//! migration here and never edits an earlier one.
//!
//! [`INDEXES`] are the exception: indexes that change no table and no query's result, only its
//! speed. The writer creates them `IF NOT EXISTS` at every open, without a version of their own,
//! so a database keeps the schema version older programs read (and a reader never depends on
//! them).

/// `application_id` of leukoscope databases ("LKSC"), so a foreign SQLite file is recognised.
pub const APPLICATION_ID: i32 = 0x4C4B_5343;

/// The schema version this program writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 0 → 1: sessions and frames.
const V1: &str = r#"
CREATE TABLE sessions (
    id               INTEGER PRIMARY KEY,
    slide_id         TEXT,
    started          TEXT NOT NULL,              -- RFC 3339 UTC, milliseconds
    stopped          TEXT,
    state            TEXT NOT NULL DEFAULT 'open'
                     CHECK (state IN ('open', 'closed', 'interrupted')),
    stop_reason      TEXT CHECK (stop_reason IN
                     ('command', 'button', 'idle', 'shutdown', 'source_end', 'fault')),
    model_sha256     TEXT NOT NULL,
    model_variant    TEXT NOT NULL,
    labels           TEXT NOT NULL,              -- JSON array, the model's label order
    normal_labels    TEXT NOT NULL,              -- JSON array, labels that are not blasts
    software_version TEXT NOT NULL,
    rule             TEXT NOT NULL,              -- JSON, the decision rule parameters used
    -- Set on close (or, for an interrupted session, recomputed from its frames on recovery):
    counts           TEXT,                       -- JSON object label -> confident frames
    good             INTEGER,
    retakes          INTEGER,
    uncertain        INTEGER,
    blast_fraction   REAL,
    verdict          TEXT,                       -- closed sessions only
    dominant_subtype TEXT
) STRICT;

CREATE TABLE frames (
    id               INTEGER PRIMARY KEY,
    session_id       INTEGER NOT NULL REFERENCES sessions(id),
    seq              INTEGER NOT NULL,
    tile             INTEGER,
    time             TEXT NOT NULL,              -- RFC 3339 UTC, milliseconds
    origin           TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    width            INTEGER NOT NULL,
    height           INTEGER NOT NULL,
    focus            REAL,
    mean             REAL,
    p999             REAL,
    clipped_fraction REAL,
    stained_fraction REAL,
    decision         TEXT NOT NULL CHECK (decision IN ('label', 'uncertain', 'retake')),
    retake_reason    TEXT,
    label            TEXT,
    confidence       REAL,
    probabilities    TEXT NOT NULL,              -- JSON array in the session's label order
    model_sha256     TEXT NOT NULL,
    software_version TEXT NOT NULL,
    kept_image       TEXT,                       -- relative to the flagged-images folder
    image_evicted    TEXT                        -- when the kept image was removed by the size cap
) STRICT;

CREATE INDEX frames_by_session ON frames (session_id, seq);
CREATE INDEX frames_with_image ON frames (id) WHERE kept_image IS NOT NULL;
CREATE INDEX sessions_by_state ON sessions (state);
"#;

/// Version 1 → 2: fields. Each frame records its microscope field; a session records the fields
/// its verdict counted, and why a session closed by a fault has no verdict. From version 2 on,
/// `sessions.blast_fraction` is blast fields / confident fields (the fraction the verdict used).
const V2: &str = r#"
ALTER TABLE frames ADD COLUMN field INTEGER;            -- the frame's field in its session (1, 2, …);
                                                        -- NULL between fields or before version 2
ALTER TABLE sessions ADD COLUMN fields INTEGER;         -- good fields (with a frame that passed the gate)
ALTER TABLE sessions ADD COLUMN blast_fields INTEGER;   -- confident blast fields
ALTER TABLE sessions ADD COLUMN uncertain_fields INTEGER; -- good fields whose decision is uncertain
ALTER TABLE sessions ADD COLUMN fault TEXT;             -- stop_reason 'fault': what stopped the scan
"#;

/// Version 2 → 3: fleet forwarding ([`crate::fleet`]). A kit's outbox: one row per committed
/// session change and frame result, written in the same transaction, sent to the MQTT broker by
/// the publisher and marked `sent` on the broker's acknowledgement. A collector's database (`edge
/// fleet collect`) has the same tables; its sessions and frames also carry the kit they came
/// from (`device`, `site`) and their id on that kit, the message ids it has applied (duplicates
/// are dropped by them) and what each kit last said about itself. On a kit's own database the
/// new columns stay `NULL` and the collector's tables empty.
const V3: &str = r#"
ALTER TABLE sessions ADD COLUMN device TEXT;            -- collector: the kit; NULL on a kit
ALTER TABLE sessions ADD COLUMN site TEXT;              -- collector: the kit's site
ALTER TABLE sessions ADD COLUMN device_session INTEGER; -- collector: the session's id on its kit
ALTER TABLE frames ADD COLUMN device TEXT;              -- collector: the kit; NULL on a kit
ALTER TABLE frames ADD COLUMN device_frame INTEGER;     -- collector: the frame's id on its kit
CREATE UNIQUE INDEX sessions_by_device ON sessions (device, device_session)
    WHERE device IS NOT NULL;
CREATE UNIQUE INDEX frames_by_device ON frames (device, device_frame) WHERE device IS NOT NULL;

CREATE TABLE outbox (
    id      INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL CHECK (kind IN ('session', 'frame')),
    row_id  INTEGER NOT NULL,                   -- sessions.id or frames.id
    change  TEXT NOT NULL CHECK (change IN ('open', 'closed', 'interrupted', 'result')),
    created TEXT NOT NULL,                      -- RFC 3339 UTC, milliseconds (the commit)
    sent    TEXT                                -- when the broker acknowledged it
) STRICT;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent IS NULL;

CREATE TABLE fleet_messages (
    message_id TEXT PRIMARY KEY,                -- `<device>/<kind>/<row id>[/<change>]`
    received   TEXT NOT NULL                    -- when the collector committed it
) STRICT, WITHOUT ROWID;

CREATE TABLE fleet_devices (
    device      TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    state       TEXT NOT NULL,                  -- 'online' or 'offline', from its status message
    backlog     INTEGER,                        -- unsent outbox rows it reported
    status_time TEXT,                           -- the time in its last status message
    last_seen   TEXT NOT NULL                   -- when the collector last heard from it
) STRICT;
"#;

/// Version 3 → 4: unfamiliarity. Each classified frame records the model's unfamiliarity score
/// (NULL for a model without one) and why its decision is uncertain; a session records its
/// unfamiliar fields (three added columns).
const V4: &str = r#"
ALTER TABLE frames ADD COLUMN unfamiliarity REAL;       -- the model's unfamiliarity score;
                                                        -- NULL for a model without one
ALTER TABLE frames ADD COLUMN uncertain_reason TEXT     -- decision 'uncertain': why
    CHECK (uncertain_reason IN ('low_confidence', 'unfamiliar'));
ALTER TABLE sessions ADD COLUMN unfamiliar_fields INTEGER; -- good fields the model found unfamiliar
"#;

/// Indexes created `IF NOT EXISTS` by the writer at every open (see the module documentation):
/// `frames_by_origin` answers `Store::has_frame` (a watched folder's catch-up at start).
pub const INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS frames_by_origin ON frames (origin, sha256);
"#;

/// The migrations, in order.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];
