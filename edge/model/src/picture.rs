//! Only whole pictures: an encoded JPEG or PNG is checked for completeness and for a size the
//! device can afford *before* it is decoded, and decoded so that a damaged image is an error.
//!
//! Decoders are lenient by design: `image` fills the missing part of a cut JPEG with grey and
//! returns a picture, which the model then classifies with high confidence. Here:
//!
//! - **JPEG**: the marker segments are walked by their lengths from the start-of-image marker
//!   (SOI, `FF D8`); the entropy-coded data after each start-of-scan (SOS) is scanned for the next
//!   real marker (`FF 00` stuffing, `FF D0`–`FF D7` restarts and `FF FF` fill bytes are data), up
//!   to the end-of-image marker (EOI, `FF D9`). No EOI, or a segment that runs past the end, is a
//!   truncated JPEG. The picture is then decoded by `zune-jpeg` (the decoder `image` wraps, with
//!   the same pixels) in its strict mode, which refuses image data that does not decode (invalid
//!   Huffman codes, markers where none may be) instead of rendering what it can.
//!
//!   Not detected: a frame cut inside its image data and then closed with an EOI (a camera that
//!   loses the end of a frame and still terminates it). The structure is whole, and `zune-jpeg`
//!   fills the blocks after a marker with zeros even in strict mode; seeing it would need a count
//!   of the decoded blocks, which the decoder does not expose.
//! - **PNG**: the chunks are walked (length, type, data, CRC) from the signature to `IEND`; every
//!   chunk's CRC is checked. The picture is then decoded by `image` with [`DecodeLimits`].
//! - **Bytes after the end** (after EOI, after `IEND`) are allowed and ignored: cameras pad frames
//!   with zeros, and phones append a second picture or a video (Ultra HDR gain maps, motion
//!   photos). They cannot hide a cut picture: the end is found by walking the picture's own
//!   structure, not by searching for the marker bytes.
//! - **Size**: the dimensions in the header (JPEG frame header, PNG `IHDR`) are checked against
//!   [`DecodeLimits`] before anything is allocated, so a crafted header cannot exhaust memory.

use image::RgbImage;
use thiserror::Error;

/// Decoding limits, sized for a Raspberry Pi with 1–2 GB of memory.
///
/// The defaults: at most 8192 pixels a side, and at most 512 MiB for the decoder's buffers. The
/// sides are far above any camera or scanner frame a microscope gives (a 12 MP Raspberry Pi HQ
/// frame is 4056×3040) and refuse absurd shapes early; the memory bound is what matters on a
/// board: a 12 MP colour JPEG needs about 106 MiB to decode, the largest colour JPEG accepted is
/// about 59 MP (8192×7280). Half of a 1 GB board stays for the system, the model and the frames
/// in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Widest picture accepted, in pixels.
    pub max_width: u32,
    /// Tallest picture accepted, in pixels.
    pub max_height: u32,
    /// Most bytes the decoder may need ([`PictureInfo::decode_bytes`]).
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_width: 8192,
            max_height: 8192,
            max_alloc: 512 * 1024 * 1024,
        }
    }
}

/// An encoded picture's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureFormat {
    /// JPEG (JFIF, EXIF, MJPEG frames).
    Jpeg,
    /// PNG.
    Png,
}

impl std::fmt::Display for PictureFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PictureFormat::Jpeg => "JPEG",
            PictureFormat::Png => "PNG",
        })
    }
}

/// What the structural walk found in a whole picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureInfo {
    /// The format.
    pub format: PictureFormat,
    /// Width in pixels, from the header.
    pub width: u32,
    /// Height in pixels, from the header.
    pub height: u32,
    /// Where the picture ends (just after EOI or `IEND`'s CRC); later bytes are not part of it.
    pub end: usize,
    /// Upper bound of the bytes decoding to 8-bit RGB allocates. JPEG: the RGB output and 16-bit
    /// coefficients for every component (a progressive or non-interleaved JPEG holds them for the
    /// whole picture). PNG: the decoded buffer at the file's bit depth and channels, plus the RGB
    /// copy when it is not 8-bit RGB already.
    pub decode_bytes: u64,
}

