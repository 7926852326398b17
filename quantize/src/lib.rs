//! Post-training static quantization of leukoscope's ONNX classifiers: f32 → int8.
//!
//! The pipeline: read the exported f32 model and its contract ([`model_file`]), run it in tract on
//! calibration pictures prepared by `leukoscope_model::preprocess` with every intermediate tensor exposed
//! ([`calibrate`]), turn the collected histograms into activation ranges ([`ranges`]: min/max,
//! percentile or entropy), rewrite the graph into standard int8 ONNX operators ([`rewrite`]),
//! then measure what was gained and lost ([`sqnr`], [`report`], [`profile`]).

pub mod calibrate;
pub mod error;
pub mod model_file;
pub mod pipeline;
pub mod profile;
pub mod ranges;
pub mod report;
pub mod rewrite;
pub mod sqnr;

pub use error::QuantizeError;
