//! The technician's serial line: the protocol ([`protocol`]), one open port ([`mod@line`]) and
//! the link that opens it and reopens it with backoff ([`link`]).

pub mod line;
pub mod link;
pub mod protocol;

pub use line::{Line, LineAssembler, SerialConfig, SerialError, SerialLine};
pub use link::{Opener, PortOpener, RETRY_START_MS, SerialLink};
pub use protocol::{
    Command, CommandError, Decision, Event, LineFormat, MAX_LAST, MAX_LINE, MAX_SLIDE_ID, SlideId,
    SlideSummary, Timestamp, parse_command,
};
