//! Writing an [`Event`] as one line, without the line end: [`LineFormat::Text`] (`EVENT
//! key=value …`, with the quoting rules of the module docs) or [`LineFormat::Json`] (one JSON
//! object). Both write the same fields in the same order; numbers and booleans are written
//! the same way in both, only strings and absent values differ.

use std::fmt::Write as _;

use serde::Deserialize;

use super::events::{Event, Value};

/// Which way events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// `EVENT key=value …`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LineFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LineFormat::Text),
            "json" => Ok(LineFormat::Json),
            _ => Err(format!("unknown serial format {s:?} (text or json)")),
        }
    }
}

impl Event {
    /// The event as one line in `format`, without the line end.
    pub fn to_line(&self, format: LineFormat) -> String {
        let fields = self.fields();
        let mut line = String::new();
        match format {
            LineFormat::Text => {
                line.push_str(self.name());
                for (key, value) in &fields {
                    line.push(' ');
                    line.push_str(key);
                    line.push('=');
                    write_value(&mut line, value, format);
                }
            }
            LineFormat::Json => {
                line.push_str("{\"event\":");
                line.push_str(&json_string(self.name()));
                for (key, value) in &fields {
                    line.push(',');
                    line.push_str(&json_string(key));
                    line.push(':');
                    write_value(&mut line, value, format);
                }
                line.push('}');
            }
        }
        line
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn is_bare(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '=')
}

/// Writes one value: numbers and booleans alike in both formats; a string as a JSON string
/// or bare / quoted text; absent (and a non-finite number) as `null` or `-`.
fn write_value(out: &mut String, value: &Value, format: LineFormat) {
    match value {
        Value::Str(s) if format == LineFormat::Json => out.push_str(&json_string(s)),
        Value::Str(s) => write_text_string(out, s),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Fixed(x, decimals) if x.is_finite() => {
            let _ = write!(out, "{x:.decimals$}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Fixed(..) | Value::Absent => out.push_str(match format {
            LineFormat::Text => "-",
            LineFormat::Json => "null",
        }),
    }
}

/// A text value: bare if it is only [`is_bare`] characters (and not empty or `-`), else
/// double-quoted with escapes, so the line stays printable ASCII.
fn write_text_string(out: &mut String, s: &str) {
    if s != "-" && !s.is_empty() && s.chars().all(is_bare) {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::protocol::{CommandError, Decision, SlideSummary, Timestamp};
    use crate::status::{Fault, Phase, RetakeReason, Verdict};

    /// Key and value (None for absent) of each field.
    type Fields = Vec<(String, Option<String>)>;

    /// Splits a text event line back into its word and fields (the reading side of the
    /// quoting rules), or None if the line is malformed.
    fn parse_text_line(line: &str) -> Option<(String, Fields)> {
        let mut chars = line.chars().peekable();
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut fields = Vec::new();
        while chars.next() == Some(' ') {
            let mut key = String::new();
            loop {
                match chars.next()? {
                    '=' => break,
                    c => key.push(c),
                }
            }
            let value = if chars.peek() == Some(&'"') {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            'n' => v.push('\n'),
                            'r' => v.push('\r'),
                            't' => v.push('\t'),
                            'u' => {
                                if chars.next()? != '{' {
                                    return None;
                                }
                                let mut hex = String::new();
                                loop {
                                    match chars.next()? {
                                        '}' => break,
                                        c => hex.push(c),
                                    }
                                }
                                v.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                            }
                            c => v.push(c),
                        },
                        c => v.push(c),
                    }
                }
                Some(v)
            } else {
                let mut v = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                (v != "-").then_some(v)
            };
            fields.push((key, value));
        }
        Some((name, fields))
    }

    const T: Timestamp = Timestamp(1_735_787_045_678);

    fn result() -> Event {
        Event::Result {
            frame: 37,
            slide: Some("S-0012".into()),
            label: "lymphocyte".into(),
            confidence: 0.9744,
            decision: Decision::Normal,
            time: T,
            unfamiliar: false,
            tile: None,
        }
    }

    fn summary() -> Event {
        Event::Slide(SlideSummary {
            slide: "S-0012".into(),
            verdict: Verdict::Refer,
            frames: 120,
            good: 110,
            retakes: 10,
            fields: 30,
            unfamiliar: 0,
            reason: None,
            counts: vec![("Blast".into(), 12), ("band neutrophil".into(), 98)],
            blast_fraction: 4.0 / 30.0,
        })
    }

    fn incomplete() -> Event {
        Event::Slide(SlideSummary {
            slide: "S-0013".into(),
            verdict: Verdict::Incomplete,
            frames: 7,
            good: 7,
            retakes: 0,
            fields: 2,
            unfamiliar: 0,
            reason: Some("disk full".into()),
            counts: vec![("Blast".into(), 1), ("band neutrophil".into(), 6)],
            blast_fraction: 1.0 / 7.0,
        })
    }

    #[test]
    fn text_lines_of_every_event() {
        let cases = [
            (
                result(),
                "RESULT frame=37 slide=S-0012 label=lymphocyte confidence=0.974 decision=normal time=2025-01-02T03:04:05.678Z",
            ),
            (
                Event::Retake {
                    frame: 38,
                    reason: RetakeReason::Focus,
                    time: T,
                    tile: None,
                },
                "RETAKE frame=38 reason=focus time=2025-01-02T03:04:05.678Z",
            ),
            (
                summary(),
                "SLIDE slide=S-0012 verdict=refer frames=120 good=110 retakes=10 fields=30 count_blast=12 count_band_neutrophil=98 blast_fraction=0.1333 note=\"screening aid\"",
            ),
            (
                incomplete(),
                "SLIDE slide=S-0013 verdict=incomplete frames=7 good=7 retakes=0 fields=2 count_blast=1 count_band_neutrophil=6 blast_fraction=0.1429 reason=\"disk full\" note=\"screening aid\"",
            ),
            (
                Event::Status {
                    state: Phase::Idle,
                    slide: None,
                    frames: 0,
                    model: "leuko-v3".into(),
                    uptime_s: 3600,
                },
                "STATUS state=idle slide=- frames=0 model=leuko-v3 uptime=3600",
            ),
            (
                Event::Error {
                    code: Fault::CameraLost,
                    message: "no frame for 5 s".into(),
                },
                "ERROR code=camera_lost message=\"no frame for 5 s\"",
            ),
            (
                Event::Notice {
                    code: "scale_mismatch".into(),
                    message: "red cells give 0.31 um/px".into(),
                },
                "NOTICE code=scale_mismatch message=\"red cells give 0.31 um/px\"",
            ),
            (
                Event::SelfTest {
                    check: "disk".into(),
                    ok: false,
                    detail: "12 MB \"free\"".into(),
                },
                "SELFTEST check=disk ok=false detail=\"12 MB \\\"free\\\"\"",
            ),
            (
                Event::Ok {
                    command: "STOP",
                    detail: None,
                },
                "OK command=STOP detail=-",
            ),
            (
                Event::Err(CommandError::Unknown("FOO".into())),
                "ERR code=unknown_command message=\"unknown command \\\"FOO\\\", try HELP\"",
            ),
            (Event::Pong, "PONG"),
            (
                Event::Help,
                "HELP commands=\"HELP PING STATUS START [slide-id] STOP LAST [n] MODEL VERSION\"",
            ),
            (
                Event::Version {
                    name: "leukoscope".into(),
                    version: "0.1.0".into(),
                },
                "VERSION name=leukoscope version=0.1.0",
            ),
            (
                Event::Model {
                    name: "leuko v3".into(),
                    digest: "ab12".into(),
                    classes: vec!["blast".into(), "lymphocyte".into()],
                },
                "MODEL name=\"leuko v3\" digest=ab12 classes=blast,lymphocyte",
            ),
        ];
        for (event, line) in cases {
            assert_eq!(event.to_line(LineFormat::Text), line);
        }
    }

    #[test]
    fn json_lines_carry_the_same_fields() {
        let line = result().to_line(LineFormat::Json);
        assert_eq!(
            line,
            r#"{"event":"RESULT","frame":37,"slide":"S-0012","label":"lymphocyte","confidence":0.974,"decision":"normal","time":"2025-01-02T03:04:05.678Z"}"#
        );
        for event in [
            result(),
            summary(),
            incomplete(),
            Event::Err(CommandError::Refused {
                command: "START",
                reason: "classifying stopped by a fault".into(),
            }),
            Event::Pong,
            Event::Ok {
                command: "START",
                detail: Some("S-1".into()),
            },
            Event::Status {
                state: Phase::Fault(Fault::DiskFull),
                slide: None,
                frames: 1,
                model: "m\u{e9}\n".into(),
                uptime_s: 1,
            },
        ] {
            let json: serde_json::Value =
                serde_json::from_str(&event.to_line(LineFormat::Json)).unwrap();
            let object = json.as_object().unwrap();
            assert_eq!(object["event"], event.name());
            let (name, fields) = parse_text_line(&event.to_line(LineFormat::Text)).unwrap();
            assert_eq!(name, event.name());
            assert_eq!(object.len(), fields.len() + 1);
            for (key, value) in fields {
                match (&object[&key], value) {
                    (serde_json::Value::Null, None) => {}
                    (serde_json::Value::String(s), Some(v)) => assert_eq!(s, &v),
                    (other, Some(v)) => assert_eq!(other.to_string(), v),
                    (other, None) => panic!("{key}: {other} vs absent"),
                }
            }
        }
    }

    #[test]
    fn non_finite_numbers_are_absent() {
        let mut e = result();
        if let Event::Result { confidence, .. } = &mut e {
            *confidence = f32::NAN;
        }
        assert!(e.to_line(LineFormat::Text).contains(" confidence=- "));
        assert!(e.to_line(LineFormat::Json).contains(r#""confidence":null"#));
    }

    #[test]
    fn the_tile_field_is_sent_only_for_tiled_frames() {
        let mut e = result();
        assert!(!e.to_line(LineFormat::Text).contains("tile"));
        if let Event::Result { tile, .. } = &mut e {
            *tile = Some(2);
        }
        assert!(e.to_line(LineFormat::Text).ends_with(" tile=2"));
        assert!(e.to_line(LineFormat::Json).ends_with(r#","tile":2}"#));
    }

    #[test]
    fn unfamiliar_frames_and_slides_carry_their_words() {
        let mut e = result();
        if let Event::Result {
            decision,
            unfamiliar,
            tile,
            ..
        } = &mut e
        {
            *decision = Decision::Uncertain;
            *unfamiliar = true;
            *tile = Some(1);
        }
        assert_eq!(
            e.to_line(LineFormat::Text),
            "RESULT frame=37 slide=S-0012 label=lymphocyte confidence=0.974 decision=uncertain time=2025-01-02T03:04:05.678Z reason=unfamiliar tile=1"
        );
        assert!(
            e.to_line(LineFormat::Json)
                .ends_with(r#""decision":"uncertain","time":"2025-01-02T03:04:05.678Z","reason":"unfamiliar","tile":1}"#)
        );
        let slide = Event::Slide(SlideSummary {
            slide: "S-0014".into(),
            verdict: Verdict::Unfamiliar,
            frames: 40,
            good: 40,
            retakes: 0,
            fields: 12,
            unfamiliar: 9,
            reason: None,
            counts: vec![("Blast".into(), 0), ("band neutrophil".into(), 3)],
            blast_fraction: 0.0,
        });
        assert_eq!(
            slide.to_line(LineFormat::Text),
            "SLIDE slide=S-0014 verdict=unfamiliar frames=40 good=40 retakes=0 fields=12 unfamiliar=9 count_blast=0 count_band_neutrophil=3 blast_fraction=0.0000 note=\"screening aid\""
        );
        let json: serde_json::Value =
            serde_json::from_str(&slide.to_line(LineFormat::Json)).unwrap();
        assert_eq!(
            (&json["verdict"], &json["unfamiliar"]),
            (&serde_json::json!("unfamiliar"), &serde_json::json!(9))
        );
    }

    #[test]
    fn text_quoting_round_trips_awkward_strings() {
        let strings = [
            "",
            "-",
            "a b",
            "\"",
            "\\",
            "=",
            "k=v",
            "tab\there",
            "new\nline",
            "é",
            "日本",
            "\u{1f600}",
            "\u{7f}",
            "\0",
            "--",
            "plain",
        ];
        for s in strings {
            let e = Event::Error {
                code: Fault::Internal,
                message: s.into(),
            };
            let line = e.to_line(LineFormat::Text);
            assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line}");
            let (_, fields) = parse_text_line(&line).unwrap();
            assert_eq!(fields[1], ("message".to_string(), Some(s.to_string())));
        }
    }

    #[test]
    fn format_parses_from_config_and_cli() {
        assert_eq!("JSON".parse::<LineFormat>().unwrap(), LineFormat::Json);
        assert_eq!("text".parse::<LineFormat>().unwrap(), LineFormat::Text);
        assert!("xml".parse::<LineFormat>().is_err());
        let f: LineFormat = serde_json::from_str("\"json\"").unwrap();
        assert_eq!(f, LineFormat::Json);
    }
}
