//! A conversation over a real pseudo-terminal pair: the technician types on one end, the
//! device (a `SerialLine` on the other end, driven like the device loop drives it) answers.
#![cfg(unix)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use hardware::serial::{Decision, SlideId, Timestamp};
use hardware::{Command, Event, LineFormat, Phase, SerialLine};
use serialport::{SerialPort, TTYPort};

/// What a device program does with each command (the parts these tests need).
/// The device's record of what it sent (the device program keeps it in its database).
#[derive(Default)]
struct Device {
    slide: Option<String>,
    sent: Vec<Event>,
}

fn answer(line: &mut SerialLine<TTYPort>, command: Command, device: &mut Device) {
    let slide = &mut device.slide;
    match command {
        Command::Ping => line.send(&Event::Pong).unwrap(),
        Command::Help => line.send(&Event::Help).unwrap(),
        Command::Start(id) => {
            *slide = Some(id.map_or("AUTO-1".to_string(), |id| id.to_string()));
            line.send(&Event::Ok {
                command: "START",
                detail: slide.clone(),
            })
            .unwrap();
            for frame in 1..=3 {
                let result = Event::Result {
                    frame,
                    slide: slide.clone(),
                    label: "lymphocyte".into(),
                    confidence: 0.9,
                    // The third frame is one the model found unfamiliar.
                    decision: if frame == 3 {
                        Decision::Uncertain
                    } else {
                        Decision::Normal
                    },
                    time: Timestamp(0),
                    unfamiliar: frame == 3,
                    tile: None,
                };
                line.send(&result).unwrap();
                device.sent.push(result);
            }
        }
        Command::Last(n) => {
            let skip = device.sent.len().saturating_sub(n.into());
            line.send_last(&device.sent[skip..]).unwrap();
        }
        Command::Status => line
            .send(&Event::Status {
                state: Phase::Screening,
                slide: slide.clone(),
                frames: 3,
                model: "test".into(),
                uptime_s: 1,
            })
            .unwrap(),
        other => line
            .send(&Event::Ok {
                command: other.name(),
                detail: None,
            })
            .unwrap(),
    }
}

/// Types `input` on the technician's end, runs the device loop until `expected_lines` lines
/// came back (or 5 s passed) and returns them.
fn converse(format: LineFormat, input: &[u8], expected_lines: usize) -> Vec<String> {
    let (mut technician, mut device_port) = TTYPort::pair().expect("pseudo-terminal pair");
    device_port.set_timeout(Duration::from_millis(10)).unwrap();
    technician.set_timeout(Duration::from_millis(10)).unwrap();
    let mut device = SerialLine::new(device_port, format);
    let mut state = Device::default();

    // Type in small pieces, as a person (or a slow UART) would.
    for piece in input.chunks(7) {
        technician.write_all(piece).unwrap();
    }
    technician.flush().unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    while received.iter().filter(|&&b| b == b'\n').count() < expected_lines {
        assert!(
            Instant::now() < deadline,
            "timed out: {:?}",
            String::from_utf8_lossy(&received)
        );
        if let Some(command) = device.poll().unwrap() {
            answer(&mut device, command, &mut state);
        }
        match technician.read(&mut buf) {
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8(received).unwrap();
    assert!(text.ends_with("\r\n"));
    text.split_terminator("\r\n").map(str::to_string).collect()
}

#[test]
fn a_technician_session() {
    let input = b"ping\r\nStart S-0012\r\nlast 2\r\nrm -rf /\r\nSTART ../etc\nstatus\r\n\r\nstop\r";
    let lines = converse(LineFormat::Text, input, 12);
    let t = "time=1970-01-01T00:00:00.000Z";
    let result = |n| match n {
        3 => format!(
            "RESULT frame=3 slide=S-0012 label=lymphocyte confidence=0.900 decision=uncertain {t} reason=unfamiliar"
        ),
        n => format!(
            "RESULT frame={n} slide=S-0012 label=lymphocyte confidence=0.900 decision=normal {t}"
        ),
    };
    let expected = vec![
        "PONG".to_string(),
        "OK command=START detail=S-0012".to_string(),
        result(1),
        result(2),
        result(3),
        result(2),
        result(3),
        "OK command=LAST detail=2".to_string(),
        "ERR code=unknown_command message=\"unknown command \\\"rm\\\", try HELP\"".to_string(),
        "ERR code=bad_slide_id message=\"bad slide id \\\"../etc\\\": 1-32 of A-Z a-z 0-9 . _ - starting with a letter or digit\"".to_string(),
        "STATUS state=screening slide=S-0012 frames=3 model=test uptime=1".to_string(),
        "OK command=STOP detail=-".to_string(),
    ];
    assert_eq!(lines, expected);
}

#[test]
fn overlong_and_binary_input_get_err_and_the_line_keeps_working() {
    let mut input = vec![b'A'; 1000];
    input.extend_from_slice(b"\r\n\x00\xff\xfe\x1b[A\r\nhelp\n");
    let lines = converse(LineFormat::Json, &input, 3);
    assert_eq!(
        lines,
        vec![
            r#"{"event":"ERR","code":"too_long","message":"line longer than 256 bytes, discarded"}"#,
            r#"{"event":"ERR","code":"bad_bytes","message":"only printable ASCII is accepted"}"#,
            r#"{"event":"HELP","commands":"HELP PING STATUS START [slide-id] STOP LAST [n] MODEL VERSION"}"#,
        ]
    );
}

#[test]
fn start_without_id_and_an_idle_line_does_not_block() {
    let (_technician, mut device_port) = TTYPort::pair().unwrap();
    device_port.set_timeout(Duration::from_millis(20)).unwrap();
    let mut device = SerialLine::new(device_port, LineFormat::Text);
    let started = Instant::now();
    for _ in 0..5 {
        assert!(device.poll().unwrap().is_none());
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    let lines = converse(LineFormat::Text, b"START\n", 4);
    assert_eq!(lines[0], "OK command=START detail=AUTO-1");
    assert!(SlideId::new("AUTO-1").is_ok());
}
