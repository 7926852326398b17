//! The fleet's messages: topics, message ids, and the JSON payloads of sessions, frames and
//! status (see the module documentation of [`crate::fleet`] for the contract).

use base64::Engine as _;
use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::store::{
    FrameRow, OutboxEntry, OutboxKind, Received, ReceivedKind, SessionRow, format_time,
};

/// The first level of every topic.
pub const TOPIC_ROOT: &str = "leukoscope";

/// `leukoscope/<site>/<device>/<kind>` (`kind`: `session`, `frame` or `status`).
pub fn topic(site: &str, device: &str, kind: &str) -> String {
    format!("{TOPIC_ROOT}/{site}/{device}/{kind}")
}

/// What a collector subscribes to: one site's kits, or every site's.
pub fn subscription(site: Option<&str>) -> String {
    format!("{TOPIC_ROOT}/{}/+/+", site.unwrap_or("+"))
}

/// The message id of a queued change: `<device>/frame/<frame id>` or
/// `<device>/session/<session id>/<change>`. The same on every retry.
pub fn message_id(device: &str, entry: &OutboxEntry) -> String {
    match entry.kind {
        OutboxKind::Frame => format!("{device}/frame/{}", entry.row_id),
        OutboxKind::Session => format!("{device}/session/{}/{}", entry.row_id, entry.change),
    }
}

/// The fields every session and frame message adds to the export's.
fn envelope(value: Value, device: &str, site: &str, entry: &OutboxEntry) -> Map<String, Value> {
    let mut map = match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert("message_id".into(), message_id(device, entry).into());
    map.insert("device".into(), device.into());
    map.insert("site".into(), site.into());
    map.insert("change".into(), entry.change.clone().into());
    map.insert("committed".into(), format_time(&entry.created).into());
    map
}

/// A session message: the session as `edge export --format json` writes it, plus the envelope.
pub fn session_payload(device: &str, site: &str, entry: &OutboxEntry, row: &SessionRow) -> Vec<u8> {
    let value = serde_json::to_value(row).unwrap_or(Value::Null);
    Value::Object(envelope(value, device, site, entry))
        .to_string()
        .into_bytes()
}

/// A frame message: the frame as `edge export --format json` writes it, plus the envelope, and
/// with `picture` its kept JPEG (file name, bytes), base64 in `picture`.
pub fn frame_payload(
    device: &str,
    site: &str,
    entry: &OutboxEntry,
    row: &FrameRow,
    picture: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let value = serde_json::to_value(row).unwrap_or(Value::Null);
    let mut map = envelope(value, device, site, entry);
    if let Some((name, bytes)) = picture {
        map.insert("picture_name".into(), name.into());
        map.insert(
            "picture".into(),
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        );
    }
    Value::Object(map).to_string().into_bytes()
}

/// A status message: `online` (with the unsent backlog) or `offline` (`backlog` null in the
/// last will, which is written before anything is known).
pub fn status_payload(device: &str, site: &str, state: &str, backlog: Option<u64>) -> Vec<u8> {
    json!({
        "device": device,
        "site": site,
        "state": state,
        "backlog": backlog,
        "time": format_time(&Utc::now()),
        "software_version": crate::run::SOFTWARE_VERSION,
    })
    .to_string()
    .into_bytes()
}

/// A decoded message, with the picture a frame message carried.
#[derive(Debug)]
pub struct Decoded {
    /// What the store applies.
    pub received: Received,
    /// The picture's file name and bytes.
    pub picture: Option<(String, Vec<u8>)>,
}