/// Why an encoded picture is not a whole, decodable JPEG or PNG.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PictureError {
    /// No bytes at all.
    #[error("empty file (0 bytes)")]
    Empty,
    /// Neither a JPEG nor a PNG, nor another known image format.
    #[error("not an image (unrecognised content; JPEG and PNG are supported)")]
    NotAnImage,
    /// Another image format.
    #[error("unsupported image format {0} (JPEG and PNG are supported)")]
    Unsupported(String),
    /// A JPEG that ends before its end-of-image marker.
    #[error("truncated JPEG: no end-of-image marker (EOI) after {len} bytes ({detail})")]
    TruncatedJpeg {
        /// The bytes there are.
        len: usize,
        /// Where it is cut, in words.
        detail: &'static str,
    },
    /// A PNG that ends before its `IEND` chunk.
    #[error("truncated PNG: it ends before its IEND chunk, after {len} bytes")]
    TruncatedPng {
        /// The bytes there are.
        len: usize,
    },
    /// A JPEG whose structure or image data is broken.
    #[error("corrupt JPEG: {0}")]
    CorruptJpeg(String),
    /// A PNG whose structure or image data is broken.
    #[error("corrupt PNG: {0}")]
    CorruptPng(String),
    /// A picture larger than [`DecodeLimits`] allow (refused before decoding).
    #[error("{format} of {width}x{height} pixels is too large to decode here: {reason}")]
    TooLarge {
        /// The format.
        format: PictureFormat,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// Which limit, in words.
        reason: String,
    },
}

impl PictureError {
    /// Whether the picture is only cut short (a file still being written may become whole).
    pub fn is_truncated(&self) -> bool {
        matches!(
            self,
            PictureError::TruncatedJpeg { .. } | PictureError::TruncatedPng { .. }
        )
    }
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Checks that `bytes` hold one whole JPEG or PNG within `limits`, without decoding it.
pub fn check(bytes: &[u8], limits: &DecodeLimits) -> Result<PictureInfo, PictureError> {
    let info = match bytes {
        [] => return Err(PictureError::Empty),
        [0xFF, 0xD8, ..] => walk_jpeg(bytes)?,
        _ if bytes.starts_with(&PNG_SIGNATURE[..4]) => walk_png(bytes)?,
        _ => {
            return Err(match image::guess_format(bytes) {
                Ok(f) => PictureError::Unsupported(format!("{f:?}")),
                Err(_) => PictureError::NotAnImage,
            });
        }
    };
    check_limits(&info, limits)?;
    Ok(info)
}

/// Checks `bytes` ([`check`]) and decodes them as 8-bit RGB.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, PictureError> {
    let info = check(bytes, limits)?;
    let bytes = &bytes[..info.end];
    match info.format {
        PictureFormat::Jpeg => decode_jpeg(bytes, limits),
        PictureFormat::Png => decode_png(bytes, limits),
    }
}

fn check_limits(info: &PictureInfo, limits: &DecodeLimits) -> Result<(), PictureError> {
    let too_large = |reason: String| PictureError::TooLarge {
        format: info.format,
        width: info.width,
        height: info.height,
        reason,
    };
    if info.width > limits.max_width || info.height > limits.max_height {
        return Err(too_large(format!(
            "more than {}x{} pixels",
            limits.max_width, limits.max_height
        )));
    }
    if info.decode_bytes > limits.max_alloc {
        return Err(too_large(format!(
            "decoding needs about {}, more than the limit of {}",
            size(info.decode_bytes),
            size(limits.max_alloc)
        )));
    }
    Ok(())
}

