//! Which frames show the same microscope field.
//!
//! The slide verdict counts **fields** (positions of the slide under the objective), not frames:
//! a field held under the objective for 60 camera frames is one field. [`FieldTracker`] gives each
//! frame its field number, or none while the stage moves.
//!
//! # Camera and stream sources ([`FieldMode::Motion`])
//! Each frame is reduced to a **signature**: its luma, area-averaged to at most
//! [`SIGNATURE_SIDE`] px on the long side (sensor noise averages out; 1–2 px of jitter become a
//! fraction of a signature pixel), minus its local mean (a 7×7 box: lamp gradients and vignetting
//! go), scaled to zero mean and unit energy (exposure flicker goes). Two signatures are compared
//! by **phase correlation** (the translation between them) and the normalized correlation of
//! their overlap at that translation ([`Match`]).
//!
//! * A frame is **still** when it matches the previous frame within
//!   [`FieldConfig::still_max_shift`] with a correlation of at least
//!   [`FieldConfig::still_threshold`].
//! * A frame **stays in the current field** when it matches the field's first frame with a
//!   correlation of at least [`FieldConfig::same_threshold`] over an overlap of at least
//!   [`FieldConfig::min_overlap`] of the frame (so re-centring a cell is not a new field).
//! * Otherwise it belongs to no field until [`FieldConfig::settle_frames`] frames in a row have
//!   been still: the frame that completes them starts a new field (motion-blurred frames between
//!   fields count for no field). A new field that matches an earlier field of the session takes
//!   that field's number back: going back to a field does not count it twice.
//!
//! The defaults come from `edge fields` on the pictures at hand (README "Fields"): on 274
//! Taleqani pictures (every 10th of the dataset), the same field under noise, jitter, flicker
//! and JPEG compression correlates at 0.83 or more (1st percentile), views moved by 10–40 % of
//! the field at 0.84 or more once aligned, and other fields at 0.19 or less (99th percentile;
//! 0.53 on the C-NMC cell crops, whose black backgrounds look alike): `same_threshold` 0.6 sits
//! between them. A frame 10 % away from
//! the previous one is never still; jitter of ±2 px always is.
//!
//! # Files and watched folders ([`FieldMode::EachPicture`])
//! Each picture is a field of its own, except that a picture byte- or pixel-identical to an
//! earlier one of the session is that earlier picture's field again.

mod measure;
mod signature;

use std::collections::HashMap;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use measure::{FieldMeasurement, measure_pictures};
use signature::{Analysed, Correlator};
pub use signature::{Match, SIGNATURE_SIDE, Signature, compare};

/// How fields are told apart (config section `[fields]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldConfig {
    /// Correlation (0..1) with the current field's first frame needed to stay in that field.
    pub same_threshold: f32,
    /// Share (0..1) of the frame that must overlap the current field's first frame to stay in it.
    pub min_overlap: f32,
    /// Correlation (0..1) with the previous frame for a frame to be still.
    pub still_threshold: f32,
    /// Largest translation from the previous frame, as a share of the signature's long side
    /// (0..1), for a frame to be still.
    pub still_max_shift: f32,
    /// Still frames in a row needed before a new field starts.
    pub settle_frames: u32,
}

impl Default for FieldConfig {
    fn default() -> Self {
        FieldConfig {
            same_threshold: 0.6,
            min_overlap: 0.5,
            still_threshold: 0.7,
            still_max_shift: 0.04,
            settle_frames: 1,
        }
    }
}

impl FieldConfig {
    /// Checks the values; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("fields.same_threshold", self.same_threshold),
            ("fields.min_overlap", self.min_overlap),
            ("fields.still_threshold", self.still_threshold),
            ("fields.still_max_shift", self.still_max_shift),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be within 0..1, got {v}"));
            }
        }
        if self.settle_frames == 0 {
            return Err("fields.settle_frames must be at least 1".into());
        }
        Ok(())
    }
}

/// How a source's frames map to fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldMode {
    /// A camera or a stream: fields from the picture's motion (see the module documentation).
    Motion,
    /// Files or a watched folder: each distinct picture is a field.
    EachPicture,
}

impl FieldMode {
    /// The mode of a source: pictures for files and watched folders, motion otherwise.
    pub fn of_source(spec: &crate::source::SourceSpec) -> Self {
        use crate::source::SourceSpec;
        match spec {
            SourceSpec::Files(_) | SourceSpec::Watch { .. } => FieldMode::EachPicture,
            SourceSpec::V4l2 { .. } | SourceSpec::Stdin => FieldMode::Motion,
        }
    }
}

