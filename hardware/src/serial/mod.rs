//! The technician's serial line: the protocol ([`protocol`]) and the port ([`mod@line`]).

pub mod line;
pub mod protocol;

pub use line::{Line, LineAssembler, SerialConfig, SerialError, SerialLine};
pub use protocol::{
    Command, CommandError, Decision, Event, LineFormat, MAX_LAST, MAX_LINE, MAX_SLIDE_ID, SlideId,
    SlideSummary, Timestamp, parse_command,
};