fn size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{} MiB", bytes.div_ceil(MIB))
    } else {
        format!("{bytes} bytes")
    }
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walks a JPEG from its SOI to its EOI (see the module documentation).
fn walk_jpeg(b: &[u8]) -> Result<PictureInfo, PictureError> {
    let truncated = |detail| PictureError::TruncatedJpeg {
        len: b.len(),
        detail,
    };
    const IN_HEADERS: &str = "the file ends in its headers";
    let corrupt = PictureError::CorruptJpeg;
    let mut frame: Option<(u32, u32, u32)> = None;
    let mut scanned = false;
    let mut p = 2;
    loop {
        if p >= b.len() {
            return Err(truncated(if scanned {
                "the file ends between its scans"
            } else {
                IN_HEADERS
            }));
        }
        if b[p] != 0xFF {
            return Err(corrupt(format!(
                "byte {:#04x} at offset {p} where a marker was expected",
                b[p]
            )));
        }
        while p + 1 < b.len() && b[p + 1] == 0xFF {
            p += 1;
        }
        if p + 1 >= b.len() {
            return Err(truncated(IN_HEADERS));
        }
        let marker = b[p + 1];
        match marker {
            0xD9 => {
                let Some((width, height, components)) = frame.filter(|_| scanned) else {
                    return Err(corrupt(format!(
                        "end-of-image marker at offset {p} before any image data"
                    )));
                };
                let pixels = u64::from(width) * u64::from(height);
                return Ok(PictureInfo {
                    format: PictureFormat::Jpeg,
                    width,
                    height,
                    end: p + 2,
                    decode_bytes: pixels * (3 + 2 * u64::from(components)),
                });
            }
            0xD8 => {
                return Err(corrupt(format!(
                    "a new start-of-image marker at offset {p}: the picture before it is cut short"
                )));
            }
            0x00 => {
                return Err(corrupt(format!(
                    "marker 0xff00 at offset {p} outside the image data"
                )));
            }
            0x01 | 0xD0..=0xD7 => {
                p += 2;
                continue;
            }
            _ => {}
        }
        if p + 4 > b.len() {
            return Err(truncated(IN_HEADERS));
        }
        let len = be16(b, p + 2);
        if len < 2 {
            return Err(corrupt(format!(
                "segment 0xff{marker:02x} at offset {p} has length {len}"
            )));
        }
        let body = p + 4;
        let next = p + 2 + len;
        if next > b.len() {
            return Err(truncated(IN_HEADERS));
        }
        let is_frame_header =
            matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame_header {
            if len < 8 {
                return Err(corrupt(format!(
                    "frame header at offset {p} is {len} bytes long"
                )));
            }
            let height = be16(b, body + 1) as u32;
            let width = be16(b, body + 3) as u32;
            let components = u32::from(b[body + 5]);
            if width == 0 || height == 0 || components == 0 {
                return Err(corrupt(format!(
                    "frame header gives a {width}x{height} picture with {components} components"
                )));
            }
            frame = Some((width, height, components));
        }
        p = next;
        if marker == 0xDA {
            if frame.is_none() {
                return Err(corrupt(format!(
                    "image data (start of scan at offset {}) before the frame header",
                    body - 4
                )));
            }
            scanned = true;
            p = entropy_end(b, p).ok_or(truncated("the image data is cut off"))?;
        }
    }
}

/// The offset of the first marker after entropy-coded data starting at `p`, if there is one.
fn entropy_end(b: &[u8], mut p: usize) -> Option<usize> {
    loop {
        p += b.get(p..)?.iter().position(|&x| x == 0xFF)?;
        match *b.get(p + 1)? {
            0x00 | 0xD0..=0xD7 => p += 2,
            0xFF => p += 1,
            _ => return Some(p),
        }
    }
}

/// Walks a PNG's chunks from the signature to `IEND`, checking each CRC.
fn walk_png(b: &[u8]) -> Result<PictureInfo, PictureError> {
    let truncated = PictureError::TruncatedPng { len: b.len() };
    let corrupt = PictureError::CorruptPng;
    if b.len() < PNG_SIGNATURE.len() {
        return Err(truncated);
    }
    if &b[..8] != PNG_SIGNATURE {
        return Err(corrupt(
            "bad signature (was it transferred as text, converting line endings?)".into(),
        ));
    }
    let mut header: Option<(u32, u32, u64)> = None;
    let mut p = 8;
    loop {
        if p + 8 > b.len() {
            return Err(truncated);
        }
        let len = be32(b, p);
        let kind = &b[p + 4..p + 8];
        let name = String::from_utf8_lossy(kind).into_owned();
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(corrupt(format!(
                "invalid chunk type {kind:?} at offset {p}"
            )));
        }
        if len > i32::MAX as u32 {
            return Err(corrupt(format!(
                "chunk {name} at offset {p} claims {len} bytes"
            )));
        }
        let end = p + 12 + len as usize;
        if end > b.len() {
            return Err(truncated);
        }
        let crc = be32(b, end - 4);
        if crc32fast::hash(&b[p + 4..end - 4]) != crc {
            return Err(corrupt(format!(
                "chunk {name} at offset {p} fails its CRC check"
            )));
        }
        let data = &b[p + 8..end - 4];
        match (header, kind) {
            (None, b"IHDR") if data.len() == 13 => header = Some(png_header(data)?),
            (None, _) => {
                return Err(corrupt(format!(
                    "the first chunk is {name}, not a 13-byte IHDR"
                )));
            }
            (Some((width, height, decode_bytes)), b"IEND") => {
                return Ok(PictureInfo {
                    format: PictureFormat::Png,
                    width,
                    height,
                    end,
                    decode_bytes,
                });
            }
            _ => {}
        }
        p = end;
    }
}

