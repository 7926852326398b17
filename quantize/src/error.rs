//! What can go wrong while quantizing, each naming the file or folder and the problem.

use std::path::PathBuf;

use thiserror::Error;

/// Why a model could not be quantized, evaluated or benchmarked.
#[derive(Debug, Error)]
pub enum QuantizeError {
    /// A file or folder cannot be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// The model file is not ONNX (or is truncated).
    #[error("{}: not an ONNX model ({reason})", path.display())]
    NotOnnx {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The model already holds quantized operators or integer weights.
    #[error("{}: already quantized ({reason}); give the f32 model exported by `trainer export`", path.display())]
    AlreadyQuantized {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The model lacks the leukoscope contract metadata (or it is malformed).
    #[error("{}: {reason} (the quantizer needs the contract metadata `trainer export` writes)", path.display())]
    Contract {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The graph holds something the quantizer does not handle.
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not handled.
        reason: String,
    },
    /// The calibration or evaluation folder cannot be used.
    #[error("{}: {reason}", path.display())]
    Data {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An option is out of range or names something the model does not have.
    #[error("{0}")]
    Option(String),
    /// tract cannot load or run the graph.
    #[error("{}: tract cannot run this graph: {reason}", path.display())]
    Engine {
        /// The file.
        path: PathBuf,
        /// tract's message.
        reason: String,
    },
}

impl From<leukoscope_model::onnx::ModelError> for QuantizeError {
    fn from(e: leukoscope_model::onnx::ModelError) -> Self {
        use leukoscope_model::onnx::ModelError as M;
        match e {
            M::Read { path, reason } => QuantizeError::Io { path, reason },
            M::NotOnnx { path, reason } => QuantizeError::NotOnnx { path, reason },
            M::Contract { path, reason } => QuantizeError::Contract { path, reason },
            M::Engine { path, reason } => QuantizeError::Engine { path, reason },
        }
    }
}