/// Gives each frame of a session its field number (1, 2, …), or none between fields.
pub struct FieldTracker {
    config: FieldConfig,
    mode: FieldMode,
    correlator: Option<Correlator>,
    previous: Option<Analysed>,
    still_run: u32,
    current: Option<u32>,
    /// The first frame of each field, by field number - 1.
    references: Vec<Analysed>,
    /// Each-picture mode: field numbers by byte and pixel digest.
    seen: HashMap<String, u32>,
    fields: u32,
}

impl FieldTracker {
    /// A tracker for a new session.
    pub fn new(config: FieldConfig, mode: FieldMode) -> Self {
        FieldTracker {
            config,
            mode,
            correlator: None,
            previous: None,
            still_run: 0,
            current: None,
            references: Vec::new(),
            seen: HashMap::new(),
            fields: 0,
        }
    }

    /// Fields started so far.
    pub fn fields(&self) -> u32 {
        self.fields
    }

    /// The field of the next frame of the session: `image` as decoded, `sha256` the digest of
    /// the frame as received.
    pub fn place(&mut self, image: &RgbImage, sha256: &str) -> Option<u32> {
        match self.mode {
            FieldMode::EachPicture => Some(self.place_picture(image, sha256)),
            FieldMode::Motion => self.place_moving(Signature::of(image)),
        }
    }

    fn place_picture(&mut self, image: &RgbImage, sha256: &str) -> u32 {
        let digest = hex::encode(Sha256::digest(image.as_raw()));
        let pixels = format!("px:{}x{}:{digest}", image.width(), image.height());
        let bytes = format!("bytes:{sha256}");
        let field = match self.seen.get(&bytes).or_else(|| self.seen.get(&pixels)) {
            Some(&field) => field,
            None => {
                self.fields += 1;
                self.fields
            }
        };
        self.seen.insert(bytes, field);
        self.seen.insert(pixels, field);
        field
    }