/// Width, height and decoding bytes from an `IHDR` chunk's data.
fn png_header(d: &[u8]) -> Result<(u32, u32, u64), PictureError> {
    let (width, height) = (be32(d, 0), be32(d, 4));
    let (depth, colour) = (d[8], d[9]);
    if width == 0 || height == 0 {
        return Err(PictureError::CorruptPng(format!(
            "IHDR gives a {width}x{height} picture"
        )));
    }
    // Palette pictures expand to RGBA when they have transparency.
    let channels: u64 = match colour {
        0 => 1,
        2 => 3,
        3 | 6 => 4,
        4 => 2,
        _ => {
            return Err(PictureError::CorruptPng(format!(
                "IHDR has colour type {colour}"
            )));
        }
    };
    let sample_bytes = if depth == 16 { 2 } else { 1 };
    let pixels = u64::from(width) * u64::from(height);
    let rgb_copy = if colour == 2 && depth == 8 { 0 } else { 3 };
    Ok((width, height, pixels * (channels * sample_bytes + rgb_copy)))
}

fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, PictureError> {
    use zune_core::colorspace::ColorSpace;
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(limits.max_width as usize)
        .set_max_height(limits.max_height as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    let corrupt = PictureError::CorruptJpeg;
    let pixels = decoder.decode().map_err(|e| corrupt(e.to_string()))?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| corrupt("no frame header".into()))?;
    let colours = decoder.output_colorspace();
    RgbImage::from_raw(width as u32, height as u32, pixels).ok_or_else(|| {
        corrupt(format!(
            "its colour layout ({colours:?}) does not convert to RGB"
        ))
    })
}

