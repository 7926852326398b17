//! What the technician may type: [`parse_command`] turns one input line into a [`Command`]
//! or a [`CommandError`] (the `ERR` answer), checking it against the command table of the
//! module docs and the limits [`MAX_LINE`], [`MAX_SLIDE_ID`] and [`MAX_LAST`]. A slide id
//! from `START` is validated into a [`SlideId`]; [`HELP_TEXT`] is the list `HELP` answers with.

use std::fmt;

/// Longest accepted command line, in bytes (without the line end).
pub const MAX_LINE: usize = 256;

/// Longest slide id.
pub const MAX_SLIDE_ID: usize = 32;

/// Largest `n` in `LAST n`.
pub const MAX_LAST: u16 = 100;

/// The text of the `HELP` event's `commands` field.
pub const HELP_TEXT: &str = "HELP PING STATUS START [slide-id] STOP LAST [n] MODEL VERSION";

/// A validated slide id: 1 to [`MAX_SLIDE_ID`] characters of `A-Z a-z 0-9 . _ -`, starting
/// with a letter or digit (so it is safe as a file name and never looks like an option).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlideId(String);

impl SlideId {
    /// Checks `id`.
    pub fn new(id: &str) -> Result<Self, CommandError> {
        let mut chars = id.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if first_ok && rest_ok && id.len() <= MAX_SLIDE_ID {
            Ok(SlideId(id.to_string()))
        } else {
            Err(CommandError::BadSlideId(shorten(id)))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SlideId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command from the technician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// List the commands.
    Help,
    /// Check the line.
    Ping,
    /// Report the device status.
    Status,
    /// Start screening a slide, with an id or a generated one.
    Start(Option<SlideId>),
    /// Stop screening and summarise.
    Stop,
    /// Repeat the last `n` frame results (1..=[`MAX_LAST`]).
    Last(u16),
    /// Describe the loaded model.
    Model,
    /// Report the program version.
    Version,
}

impl Command {
    /// The command word, e.g. `START` (the `command` field of `OK`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help => "HELP",
            Command::Ping => "PING",
            Command::Status => "STATUS",
            Command::Start(_) => "START",
            Command::Stop => "STOP",
            Command::Last(_) => "LAST",
            Command::Model => "MODEL",
            Command::Version => "VERSION",
        }
    }
}

/// Why a command line was refused. The message quotes at most 32 characters of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Nothing but blanks (the serial line ignores these silently).
    #[error("empty line")]
    Empty,
    /// Longer than [`MAX_LINE`] bytes.
    #[error("line longer than {MAX_LINE} bytes, discarded")]
    TooLong,
    /// Control characters or non-ASCII bytes.
    #[error("only printable ASCII is accepted")]
    BadBytes,
    /// Not a command.
    #[error("unknown command {0:?}, try HELP")]
    Unknown(String),
    /// A command that takes no argument (or START/LAST with more than one) got one.
    #[error("{command} takes {expected}")]
    UnexpectedArgument {
        /// The command word.
        command: &'static str,
        /// What it takes.
        expected: &'static str,
    },
    /// A slide id outside the allowed characters or length.
    #[error(
        "bad slide id {0:?}: 1-{MAX_SLIDE_ID} of A-Z a-z 0-9 . _ - starting with a letter or digit"
    )]
    BadSlideId(String),
    /// A count that is not a number in 1..=MAX_LAST.
    #[error("bad count {0:?}: a number from 1 to {MAX_LAST}")]
    BadCount(String),
    /// A well-formed command the device could not carry out (e.g. `START` while a fault stops
    /// classifying).
    #[error("{command} refused: {reason}")]
    Refused {
        /// The command word.
        command: &'static str,
        /// Why, for a person.
        reason: String,
    },
}

