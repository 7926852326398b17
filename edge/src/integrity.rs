//! Model integrity: the device runs only the model file it was configured for.
//!
//! Two independent checks, both optional and both fatal at start-up when configured:
//! * a pinned SHA-256 digest per model file name (`[model.sha256]` in the config);
//! * an Ed25519 signature of the file's bytes in `<file>.sig` (64 raw bytes, or 128 hex
//!   digits), checked against the configured public key. `openssl pkeyutl -sign -rawin`
//!   with an Ed25519 key writes exactly such a raw signature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
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

/// Checks `path` against the pins (when any) and the signature (when a key is given);
/// returns the file's SHA-256.
pub fn verify_model(
    path: &Path,
    pins: &BTreeMap<String, String>,
    public_key: Option<&str>,
) -> Result<String, IntegrityError> {
    let bytes = std::fs::read(path).map_err(|source| IntegrityError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let actual = hex::encode(Sha256::digest(&bytes));
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
        key.verify(&bytes, &sig)
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
        assert_eq!(verify_model(&path, &pins, None).unwrap(), digest);
        pins.insert("m.onnx".to_string(), digest.to_uppercase());
        assert_eq!(verify_model(&path, &pins, None).unwrap(), digest);
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

        let other = hex::encode(SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes());
        assert!(verify_model(&path, &none, Some(&other)).is_err());
        assert!(matches!(
            verify_model(&path, &none, Some("zz")),
            Err(IntegrityError::BadKey(_))
        ));
    }
}
