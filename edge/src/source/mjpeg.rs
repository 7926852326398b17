//! Splitting a concatenated MJPEG byte stream (what `rpicam-vid --codec mjpeg -o -` and a
//! GStreamer `jpegenc ! fdsink` pipeline write) into JPEG frames.
//!
//! The splitter follows the JPEG marker structure rather than searching for the `FF D9` bytes: it
//! skips marker segments by their length (so an EXIF thumbnail, a JPEG inside an APP1 segment,
//! does not end the frame early) and scans the entropy-coded data for the next real marker
//! (`FF 00` stuffing, `FF D0`–`FF D7` restarts and `FF FF` fill bytes are data). A frame ends at
//! its EOI (`FF D9`) and is handed on with its bytes exactly as received.
//!
//! Robustness:
//! - bytes before a frame's SOI (`FF D8`) are skipped and reported once per run;
//! - a frame cut short by the start of the next frame (an SOI where a marker is expected or inside
//!   the entropy-coded data) is reported and the new frame is read;
//! - a frame whose structure is broken (a segment length that does not lead to a marker) is
//!   reported and the bytes after its SOI are searched again for the next SOI, so a frame hidden
//!   behind a corrupt length is not lost;
//! - a frame that grows beyond the size limit without ending is reported and dropped, and the
//!   splitter searches for the next SOI: garbage never makes it hold more than the limit plus one
//!   read;
//! - a frame still open when the stream ends is reported as truncated.
//!
//! A frame is handed on only when it reached its EOI; a frame cut off by the end of the stream is
//! reported, never handed on as if it were complete. The splitter checks the structure only;
//! whether a frame decodes is decided where it is decoded (`leukoscope_model::picture`, in the
//! run pipeline), which refuses a damaged one.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};

/// What the splitter found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// A complete JPEG, SOI to EOI, as received.
    Frame(Vec<u8>),
    /// Bytes that were not a complete JPEG.
    Skipped {
        /// Offset of the first skipped byte in the stream.
        offset: u64,
        /// How many bytes were skipped.
        len: u64,
        /// What they were, in words.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for an SOI; `buf` holds at most one byte (a possible `FF`).
    Search,
    /// Inside a frame, at a position where a marker must start.
    Marker,
    /// Inside a frame, in entropy-coded data.
    Entropy,
}

/// An incremental MJPEG splitter: [`MjpegSplitter::push`] bytes as they arrive, take what it
/// found with [`MjpegSplitter::next_split`], and call [`MjpegSplitter::finish`] at the end of the
/// stream.
#[derive(Debug)]
pub struct MjpegSplitter {
    max_frame_bytes: usize,
    state: State,
    /// In `Search`: unexamined bytes. In a frame: the frame so far (from its SOI).
    buf: Vec<u8>,
    /// Parse position in `buf` (in a frame).
    pos: usize,
    /// Stream offset of `buf[0]`.
    buf_offset: u64,
    /// Garbage run being skipped: start offset and length.
    garbage: Option<(u64, u64)>,
    /// Stream offset up to which bytes were already reported with a broken frame: searched again
    /// for frames, but not reported again as garbage.
    reported_until: u64,
    out: VecDeque<Split>,
}