impl CommandError {
    /// The `code` field of the `ERR` line: `empty`, `too_long`, `bad_bytes`, `unknown_command`,
    /// `unexpected_argument`, `bad_slide_id`, `bad_count` or `refused`.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Empty => "empty",
            CommandError::TooLong => "too_long",
            CommandError::BadBytes => "bad_bytes",
            CommandError::Unknown(_) => "unknown_command",
            CommandError::UnexpectedArgument { .. } => "unexpected_argument",
            CommandError::BadSlideId(_) => "bad_slide_id",
            CommandError::BadCount(_) => "bad_count",
            CommandError::Refused { .. } => "refused",
        }
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Parses one command line (a trailing CR/LF and surrounding blanks are ignored).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = line.trim_ascii();
    if line.len() > MAX_LINE {
        return Err(CommandError::TooLong);
    }
    if !line
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(CommandError::BadBytes);
    }
    // Only printable ASCII and tabs remain, so this cannot fail.
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadBytes)?;
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let Some(word) = words.next() else {
        return Err(CommandError::Empty);
    };
    let arg = words.next();
    let extra = words.next().is_some();
    let bare = |command: Command| match arg {
        None => Ok(command),
        Some(_) => Err(CommandError::UnexpectedArgument {
            command: command.name(),
            expected: "no argument",
        }),
    };
    let command = match word.to_ascii_uppercase().as_str() {
        "HELP" => bare(Command::Help)?,
        "PING" => bare(Command::Ping)?,
        "STATUS" => bare(Command::Status)?,
        "STOP" => bare(Command::Stop)?,
        "MODEL" => bare(Command::Model)?,
        "VERSION" => bare(Command::Version)?,
        "START" => Command::Start(arg.map(SlideId::new).transpose()?),
        "LAST" => Command::Last(match arg {
            None => 1,
            Some(n) => parse_count(n)?,
        }),
        _ => return Err(CommandError::Unknown(shorten(word))),
    };
    if extra {
        return Err(CommandError::UnexpectedArgument {
            command: command.name(),
            expected: match command {
                Command::Start(_) => "at most one slide id",
                _ => "at most one count",
            },
        });
    }
    Ok(command)
}

fn parse_count(s: &str) -> Result<u16, CommandError> {
    let bad = || CommandError::BadCount(shorten(s));
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(n) if (1..=MAX_LAST).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::protocol::{Event, LineFormat};

    #[test]
    fn commands_parse_case_insensitively() {
        let ok = |s: &str| parse_command(s.as_bytes()).unwrap();
        assert_eq!(ok("help"), Command::Help);
        assert_eq!(ok("  Ping\r\n"), Command::Ping);
        assert_eq!(ok("STATUS"), Command::Status);
        assert_eq!(ok("start"), Command::Start(None));
        assert_eq!(
            ok("Start\tS-0012.a_b"),
            Command::Start(Some(SlideId::new("S-0012.a_b").unwrap()))
        );
        assert_eq!(ok("stop"), Command::Stop);
        assert_eq!(ok("last"), Command::Last(1));
        assert_eq!(ok("LAST   100"), Command::Last(100));
        assert_eq!(ok("model"), Command::Model);
        assert_eq!(ok("version"), Command::Version);
    }

    #[test]
    fn bad_commands_are_explained() {
        let err = |s: &[u8]| parse_command(s).unwrap_err();
        assert_eq!(err(b""), CommandError::Empty);
        assert_eq!(err(b" \t \r\n"), CommandError::Empty);
        assert_eq!(err(b"PING\x1b[A"), CommandError::BadBytes);
        assert_eq!(err("STÄRT".as_bytes()), CommandError::BadBytes);
        assert_eq!(err(b"rm -rf /"), CommandError::Unknown("rm".into()));
        assert_eq!(err(&[b'A'; 300]), CommandError::TooLong);
        assert_eq!(
            err(b"ping now"),
            CommandError::UnexpectedArgument {
                command: "PING",
                expected: "no argument"
            }
        );
        assert_eq!(err(b"start a b").code(), "unexpected_argument");
        assert_eq!(err(b"last 1 2").code(), "unexpected_argument");
        for id in [
            "-rf",
            ".hidden",
            "../etc",
            "a/b",
            "a;b",
            "$(reboot)",
            "`x`",
            "a*",
        ] {
            assert_eq!(
                err(format!("START {id}").as_bytes()),
                CommandError::BadSlideId(id.into()),
                "{id}"
            );
        }
        assert_eq!(
            err(format!("START {}", "a".repeat(33)).as_bytes()).code(),
            "bad_slide_id"
        );
        assert!(parse_command(format!("START {}", "a".repeat(32)).as_bytes()).is_ok());
        for n in ["0", "101", "-1", "+1", "1e2", "99999999999", "x", "65536"] {
            assert_eq!(
                err(format!("LAST {n}").as_bytes()),
                CommandError::BadCount(n.into())
            );
        }
        let long_word = "x".repeat(100);
        assert_eq!(
            err(long_word.as_bytes()),
            CommandError::Unknown("x".repeat(32))
        );
    }

    #[test]
    fn error_codes_are_distinct_and_messages_short() {
        let errors = [
            CommandError::Empty,
            CommandError::TooLong,
            CommandError::BadBytes,
            CommandError::Unknown("x".repeat(32)),
            CommandError::UnexpectedArgument {
                command: "START",
                expected: "at most one slide id",
            },
            CommandError::BadSlideId("x".repeat(32)),
            CommandError::BadCount("x".repeat(32)),
        ];
        let codes: std::collections::HashSet<_> = errors.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), errors.len());
        for e in errors {
            assert!(Event::Err(e).to_line(LineFormat::Text).len() < 200);
        }
    }
}
