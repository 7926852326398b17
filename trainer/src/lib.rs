//! leukoscope's trainer: MobileNetV2 and the seed paper's compact CNN, trained with burn on a
//! labeled smear folder, evaluated like a clinical study.
//!
//! Layout (as in burn's examples): [`model`] the architectures, [`data`] the dataset, split,
//! augmentation and batches, [`train`] the training loop, [`evaluate`] inference and the report,
//! [`pretrained`] torchvision weights, [`import`] weights from a leukoscope ONNX file (fine-tuning
//! a shipped model), [`average`] stochastic weight averaging, [`bench`] throughput, [`uncertainty`] temperature
//! scaling and the unfamiliarity score written into an exported file. Pictures
//! become model inputs only through `leukoscope_model::preprocess`, the same code the device runs.

pub mod average;
pub mod backend;
pub mod bench;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod import;
pub mod model;
pub mod optim;
pub mod pretrained;
pub mod progress;
pub mod run;
pub mod train;
pub mod uncertainty;
