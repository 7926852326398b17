//! The technician's serial protocol: events the device sends, commands it accepts.
//!
//! # Device → technician
//!
//! One event per line, lines end with CR LF. Two formats carry the same fields:
//!
//! * **text** (default): `EVENT key=value key=value …`, e.g.
//!   `RESULT frame=37 slide=S-0012 label=lymphocyte confidence=0.974 decision=normal time=2025-01-02T03:04:05.678Z`
//! * **json**: one JSON object per line, `event` first, then the same keys in the same order:
//!   `{"event":"RESULT","frame":37,"slide":"S-0012",…}`. Numbers and booleans are JSON numbers
//!   and booleans; an absent value is `null`.
//!
//! Text values: a value made only of printable ASCII other than space, `"`, `\` and `=` is
//! written bare. Anything else (empty, spaces, quotes, non-ASCII, …) is written in double
//! quotes, with `\"`, `\\`, `\n`, `\r`, `\t` and `\u{HEX}` (any other character outside
//! printable ASCII) escapes, so a text line is always printable ASCII. A bare `-` means absent
//! (a string that is just `-` is written `"-"`). Booleans are `true`/`false`; times are UTC,
//! RFC 3339 with milliseconds.
//!
//! | event | fields | meaning |
//! | --- | --- | --- |
//! | `RESULT` | `frame slide label confidence decision time [reason] [tile]` | a frame was classified; `confidence` 0..1 with 3 decimals; `decision` is `normal`, `blast` or `uncertain`; `reason=unfamiliar` only for a frame the model found unfamiliar (then `decision=uncertain`: the model was not validated for such pictures); `tile` only when frames are tiled |
//! | `RETAKE` | `frame reason time` | a frame was rejected; `reason` is `focus`, `exposure` or `empty` |
//! | `SLIDE` | `slide verdict frames good retakes fields [unfamiliar] count_<class>… blast_fraction [reason] note` | slide summary; `verdict` is `no_blasts`, `uncertain`, `refer`, `insufficient`, `incomplete` (the scan was cut short by a fault: no verdict, `reason` says which fault) or `unfamiliar` (most good fields were unfamiliar to the model: not validated for these pictures); `frames`, `good`, `retakes` count frames, `fields` the good fields (what the verdict counts), `unfamiliar` (only when there are any) the good fields the model found unfamiliar; one `count_<class>` per class (confident frames; class lower-cased, other characters `_`); `blast_fraction` (blast fields / confident fields) 0..1 with 4 decimals; `note` is always `"screening aid"` |
//! | `STATUS` | `state slide frames model uptime` | `state` is `starting`, `idle`, `screening` or `fault`; `uptime` in seconds |
//! | `ERROR` | `code message` | `code` is `camera_lost`, `disk_full`, `outbox_full` (the fleet outbox is full of unsent results), `model_refused` or `internal` |
//! | `SELFTEST` | `check ok detail` | one self-test result; `ok` is `true` or `false` |
//! | `OK` | `command detail` | a command was done (`detail` may be `-`) |
//! | `ERR` | `code message` | input was refused; `code` is one of [`CommandError::code`] |
//! | `PONG` | | answer to `PING` |
//! | `HELP` | `commands` | the command list |
//! | `VERSION` | `name version` | the device program |
//! | `MODEL` | `name digest classes` | the loaded model; `classes` comma-separated |
//!
//! # Technician → device
//!
//! One command per line (CR, LF or CR LF), case-insensitive, at most [`MAX_LINE`] bytes;
//! words are separated by spaces or tabs:
//!
//! | command | answer |
//! | --- | --- |
//! | `HELP` | `HELP` |
//! | `PING` | `PONG` |
//! | `STATUS` | `STATUS` |
//! | `START [slide-id]` | `OK` with the slide id (1–32 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit), or `ERR code=refused` when no session could be opened (a fault stopped classifying, the database refused) |
//! | `STOP` | `OK` (and the `SLIDE` summary) |
//! | `LAST [n]` | the last `n` (default 1, at most [`MAX_LAST`]) `RESULT`/`RETAKE` lines, then `OK` |
//! | `MODEL` | `MODEL` |
//! | `VERSION` | `VERSION` |
//!
//! Anything else gets an `ERR` line. Input is only ever matched against this table: nothing
//! typed reaches a shell or a file path other than as a validated slide id.
//!
//! # Where things are
//!
//! * `events`: the messages the device sends ([`Event`], [`SlideSummary`], [`Decision`],
//!   [`Timestamp`]) and the fields each one carries, in order;
//! * `encoding`: writing an event as one text or JSON line ([`LineFormat`], [`Event::to_line`]);
//! * `commands`: what the technician may type ([`Command`], [`SlideId`], [`CommandError`],
//!   [`parse_command`]) and its limits.

mod commands;
mod encoding;
mod events;

pub use commands::{
    Command, CommandError, HELP_TEXT, MAX_LAST, MAX_LINE, MAX_SLIDE_ID, SlideId, parse_command,
};
pub use encoding::LineFormat;
pub use events::{Decision, Event, SlideSummary, Timestamp, UncertainReason};
