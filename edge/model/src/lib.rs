//! leukoscope's model: everything the trainer, the quantizer and the device program share.
//!
//! This is the one place where a picture becomes a model input: all three call
//! [`preprocess::image_to_input`] with a [`contract::ModelContract`], so they can never disagree
//! on size, colour order or normalization. A model file is read by one loader
//! ([`onnx::OnnxFile`]) and written by one graph builder ([`onnx::graph`]); a training split is
//! read and written by one manifest reader ([`manifest`]). Files that must survive a power cut
//! whole (checkpoints, exported models, kept pictures) are written by [`durable`]. The metrics
//! and the evaluation report live here too, so `trainer evaluate` and `edge evaluate` produce
//! the same numbers from the same code — including the figures at the device's operating point
//! ([`operating_point`], [`calibration`], [`slide_simulation`]), which apply the device's own
//! screening rule (`leukoscope-screening`).
//!
//! The device program (camera, quality gate, decisions, audit database) is the `edge` package;
//! nothing here depends on it.

pub mod bench;
pub mod calibration;
pub mod classifier;
pub mod colour;
pub mod contract;
pub mod durable;
pub mod evaluate;
pub mod evaluation_report;
pub mod familiarity;
pub mod images;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod onnx;
pub mod operating_point;
pub mod picture;
pub mod preprocess;
pub mod scale;
pub mod seeded;
pub mod shift;
pub mod slide_simulation;
pub mod variant;
