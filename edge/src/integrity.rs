//! Model integrity: the device runs only the model file it was configured for.
//!
//! Two independent checks, both optional and both fatal at start-up when configured:
//! * a pinned SHA-256 digest per model file name (`[model.sha256]` in the config);
//! * an Ed25519 signature of the file's bytes in `<file>.sig` (64 raw bytes, or 128 hex
//!   digits), checked against the configured public key. `openssl pkeyutl -sign -rawin`
//!   with an Ed25519 key writes exactly such a raw signature. It is checked with
//!   `verify_strict`, which also refuses weak keys and non-canonical signatures.
//!
//! The file is read once ([`verify_model`]): the bytes that were hashed and verified are the
//! bytes the model is built from ([`VerifiedModel::classifier`]), so a file replaced between the
//! check and the load can never be run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, VerifyingKey};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::onnx::{ContractOverrides, ModelError};
use sha2::{Digest, Sha256};

/// The model file is not the one the device was configured for.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Digests are pinned, but not for this file.
    #[error(
        "{path}: no pinned sha256 for this file name in [model.sha256]; refusing to run an unpinned model"
    )]
    NotPinned {
        /// The file.
        path: PathBuf,
    },
    /// The digest differs from the pinned one.
    #[error(
        "{path}: sha256 is {actual}, but the config pins {expected}; refusing to run a model that is not the configured one"
    )]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// Pinned digest.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// The configured public key is malformed.
    #[error("model.public_key: {0}")]
    BadKey(String),
    /// The signature is missing, malformed or does not verify.
    #[error("{path}: {problem}; refusing to run an unsigned or altered model")]
    Signature {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, IntegrityError> {
    let bytes = std::fs::read(path).map_err(|source| IntegrityError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// A model file's bytes, read once and checked against the pins and the signature.
#[derive(Debug)]
pub struct VerifiedModel {
    path: PathBuf,
    bytes: Vec<u8>,
    sha256: String,
}

impl VerifiedModel {
    /// The file the bytes were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The verified bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Their SHA-256, lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The model built from exactly the verified bytes (the file is not read again).
    pub fn classifier(&self, overrides: &ContractOverrides) -> Result<OnnxClassifier, ModelError> {
        OnnxClassifier::from_bytes(&self.path, &self.bytes, overrides)
    }
}

/// Reads `path` once and checks those bytes against the pins (when any) and the signature
/// (when a key is given) with [`verify_bytes`].
pub fn verify_model(
    path: &Path,
    pins: &BTreeMap<String, String>,
    public_key: Option<&str>,
) -> Result<VerifiedModel, IntegrityError> {
    let bytes = std::fs::read(path).map_err(|source| IntegrityError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let sha256 = verify_bytes(path, &bytes, pins, public_key)?;
    Ok(VerifiedModel {
        path: path.to_path_buf(),
        bytes,
        sha256,
    })
}

/// Checks `bytes`, the content of the model file `path`, against the pin of `path`'s file name
/// (when pins are given) and against `<path>.sig` (when a key is given); returns their SHA-256.
pub fn verify_bytes(
    path: &Path,
    bytes: &[u8],
    pins: &BTreeMap<String, String>,
    public_key: Option<&str>,
) -> Result<String, IntegrityError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if !pins.is_empty() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let expected =
            name.and_then(|n| pins.get(&n))
                .ok_or_else(|| IntegrityError::NotPinned {
                    path: path.to_path_buf(),
                })?;
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(IntegrityError::DigestMismatch {
                path: path.to_path_buf(),
                expected: expected.to_lowercase(),
                actual,
            });
        }
    }
    if let Some(key) = public_key {
        let key = parse_key(key)?;
        let sig_path = signature_path(path);
        let problem = |problem: String| IntegrityError::Signature {
            path: path.to_path_buf(),
            problem,
        };
        let raw = std::fs::read(&sig_path)
            .map_err(|e| problem(format!("signature {}: {e}", sig_path.display())))?;
        let sig = parse_signature(&raw).ok_or_else(|| {
            problem(format!(
                "{} is not a 64-byte Ed25519 signature",
                sig_path.display()
            ))
        })?;
        key.verify_strict(bytes, &sig)
            .map_err(|_| problem("the Ed25519 signature does not match the file".into()))?;
    }
    Ok(actual)
}

/// Where the signature of `model` is looked for: `<model>.sig`.
pub fn signature_path(model: &Path) -> PathBuf {
    let mut name = model.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn parse_key(hex_key: &str) -> Result<VerifyingKey, IntegrityError> {
    let bytes =
        hex::decode(hex_key.trim()).map_err(|e| IntegrityError::BadKey(format!("not hex: {e}")))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        IntegrityError::BadKey(format!("expected 32 bytes, got {}", b.len()))
    })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| IntegrityError::BadKey(e.to_string()))
}

