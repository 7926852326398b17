//! End-to-end throughput of the device program (`edge bench --pipeline`): a concatenated MJPEG
//! stream through the same path as `edge run --source -` — splitting, decoding, quality gate,
//! preprocessing, inference, decision, the SQLite commit of every row — measured from the first
//! byte to the last committed row.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;

use super::{Device, RunError, open_outputs};
use crate::config::RunConfig;
use crate::source;

/// One stream's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineBench {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames in the stream.
    pub frames: usize,
    /// Rows committed to the database (equals `frames` unless something failed).
    pub recorded: u64,
    /// Mean size of one JPEG frame, KiB.
    pub jpeg_kib: f64,
    /// Seconds from the first byte to the last committed row.
    pub seconds: f64,
    /// Committed rows per second.
    pub fps: f64,
}

/// Streams `frames` synthetic smear JPEGs of `width`×`height` (eight distinct pictures, cycled)
/// through a device built from `config` (its model, thresholds and database; model loading and
/// the start-up checks are not timed).
pub fn pipeline(
    config: &RunConfig,
    width: u32,
    height: u32,
    frames: usize,
) -> Result<PipelineBench, RunError> {
    let jpegs: Vec<Vec<u8>> = (0..8)
        .map(|seed| {
            let img = crate::quality::synthetic_smear(width, height, seed);
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
                .encode_image(&img)
                .map(|()| out)
                .map_err(|e| RunError::Source(format!("cannot encode a test frame: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let stream: Vec<u8> = (0..frames)
        .flat_map(|i| jpegs[i % jpegs.len()].iter().copied())
        .collect();
    let jpeg_kib = stream.len() as f64 / frames.max(1) as f64 / 1024.0;

    let outputs = open_outputs(config, None)?;
    let device = Device::start(config.clone(), outputs)?;
    let (reader, mut writer) =
        std::io::pipe().map_err(|e| RunError::Source(format!("cannot make a pipe: {e}")))?;
    let started = Instant::now();
    let feeder = std::thread::spawn(move || {
        // The pipe closes when the thread ends: the end of the stream.
        let _ = writer.write_all(&stream);
    });
    let handle = source::open_reader(reader, "stdin", &config.source.options)
        .map_err(|e| RunError::Source(e.to_string()))?;
    let summary = device.run_source(handle, &AtomicBool::new(false))?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = feeder.join();
    if let Some(fault) = summary.fault {
        return Err(RunError::Source(fault));
    }
    Ok(PipelineBench {
        width,
        height,
        frames,
        recorded: summary.recorded,
        jpeg_kib,
        seconds,
        fps: summary.recorded as f64 / seconds,
    })
}