impl MjpegSplitter {
    /// A splitter that refuses frames larger than `max_frame_bytes` (at least 1 KiB).
    pub fn new(max_frame_bytes: usize) -> Self {
        MjpegSplitter {
            max_frame_bytes: max_frame_bytes.max(1024),
            state: State::Search,
            buf: Vec::new(),
            pos: 0,
            buf_offset: 0,
            garbage: None,
            reported_until: 0,
            out: VecDeque::new(),
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.run();
    }

    /// The next frame or skipped run found so far, if any.
    pub fn next_split(&mut self) -> Option<Split> {
        self.out.pop_front()
    }

    /// The stream has ended: reports a frame left open and trailing garbage.
    /// The stream has ended: reports a frame left open and trailing garbage. A frame left open
    /// may hide complete frames behind a corrupt segment length: its bytes are searched again.
    pub fn finish(&mut self) {
        while self.state != State::Search {
            let len = self.buf.len() as u64;
            if self.buf_offset + len > self.reported_until {
                self.out.push_back(Split::Skipped {
                    offset: self.buf_offset,
                    len,
                    reason: format!("truncated frame: the stream ended after {len} bytes of it"),
                });
            }
            self.search_after_soi();
            self.run();
        }
        let n = self.buf.len();
        self.discard_garbage(n);
        self.flush_garbage();
        self.pos = 0;
    }

    /// Drops the current frame's SOI and searches the rest of it again for an SOI; its bytes have
    /// been reported.
    fn search_after_soi(&mut self) {
        self.buf.drain(..2);
        self.buf_offset += 2;
        self.reported_until = self
            .reported_until
            .max(self.buf_offset + self.buf.len() as u64);
        self.state = State::Search;
        self.pos = 0;
    }

    fn run(&mut self) {
        loop {
            let progressed = match self.state {
                State::Search => self.search(),
                State::Marker => self.marker(),
                State::Entropy => self.entropy(),
            };
            if self.state != State::Search && self.buf.len() > self.max_frame_bytes {
                let len = self.buf.len() as u64;
                self.out.push_back(Split::Skipped {
                    offset: self.buf_offset,
                    len,
                    reason: format!(
                        "no frame end within {} bytes (the size limit): dropped",
                        self.max_frame_bytes
                    ),
                });
                self.buf_offset += len;
                self.buf.clear();
                self.pos = 0;
                self.state = State::Search;
                continue;
            }
            if !progressed {
                return;
            }
        }
    }

    /// Skips to the next SOI. Returns whether a frame started.
    fn search(&mut self) -> bool {
        let found = self.buf.windows(2).position(|w| w == [0xFF, 0xD8]);
        match found {
            Some(i) => {
                self.discard_garbage(i);
                self.flush_garbage();
                self.state = State::Marker;
                self.pos = 2;
                true
            }
            None => {
                // Keep a trailing FF: it may be the first half of an SOI.
                let keep = usize::from(self.buf.last() == Some(&0xFF));
                let n = self.buf.len() - keep;
                self.discard_garbage(n);
                false
            }
        }
    }

    /// Drops the first `n` bytes of `buf` as garbage.
    fn discard_garbage(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let end = self.buf_offset + n as u64;
        let start = self.buf_offset.max(self.reported_until);
        if end > start {
            let fresh = end - start;
            match &mut self.garbage {
                Some((_, len)) => *len += fresh,
                None => self.garbage = Some((start, fresh)),
            }
        }
        self.buf.drain(..n);
        self.buf_offset += n as u64;
    }

    fn flush_garbage(&mut self) {
        if let Some((offset, len)) = self.garbage.take() {
            self.out.push_back(Split::Skipped {
                offset,
                len,
                reason: format!("{len} bytes of non-JPEG data between frames"),
            });
        }
    }

    /// Ends the current frame at `end` (exclusive) as a complete frame.
    fn complete(&mut self, end: usize) {
        let rest = self.buf.split_off(end);
        let frame = std::mem::replace(&mut self.buf, rest);
        self.buf_offset += end as u64;
        self.out.push_back(Split::Frame(frame));
        self.state = State::Search;
        self.pos = 0;
    }

    /// The current frame ends unfinished at `end` because a new SOI starts there.
    fn cut_short(&mut self, end: usize) {
        let rest = self.buf.split_off(end);
        self.out.push_back(Split::Skipped {
            offset: self.buf_offset,
            len: end as u64,
            reason: format!("truncated frame ({end} bytes): the next frame started before its end"),
        });
        self.buf = rest;
        self.buf_offset += end as u64;
        // `buf` now starts with the new SOI.
        self.state = State::Marker;
        self.pos = 2;
    }

    /// The current frame is structurally broken: report it, then look for an SOI after its own.
    fn broken(&mut self, why: &str) {
        let len = self.buf.len();
        self.out.push_back(Split::Skipped {
            offset: self.buf_offset,
            len: len as u64,
            reason: format!("corrupt frame ({why}); searching for the next frame"),
        });
        self.search_after_soi();
    }

    fn marker(&mut self) -> bool {
        let b = &self.buf;
        let mut p = self.pos;
        if p >= b.len() {
            return false;
        }
        if b[p] != 0xFF {
            self.broken(&format!("byte {:#04x} where a marker was expected", b[p]));
            return true;
        }
        // Fill bytes before a marker.
        while p + 1 < b.len() && b[p + 1] == 0xFF {
            p += 1;
        }
        self.pos = p;
        if p + 1 >= b.len() {
            return false;
        }
        match b[p + 1] {
            0xD9 => {
                self.complete(p + 2);
                true
            }
            0xD8 => {
                self.cut_short(p);
                true
            }
            0x00 => {
                self.broken("marker 0xff00 outside the image data");
                true
            }
            0x01 | 0xD0..=0xD7 => {
                self.pos = p + 2;
                true
            }
            m => {
                if p + 4 > b.len() {
                    return false;
                }
                let len = u16::from_be_bytes([b[p + 2], b[p + 3]]) as usize;
                if len < 2 {
                    self.broken(&format!("segment {m:#04x} with length {len}"));
                    return true;
                }
                let next = p + 2 + len;
                if next > b.len() {
                    // Wait for the whole segment (the size limit bounds the wait).
                    return false;
                }
                self.pos = next;
                if m == 0xDA {
                    self.state = State::Entropy;
                }
                true
            }
        }
    }

    fn entropy(&mut self) -> bool {
        let b = &self.buf;
        let mut p = self.pos;
        loop {
            match b[p..].iter().position(|&x| x == 0xFF) {
                None => {
                    self.pos = b.len();
                    return false;
                }
                Some(i) => p += i,
            }
            if p + 1 >= b.len() {
                self.pos = p;
                return false;
            }
            match b[p + 1] {
                0x00 | 0xD0..=0xD7 => p += 2,
                0xFF => p += 1,
                _ => {
                    self.pos = p;
                    self.state = State::Marker;
                    return true;
                }
            }
        }
    }
}

/// The frames of an MJPEG stream read from `reader`, as an iterator of [`Split`]s; read errors
/// other than `Interrupted` end it with the error.
pub struct MjpegReader<R> {
    reader: R,
    splitter: MjpegSplitter,
    chunk: Vec<u8>,
    done: bool,
}

impl<R: Read> MjpegReader<R> {
    /// Reads `reader` in chunks of 64 KiB; frames above `max_frame_bytes` are dropped.
    pub fn new(reader: R, max_frame_bytes: usize) -> Self {
        MjpegReader {
            reader,
            splitter: MjpegSplitter::new(max_frame_bytes),
            chunk: vec![0; 64 * 1024],
            done: false,
        }
    }
}

impl<R: Read> Iterator for MjpegReader<R> {
    type Item = std::io::Result<Split>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(s) = self.splitter.next_split() {
                return Some(Ok(s));
            }
            if self.done {
                return None;
            }
            match self.reader.read(&mut self.chunk) {
                Ok(0) => {
                    self.done = true;
                    self.splitter.finish();
                }
                Ok(n) => self.splitter.push(&self.chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    self.splitter.finish();
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal structurally valid JPEG (not decodable, the splitter does not care): SOI, an APP0
    /// segment, SOS with entropy data containing stuffed bytes and a restart marker, EOI.
    fn fake_jpeg(fill: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x06, b'J', b'F', b'I', b'F'];
        v.extend([0xFF, 0xDA, 0x00, 0x04, 0x01, 0x00]);
        v.extend([fill, 0xFF, 0x00, fill, 0xFF, 0xD3, fill, 0xFF, 0xFF, 0x00]);
        v.extend([0xFF, 0xD9]);
        v
    }

    fn split_all(stream: &[u8], chunk: usize) -> Vec<Split> {
        let mut s = MjpegSplitter::new(1 << 20);
        let mut out = Vec::new();
        for c in stream.chunks(chunk.max(1)) {
            s.push(c);
            while let Some(x) = s.next_split() {
                out.push(x);
            }
        }
        s.finish();
        while let Some(x) = s.next_split() {
            out.push(x);
        }
        out
    }

    #[test]
    fn frames_are_found_in_any_chunking() {
        let (a, b) = (fake_jpeg(1), fake_jpeg(2));
        let stream = [a.clone(), b.clone()].concat();
        for chunk in [1, 2, 3, 7, 1000] {
            let got = split_all(&stream, chunk);
            assert_eq!(
                got,
                vec![Split::Frame(a.clone()), Split::Frame(b.clone())],
                "{chunk}"
            );
        }
    }

    #[test]
    fn an_embedded_thumbnail_does_not_end_the_frame() {
        let mut v = vec![0xFF, 0xD8];
        let thumb = fake_jpeg(9);
        let len = (thumb.len() + 2) as u16;
        v.extend([0xFF, 0xE1]);
        v.extend(len.to_be_bytes());
        v.extend(&thumb);
        v.extend(&fake_jpeg(3)[2..]);
        assert_eq!(split_all(&v, 5), vec![Split::Frame(v.clone())]);
    }

    #[test]
    fn garbage_truncation_and_corruption_are_reported_and_skipped() {
        let (a, b, c) = (fake_jpeg(1), fake_jpeg(2), fake_jpeg(3));
        let mut stream = b"hello".to_vec();
        stream.extend(&a);
        stream.extend(&b[..9]); // cut inside the APP0 segment, then the next frame starts
        stream.extend(&c[..22]); // cut inside the image data, then the next frame starts
        stream.extend(&b);
        // A corrupt length pointing past the next frame's start.
        stream.extend([0xFF, 0xD8, 0xFF, 0xE0, 0x7F, 0xFF]);
        stream.extend(&c);
        stream.extend(&a[..12]); // truncated at the end of the stream
        let got = split_all(&stream, 4);
        let frames: Vec<&Split> = got
            .iter()
            .filter(|s| matches!(s, Split::Frame(_)))
            .collect();
        assert_eq!(
            frames,
            vec![
                &Split::Frame(a.clone()),
                &Split::Frame(b.clone()),
                &Split::Frame(c.clone())
            ]
        );
        let reasons: Vec<String> = got
            .iter()
            .filter_map(|s| match s {
                Split::Skipped { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect();
        assert!(reasons[0].contains("5 bytes of non-JPEG"), "{reasons:?}");
        assert!(
            reasons.iter().any(|r| r.contains("next frame started")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains("stream ended")),
            "{reasons:?}"
        );
    }

    #[test]
    fn endless_garbage_and_endless_frames_stay_within_the_limit() {
        let mut s = MjpegSplitter::new(4096);
        // Garbage without FF D8 is dropped as it comes.
        for _ in 0..100 {
            s.push(&[0x42; 1000]);
            assert!(s.buf.len() <= 1);
        }
        // A frame that never ends is dropped at the limit, then frames are found again.
        s.push(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02]);
        for _ in 0..100 {
            s.push(&[0x11; 1000]);
            assert!(s.buf.len() <= 4096 + 1000);
        }
        s.push(&fake_jpeg(5));
        let mut got = Vec::new();
        while let Some(x) = s.next_split() {
            got.push(x);
        }
        assert!(
            got.iter().any(
                |x| matches!(x, Split::Skipped { reason, .. } if reason.contains("size limit"))
            )
        );
        assert_eq!(got.last(), Some(&Split::Frame(fake_jpeg(5))));
    }
}
