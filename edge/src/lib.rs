//! leukoscope on the device, and the model contract shared by every crate.
//!
//! This library is the one place where a picture becomes a model input: the trainer, the
//! quantizer and the device program all call [`preprocess::image_to_input`] with a
//! [`contract::ModelContract`], so the three can never disagree on size, colour order or
//! normalization. The metrics and the evaluation report live here too, so `trainer evaluate` and
//! `edge evaluate` produce the same numbers from the same code.

#[cfg(feature = "device")]
pub mod audit;
pub mod bench;
pub mod classify;
#[cfg(feature = "device")]
pub mod config;
pub mod contract;
pub mod decision;
pub mod evaluate;
#[cfg(feature = "device")]
pub mod flagged;
#[cfg(feature = "device")]
pub mod integrity;
pub mod metrics;
pub mod model;
pub mod preprocess;
pub mod quality;
pub mod report;
#[cfg(feature = "device")]
pub mod run;
pub mod source;
#[cfg(feature = "device")]
pub mod store;
pub mod variant;