    fn place_moving(&mut self, signature: Signature) -> Option<u32> {
        let correlator = match &mut self.correlator {
            Some(c) if c.fits(&signature) => c,
            slot => {
                // Another frame size: nothing seen so far can be compared with it.
                self.previous = None;
                slot.insert(Correlator::for_signature(&signature))
            }
        };
        let frame = correlator.analyse(signature);
        let comparable = |a: &Analysed| a.signature.comparable(&frame.signature);
        let still = self
            .previous
            .as_ref()
            .filter(|p| comparable(p))
            .is_some_and(|p| {
                let m = correlator.compare(p, &frame);
                m.correlation >= self.config.still_threshold
                    && m.shift_share() <= self.config.still_max_shift
            });
        self.still_run = if still { self.still_run + 1 } else { 0 };
        let config = &self.config;
        let mut same_field = |reference: &Analysed| {
            comparable(reference) && {
                let m = correlator.compare(reference, &frame);
                m.correlation >= config.same_threshold && m.overlap >= config.min_overlap
            }
        };
        let placed = if let Some(current) = self
            .current
            .filter(|&c| same_field(&self.references[c as usize - 1]))
        {
            Some(current)
        } else if self.still_run < self.config.settle_frames {
            None
        } else if let Some(i) = (0..self.references.len())
            .filter(|&i| Some(i as u32 + 1) != self.current)
            .find(|&i| same_field(&self.references[i]))
        {
            // Back to an earlier field: it keeps its number.
            self.current = Some(i as u32 + 1);
            self.current
        } else {
            self.fields += 1;
            self.current = Some(self.fields);
            self.references.push(frame.clone());
            self.current
        };
        self.previous = Some(frame);
        placed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A synthetic smear field: pale background, dark round cells at places drawn from `seed`,
    /// seen through a window moved by `(dx, dy)` px, with sensor noise `noise` and gain `gain`.
    pub(crate) fn field(seed: u64, dx: i32, dy: i32, noise: f32, gain: f32) -> RgbImage {
        let mut rng = leukoscope_model::seeded::SplitMix64::new(seed);
        let cells: Vec<(f32, f32, f32)> = (0..40)
            .map(|_| {
                (
                    rng.unit() * 400.0,
                    rng.unit() * 300.0,
                    6.0 + rng.unit() * 10.0,
                )
            })
            .collect();
        let mut noise_rng =
            leukoscope_model::seeded::SplitMix64::new(seed ^ 0x9e37 ^ (dx as u64) << 8);
        RgbImage::from_fn(320, 240, |x, y| {
            let (fx, fy) = ((x as i32 + dx + 40) as f32, (y as i32 + dy + 30) as f32);
            let inside = cells
                .iter()
                .any(|&(cx, cy, r)| (fx - cx).powi(2) + (fy - cy).powi(2) < r * r);
            let base = if inside { 90.0 } else { 220.0 };
            let mut v = |b: f32| {
                (b * gain + (noise_rng.unit() - 0.5) * 2.0 * noise).clamp(0.0, 255.0) as u8
            };
            Rgb([v(base), v(base * 0.8), v(base * 0.95)])
        })
    }

    #[test]
    fn a_noisy_jittery_flickering_field_is_one_field() {
        let mut t = FieldTracker::new(FieldConfig::default(), FieldMode::Motion);
        let placed: Vec<Option<u32>> = (0..30)
            .map(|i| {
                let j = (i % 5) - 2;
                let gain = 1.0 + 0.08 * ((i % 3) as f32 - 1.0);
                t.place(&field(7, j, -j, 12.0, gain), "")
            })
            .collect();
        assert_eq!(placed[0], None, "the first frame has not been still yet");
        assert!(placed[1..].iter().all(|&f| f == Some(1)), "{placed:?}");
        assert_eq!(t.fields(), 1);
    }

    #[test]
    fn distinct_fields_are_counted_and_a_revisited_one_keeps_its_number() {
        let mut t = FieldTracker::new(FieldConfig::default(), FieldMode::Motion);
        let mut seq = Vec::new();
        for seed in [1, 2, 3, 1] {
            for _ in 0..3 {
                seq.push(t.place(&field(seed, 0, 0, 8.0, 1.0), ""));
            }
        }
        assert_eq!(
            seq,
            [
                None,
                Some(1),
                Some(1),
                None,
                Some(2),
                Some(2),
                None,
                Some(3),
                Some(3),
                None
            ]
            .into_iter()
            .chain([Some(1), Some(1)])
            .collect::<Vec<_>>()
        );
        assert_eq!(t.fields(), 3);
    }

    #[test]
    fn a_small_move_stays_in_the_field_and_a_large_one_starts_a_new_one() {
        let mut t = FieldTracker::new(FieldConfig::default(), FieldMode::Motion);
        t.place(&field(4, 0, 0, 5.0, 1.0), "");
        assert_eq!(t.place(&field(4, 0, 0, 5.0, 1.0), ""), Some(1));
        // A quarter of the frame: the same cells, re-centred.
        assert_eq!(t.place(&field(4, 60, 20, 5.0, 1.0), ""), Some(1));
        // Three quarters of the frame away: mostly new cells (moving, then still).
        assert_eq!(t.place(&field(4, 240, 0, 5.0, 1.0), ""), None);
        assert_eq!(t.place(&field(4, 240, 0, 5.0, 1.0), ""), Some(2));
    }

    #[test]
    fn phase_correlation_finds_the_translation() {
        let a = Signature::of(&field(9, 0, 0, 0.0, 1.0));
        let b = Signature::of(&field(9, 40, -20, 0.0, 1.0));
        let m = compare(&a, &b).unwrap();
        // 40 px and -20 px of 320 px → 8 and -4 signature pixels (the frame moves the other way).
        assert_eq!(m.shift, (-8, 4), "{m:?}");
        assert!(m.correlation > 0.8, "{m:?}");
        let other = Signature::of(&field(10, 0, 0, 0.0, 1.0));
        assert!(compare(&a, &other).unwrap().correlation < 0.5);
    }

    #[test]
    fn pictures_are_fields_unless_identical() {
        let mut t = FieldTracker::new(FieldConfig::default(), FieldMode::EachPicture);
        let a = field(1, 0, 0, 0.0, 1.0);
        let b = field(2, 0, 0, 0.0, 1.0);
        assert_eq!(t.place(&a, "aa"), Some(1));
        assert_eq!(t.place(&b, "bb"), Some(2));
        // The same bytes again, and the same pixels in another encoding.
        assert_eq!(t.place(&a, "aa"), Some(1));
        assert_eq!(t.place(&b, "cc"), Some(2));
        assert_eq!(t.fields(), 2);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let bad = FieldConfig {
            min_overlap: 1.5,
            ..FieldConfig::default()
        };
        assert!(bad.check().unwrap_err().contains("fields.min_overlap"));
        let zero = FieldConfig {
            settle_frames: 0,
            ..FieldConfig::default()
        };
        assert!(zero.check().unwrap_err().contains("settle_frames"));
    }
}