fn parse_signature(raw: &[u8]) -> Option<Signature> {
    if let Ok(bytes) = <[u8; 64]>::try_from(raw) {
        return Some(Signature::from_bytes(&bytes));
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    let bytes: [u8; 64] = hex::decode(text).ok()?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn model(dir: &Path) -> PathBuf {
        let path = dir.join("m.onnx");
        std::fs::write(&path, b"not really a model, but bytes to protect").unwrap();
        path
    }

    #[test]
    fn pins_accept_the_right_digest_and_refuse_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = model(dir.path());
        let digest = sha256_file(&path).unwrap();
        let mut pins = BTreeMap::new();
        assert_eq!(verify_model(&path, &pins, None).unwrap().sha256(), digest);
        pins.insert("m.onnx".to_string(), digest.to_uppercase());
        assert_eq!(verify_model(&path, &pins, None).unwrap().sha256(), digest);
        pins.insert("m.onnx".to_string(), "0".repeat(64));
        let err = verify_model(&path, &pins, None).unwrap_err().to_string();
        assert!(err.contains("m.onnx") && err.contains(&digest), "{err}");
        pins.clear();
        pins.insert("other.onnx".to_string(), digest);
        assert!(matches!(
            verify_model(&path, &pins, None),
            Err(IntegrityError::NotPinned { .. })
        ));
    }

    /// A valid two-class model labelled `labels`.
    fn onnx_model(path: &Path, labels: [&str; 2]) {
        use leukoscope_model::contract::ModelContract;
        use leukoscope_model::onnx::graph::{GraphBuilder, value_info};
        use prost::Message;
        let mut g = GraphBuilder::new();
        let pooled = g.node("GlobalAveragePool", &["image"], vec![], None);
        let flat = g.flatten(&pooled);
        let logits = g.linear(&flat, (3, 2, vec![1.0; 6]), vec![0.0, 0.0], Some("logits"));
        g.softmax(&logits, "probabilities");
        let contract = ModelContract::new(labels.map(String::from).to_vec(), 8);
        let model = g.finish(
            value_info("image", &[None, Some(3), Some(8), Some(8)]),
            vec![value_info("probabilities", &[None, Some(2)])],
            contract.to_metadata(),
            "integrity-test",
        );
        std::fs::write(path, model.encode_to_vec()).unwrap();
    }

    #[test]
    fn the_model_is_built_from_the_verified_bytes_not_from_the_file_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        onnx_model(&path, ["pinned", "model"]);
        let pins = BTreeMap::from([("m.onnx".to_string(), sha256_file(&path).unwrap())]);
        let verified = verify_model(&path, &pins, None).unwrap();
        assert_eq!(verified.bytes(), std::fs::read(&path).unwrap());
        assert_eq!(
            verified.sha256(),
            hex::encode(Sha256::digest(verified.bytes()))
        );
        // The file is replaced after the check, before the load.
        onnx_model(&path, ["swapped", "model"]);
        assert!(verify_model(&path, &pins, None).is_err());
        let model = verified.classifier(&ContractOverrides::default()).unwrap();
        assert_eq!(model.contract().labels, ["pinned", "model"]);
        assert_eq!(model.path(), path);
    }

    #[test]
    fn signatures_verify_in_raw_and_hex_and_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = model(dir.path());
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = hex::encode(key.verifying_key().to_bytes());
        let sig = key.sign(&std::fs::read(&path).unwrap()).to_bytes();
        let none = BTreeMap::new();

        let err = verify_model(&path, &none, Some(&public))
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.onnx.sig"), "{err}");

        std::fs::write(signature_path(&path), sig).unwrap();
        verify_model(&path, &none, Some(&public)).unwrap();
        std::fs::write(signature_path(&path), format!("{}\n", hex::encode(sig))).unwrap();
        verify_model(&path, &none, Some(&public)).unwrap();

        std::fs::write(&path, b"not really a model, but bytes to protect!").unwrap();
        let err = verify_model(&path, &none, Some(&public))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match"), "{err}");

        // The identity point as the key with R = identity, s = 0 "signs" every file under plain
        // `verify`; `verify_strict` refuses such a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(&identity);
        std::fs::write(signature_path(&path), forged).unwrap();
        let err = verify_model(&path, &none, Some(&hex::encode(identity)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match"), "{err}");
        std::fs::write(signature_path(&path), sig).unwrap();

        let other = hex::encode(SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes());
        assert!(verify_model(&path, &none, Some(&other)).is_err());
        assert!(matches!(
            verify_model(&path, &none, Some("zz")),
            Err(IntegrityError::BadKey(_))
        ));
    }
}