fn decode_png(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, PictureError> {
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_width);
    image_limits.max_image_height = Some(limits.max_height);
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);
    let img = reader
        .decode()
        .map_err(|e| PictureError::CorruptPng(e.to_string()))?;
    Ok(img.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture() -> RgbImage {
        RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
        })
    }

    fn jpeg() -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&picture())
            .unwrap();
        out
    }

    fn png() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        picture()
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    /// Offset of the first occurrence of `marker` in `bytes`.
    fn find(bytes: &[u8], marker: &[u8]) -> usize {
        bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap()
    }

    #[test]
    fn whole_pictures_decode_like_the_image_crate_does() {
        for bytes in [jpeg(), png()] {
            let info = check(&bytes, &limits()).unwrap();
            assert_eq!((info.width, info.height, info.end), (64, 48, bytes.len()));
            let ours = decode(&bytes, &limits()).unwrap();
            let theirs = image::load_from_memory(&bytes).unwrap().into_rgb8();
            assert_eq!(ours, theirs);
        }
        let grey = image::GrayImage::from_fn(16, 16, |x, _| image::Luma([x as u8 * 16]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut bytes)
            .encode_image(&grey)
            .unwrap();
        let ours = decode(&bytes, &limits()).unwrap();
        assert_eq!(ours, image::load_from_memory(&bytes).unwrap().into_rgb8());
    }

    #[test]
    fn every_cut_of_a_jpeg_is_refused() {
        let bytes = jpeg();
        let sos = find(&bytes, &[0xFF, 0xDA]);
        for len in 1..bytes.len() {
            let err = decode(&bytes[..len], &limits()).unwrap_err();
            if len < 2 {
                assert_eq!(err, PictureError::NotAnImage);
                continue;
            }
            assert!(err.is_truncated(), "{len}: {err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("no end-of-image marker (EOI) after {len} bytes")),
                "{text}"
            );
            // The SOS segment of a 3-component scan is 14 bytes; the image data follows it.
            let cut_in_data = len >= sos + 14;
            assert_eq!(
                text.contains("image data is cut off"),
                cut_in_data,
                "{text}"
            );
        }
    }

    #[test]
    fn corrupt_image_data_the_lenient_decoder_renders_is_refused() {
        // Overwrite 8 bytes of the image data at a series of places; keep the corruptions the
        // structural walk cannot see and the same decoder in its default (lenient) mode renders.
        let pic = RgbImage::from_fn(256, 192, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, (x * y * 2) as u8])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&pic)
            .unwrap();
        let data = find(&bytes, &[0xFF, 0xDA]) + 14..bytes.len() - 2;
        let lenient = |b: &[u8]| {
            zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(b))
                .decode()
                .is_ok()
        };
        let (mut rendered, mut refused) = (0, 0);
        for i in 0..200 {
            let at = data.start + (i * 7919) % (data.len() - 8);
            let mut c = bytes.clone();
            for (k, b) in c[at..at + 8].iter_mut().enumerate() {
                *b = (i * 31 + k * 17) as u8 & 0x7F;
            }
            if check(&c, &limits()).is_err() || !lenient(&c) {
                continue;
            }
            rendered += 1;
            if let Err(e) = decode(&c, &limits()) {
                assert!(matches!(e, PictureError::CorruptJpeg(_)), "{e}");
                refused += 1;
            }
        }
        assert!(
            rendered > 100 && refused > 0,
            "{rendered} rendered, {refused} refused"
        );
    }

    #[test]
    fn header_only_and_empty_inputs_say_what_is_wrong() {
        let bytes = jpeg();
        let sos = find(&bytes, &[0xFF, 0xDA]);
        let headers = &bytes[..sos];
        let err = check(headers, &limits()).unwrap_err().to_string();
        assert!(err.contains("ends in its headers"), "{err}");
        assert_eq!(
            check(&[], &limits()).unwrap_err().to_string(),
            "empty file (0 bytes)"
        );
        let mut eoi_early = headers.to_vec();
        eoi_early.extend([0xFF, 0xD9]);
        let err = check(&eoi_early, &limits()).unwrap_err().to_string();
        assert!(err.contains("before any image data"), "{err}");
        assert_eq!(
            check(b"hello", &limits()).unwrap_err(),
            PictureError::NotAnImage
        );
        assert!(matches!(
            check(b"GIF89a\x01\x00\x01\x00", &limits()).unwrap_err(),
            PictureError::Unsupported(_)
        ));
    }

    #[test]
    fn a_jpeg_with_a_new_picture_inside_is_corrupt() {
        let bytes = jpeg();
        let in_data = (find(&bytes, &[0xFF, 0xDA]) + 14 + bytes.len()) / 2;
        let mut two = bytes[..in_data].to_vec();
        two.extend(&bytes);
        let err = check(&two, &limits()).unwrap_err().to_string();
        assert!(err.contains("new start-of-image marker"), "{err}");
    }

    #[test]
    fn bytes_after_the_end_are_ignored() {
        let mut bytes = jpeg();
        let len = bytes.len();
        bytes.extend([0u8; 100]);
        bytes.extend(jpeg());
        assert_eq!(check(&bytes, &limits()).unwrap().end, len);
        assert_eq!(
            decode(&bytes, &limits()).unwrap(),
            decode(&jpeg(), &limits()).unwrap()
        );
        let mut bytes = png();
        bytes.extend(b"trailer");
        assert_eq!(decode(&bytes, &limits()).unwrap().dimensions(), (64, 48));
    }

    #[test]
    fn every_cut_of_a_png_is_refused_and_chunks_are_crc_checked() {
        let bytes = png();
        for len in 1..bytes.len() {
            let err = decode(&bytes[..len], &limits()).unwrap_err();
            if len < 4 {
                assert_eq!(err, PictureError::NotAnImage, "{len}");
                continue;
            }
            assert_eq!(err, PictureError::TruncatedPng { len }, "{len}");
            assert!(err.to_string().contains("ends before its IEND chunk"));
        }
        let mut flipped = bytes.clone();
        let idat = find(&bytes, b"IDAT");
        flipped[idat + 6] ^= 0x01;
        let err = check(&flipped, &limits()).unwrap_err().to_string();
        assert!(err.contains("IDAT") && err.contains("CRC"), "{err}");
    }

    /// A PNG that is only an IHDR claiming `width`×`height` (and an IEND).
    fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        let mut v = PNG_SIGNATURE.to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            v.extend((data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend(data);
            v.extend(&body);
            v.extend(crc32fast::hash(&body).to_be_bytes());
        };
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IEND", &[]);
        v
    }

    /// A JPEG whose frame header claims `width`×`height`, with a scan of a few bytes.
    fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = jpeg();
        let sof = find(&bytes, &[0xFF, 0xC0]);
        bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        bytes
    }

    #[test]
    fn huge_headers_are_refused_before_decoding() {
        for bytes in [
            png_header_only(60_000, 60_000),
            jpeg_claiming(60_000, 60_000),
        ] {
            let err = decode(&bytes, &limits()).unwrap_err();
            assert!(matches!(err, PictureError::TooLarge { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("60000x60000") && text.contains("more than 8192x8192"),
                "{text}"
            );
        }
        // Within the sides, but more memory than allowed: 8192×8000 colour needs 563 MiB.
        let err = decode(&jpeg_claiming(8192, 8000), &limits()).unwrap_err();
        assert!(
            err.to_string()
                .contains("needs about 563 MiB, more than the limit of 512 MiB"),
            "{err}"
        );
        let small = DecodeLimits {
            max_alloc: 10_000,
            ..limits()
        };
        let err = decode(&jpeg(), &small).unwrap_err().to_string();
        assert!(
            err.contains("needs about 27648 bytes, more than the limit of 10000 bytes"),
            "{err}"
        );
    }
}