/// Decodes a message by its topic; a malformed one is an error in words.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Decoded, String> {
    let parts: Vec<&str> = topic.split('/').collect();
    let [root, site, device, kind] = parts[..] else {
        return Err(format!(
            "topic {topic:?} is not leukoscope/<site>/<device>/<kind>"
        ));
    };
    if root != TOPIC_ROOT {
        return Err(format!("topic {topic:?} is not under {TOPIC_ROOT}/"));
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("{topic}: not JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err(format!("{topic}: not a JSON object"));
    };
    let text = |map: &Map<String, Value>, key: &str| {
        map.get(key).and_then(Value::as_str).map(str::to_string)
    };
    if let Some(d) = text(&map, "device")
        && d != device
    {
        return Err(format!("{topic}: device {d:?} in a message of {device:?}"));
    }
    let mut picture = None;
    let kind = match kind {
        "status" => ReceivedKind::Status {
            state: text(&map, "state").unwrap_or_else(|| "unknown".into()),
            backlog: map.get("backlog").and_then(Value::as_u64),
            time: text(&map, "time"),
        },
        "session" => {
            let row: SessionRow = serde_json::from_value(Value::Object(map.clone()))
                .map_err(|e| format!("{topic}: not a session: {e}"))?;
            ReceivedKind::Session(Box::new(row))
        }
        "frame" => {
            if let (Some(name), Some(Value::String(data))) =
                (text(&map, "picture_name"), map.remove("picture"))
            {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| format!("{topic}: picture: {e}"))?;
                picture = Some((name, bytes));
            }
            let row: FrameRow = serde_json::from_value(Value::Object(map.clone()))
                .map_err(|e| format!("{topic}: not a frame: {e}"))?;
            ReceivedKind::Frame(Box::new(row))
        }
        other => return Err(format!("{topic}: unknown kind {other:?}")),
    };
    let message_id = match &kind {
        ReceivedKind::Status { .. } => format!("{device}/status"),
        _ => text(&map, "message_id").ok_or_else(|| format!("{topic}: no message_id"))?,
    };
    Ok(Decoded {
        received: Received {
            message_id,
            device: device.to_string(),
            site: site.to_string(),
            kind,
        },
        picture,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FrameRecord, Quality, StoredDecision};
    use leukoscope_screening::UncertainReason;

    fn entry(kind: OutboxKind, row_id: i64, change: &str) -> OutboxEntry {
        OutboxEntry {
            id: 9,
            kind,
            row_id,
            change: change.into(),
            created: Utc::now(),
        }
    }

    #[test]
    fn a_frame_message_round_trips_with_nan_and_its_picture() {
        let row = FrameRow {
            id: 42,
            frame: FrameRecord {
                session: 3,
                seq: 7,
                time: Utc::now(),
                origin: "stdin".into(),
                sha256: "ab".repeat(32),
                width: 640,
                height: 480,
                quality: Some(Quality {
                    focus: f32::NAN,
                    mean: 0.5,
                    p999: 0.9,
                    clipped_fraction: 0.0,
                    stained_fraction: 0.1,
                }),
                decision: StoredDecision::Uncertain,
                retake_reason: None,
                label: Some("Pro".into()),
                confidence: Some(0.6),
                probabilities: vec![0.4, f32::NAN],
                model_sha256: "0".repeat(64),
                software_version: "t".into(),
                kept_image: Some("s3/7.jpg".into()),
                tile: None,
                field: Some(2),
                unfamiliarity: Some(41.5),
                uncertain_reason: Some(UncertainReason::Unfamiliar),
            },
            image_evicted: None,
            device: None,
            device_frame: None,
        };
        let e = entry(OutboxKind::Frame, 42, "result");
        assert_eq!(message_id("kit-1", &e), "kit-1/frame/42");
        let payload = frame_payload("kit-1", "north", &e, &row, Some(("s3/7.jpg", b"JPEG")));
        let d = decode(&topic("north", "kit-1", "frame"), &payload).unwrap();
        assert_eq!(d.received.message_id, "kit-1/frame/42");
        assert_eq!(
            (d.received.site.as_str(), d.received.device.as_str()),
            ("north", "kit-1")
        );
        assert_eq!(d.picture, Some(("s3/7.jpg".into(), b"JPEG".to_vec())));
        let ReceivedKind::Frame(back) = d.received.kind else {
            panic!("not a frame")
        };
        assert_eq!(back.id, 42);
        assert_eq!(back.frame.seq, 7);
        assert_eq!(back.frame.probabilities[0], 0.4);
        assert!(back.frame.probabilities[1].is_nan());
        assert!(back.frame.quality.unwrap().focus.is_nan());
        assert_eq!(back.frame.unfamiliarity, Some(41.5));
        assert_eq!(
            back.frame.uncertain_reason,
            Some(UncertainReason::Unfamiliar)
        );
    }

    #[test]
    fn session_ids_carry_the_change_and_bad_messages_are_refused() {
        let e = entry(OutboxKind::Session, 5, "closed");
        assert_eq!(message_id("kit-1", &e), "kit-1/session/5/closed");
        assert_eq!(subscription(None), "leukoscope/+/+/+");
        assert_eq!(subscription(Some("north")), "leukoscope/north/+/+");
        assert!(decode("leukoscope/north/kit-1/frame", b"not json").is_err());
        assert!(decode("other/north/kit-1/frame", b"{}").is_err());
        assert!(decode("leukoscope/north/kit-1/frame", b"{\"device\":\"kit-2\"}").is_err());
        let status = status_payload("kit-1", "north", "online", Some(3));
        let d = decode("leukoscope/north/kit-1/status", &status).unwrap();
        assert!(matches!(
            d.received.kind,
            ReceivedKind::Status { ref state, backlog: Some(3), .. } if state == "online"
        ));
    }
}
