//! leukoscope on the device: the program a technician runs beside the microscope.
//!
//! Frames come from a [`source`] (camera, MJPEG stream, watched folder, files), pass the
//! [`quality`] gate, are given their microscope field ([`fields`]), are classified by the model
//! (`leukoscope-model`), become a frame, field and slide decision (`leukoscope-screening`), are
//! committed to the audit [`store`] (with [`flagged`] pictures kept) and only
//! then are shown on the panel and sent on the serial line (`hardware`). [`run`] is the device
//! program that wires these together; [`config`] its settings; [`model_search`] where it finds
//! its model; [`integrity`] the model checks at start; [`check`] the deployment check
//! (`edge check`); [`calibrate`] the camera's pixel size (`edge calibrate`); [`fleet`] forwards
//! results to an MQTT broker and collects them from many kits; [`classify`] and [`audit`] the
//! `edge classify`, `sessions`, `export` and `report`
//! commands.

pub mod acceptance;
pub mod audit;
pub mod calibrate;
pub mod check;
pub mod classify;
pub mod config;
pub mod fields;
pub mod flagged;
pub mod fleet;
pub mod integrity;
pub mod model_search;
pub mod quality;
pub mod run;
pub mod shift_check;
pub mod source;
pub mod store;
