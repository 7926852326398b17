//! Random input for the command parser, the line assembler and the serial line: no panic,
//! bounded output, and the same lines however the bytes are chunked.

use std::io::{self, Read, Write};

use hardware::serial::{Line, LineAssembler, MAX_LINE, MAX_SLIDE_ID, parse_command};
use hardware::{Command, Event, LineFormat, SerialLine};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const CASES: usize = 100_000;

const WORDS: &[&[u8]] = &[
    b"HELP",
    b"ping",
    b"Status",
    b"START",
    b"stop",
    b"LAST",
    b"model",
    b"VERSION",
    b"S-0012",
    b"100",
    b"0",
    b"65536",
    b"../",
    b"-rf",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x08",
    b"\x7f",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"\"",
    b"\\",
    b"=",
];

const COMMANDS: &[&str] = &[
    "help", "ping", "status", "start", "stop", "last", "model", "version",
];

/// A well-formed-looking command with a random-case word and maybe a random argument.
fn command_like(rng: &mut StdRng) -> Vec<u8> {
    let word = COMMANDS[rng.random_range(0..COMMANDS.len())];
    let mut out: Vec<u8> = word
        .bytes()
        .map(|b| {
            if rng.random() {
                b.to_ascii_uppercase()
            } else {
                b
            }
        })
        .collect();
    if rng.random_range(0..2) == 0 {
        out.push(b' ');
        let alphabet = b"0123456789abcXYZ.-_/;$ ";
        for _ in 0..rng.random_range(1..40) {
            out.push(alphabet[rng.random_range(0..alphabet.len())]);
        }
    }
    out
}

/// A random line: sometimes command-like, sometimes pure noise, usually command words and
/// noise mixed.
fn random_bytes(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    if rng.random_range(0..3) == 0 {
        return command_like(rng);
    }
    let len = rng.random_range(0..=max_len);
    let mut out = Vec::with_capacity(len);
    let noise = rng.random_range(0..4) == 0;
    while out.len() < len {
        if noise || rng.random_range(0..3) == 0 {
            out.push(rng.random());
        } else {
            out.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())]);
        }
    }
    out
}

fn assert_printable_line(line: &str) {
    assert!(line.len() <= 200, "{line}");
    assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
}

#[test]
fn parse_command_never_panics_and_accepts_only_valid_input() {
    let mut rng = StdRng::seed_from_u64(0x1e0c0);
    let mut accepted = 0;
    for _ in 0..CASES {
        let bytes = random_bytes(&mut rng, 300);
        match parse_command(&bytes) {
            Ok(command) => {
                accepted += 1;
                assert!(bytes.trim_ascii().len() <= MAX_LINE);
                match command {
                    Command::Start(Some(id)) => {
                        let id = id.as_str();
                        assert!(id.len() <= MAX_SLIDE_ID);
                        assert!(
                            id.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                        );
                        assert!(id.as_bytes()[0].is_ascii_alphanumeric());
                    }
                    Command::Last(n) => assert!((1..=100).contains(&n)),
                    _ => {}
                }
            }
            Err(e) => {
                assert_printable_line(&Event::Err(e.clone()).to_line(LineFormat::Text));
                assert!(Event::Err(e).to_line(LineFormat::Json).len() <= 200);
            }
        }
    }
    // The generator hits real commands often enough for this to mean something.
    assert!(accepted > 1000, "{accepted}");
}

fn assemble(chunks: &[&[u8]]) -> Vec<Line> {
    let mut a = LineAssembler::new(MAX_LINE);
    chunks.iter().flat_map(|c| a.push(c)).collect()
}

#[test]
fn line_assembler_is_bounded_and_chunking_does_not_matter() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..CASES {
        let stream = random_bytes(&mut rng, 400);
        let whole = assemble(&[&stream]);
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(64));
            let (head, tail) = rest.split_at(n);
            chunks.push(head);
            rest = tail;
        }
        assert_eq!(assemble(&chunks), whole);
        let ends = stream.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
        assert!(whole.len() <= ends);
        for line in whole {
            if let Line::Complete(bytes) = line {
                assert!(bytes.len() <= MAX_LINE);
                assert!(!bytes.contains(&b'\r') && !bytes.contains(&b'\n'));
            }
        }
    }
}

/// A port that reads from a byte stream in random pieces and keeps what is written.
struct StreamPort {
    input: Vec<u8>,
    pos: usize,
    step: usize,
    output: Vec<u8>,
}

impl Read for StreamPort {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.input.len() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = self.step.min(buf.len()).min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for StreamPort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn serial_line_answers_random_input_with_bounded_lines() {
    let mut rng = StdRng::seed_from_u64(42);
    for case in 0..CASES / 10 {
        let format = if case % 2 == 0 {
            LineFormat::Text
        } else {
            LineFormat::Json
        };
        let input = random_bytes(&mut rng, 2000);
        let step = rng.random_range(1..300);
        // Every poll hands out a queued line or reads at least one byte.
        let polls = 2 * input.len() + 2;
        let port = StreamPort {
            input,
            pos: 0,
            step,
            output: Vec::new(),
        };
        let mut line = SerialLine::new(port, format);
        for _ in 0..polls {
            line.poll().unwrap();
        }
        let port = line.into_inner();
        assert_eq!(port.pos, port.input.len());
        let output = String::from_utf8(port.output).unwrap();
        for reply in output.split_terminator("\r\n") {
            assert!(reply.len() <= 200, "{reply}");
            if format == LineFormat::Text {
                assert_printable_line(reply);
                assert!(reply.starts_with("ERR code="), "{reply}");
            } else {
                let json: serde_json::Value = serde_json::from_str(reply).unwrap();
                assert_eq!(json["event"], "ERR");
            }
        }
    }
}
