//! Where the device finds its model when no `--model` is given and the config names none.
//!
//! In order: the model files or folders the command line names (`--model`), then the config's
//! `[model] paths`, then `$LEUKOSCOPE_MODELS` (a file or a folder), then
//! `/usr/share/leukoscope/models` (where the Debian package installs the shipped models), then
//! `./models` (the repository's folder, relative to the working directory). The first two are
//! the caller's; [`default_models`] walks the rest. A program run from any folder by a service
//! therefore finds the installed models, and a developer's checkout finds its own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable naming a model file or a folder of models.
pub const MODELS_ENV: &str = "LEUKOSCOPE_MODELS";
/// Where the Debian package installs the shipped models.
pub const SYSTEM_MODELS_DIR: &str = "/usr/share/leukoscope/models";
/// The repository's folder of shipped models, relative to the working directory.
pub const LOCAL_MODELS_DIR: &str = "models";

/// The default models found, and where they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundModels {
    /// The folder or file to load (a folder: its `*.onnx` files are the candidates).
    pub path: PathBuf,
    /// Which rule found it, e.g. `$LEUKOSCOPE_MODELS`.
    pub from: &'static str,
}

/// No default model was found; the message lists every place looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no model given (--model or the config's [model] paths) and none found: {tried}; install the \
     leukoscope-edge package, set {MODELS_ENV}, or give --model FILE"
)]
pub struct NoModelFound {
    /// The places looked at and why each was passed over.
    pub tried: String,
}

/// The first of `$LEUKOSCOPE_MODELS`, [`SYSTEM_MODELS_DIR`] and `./models` that holds a model.
///
/// A set `$LEUKOSCOPE_MODELS` is taken as meant: when it names nothing usable the search stops
/// there with an error rather than falling back to another model silently.
pub fn default_models() -> Result<FoundModels, NoModelFound> {
    search(
        std::env::var_os(MODELS_ENV),
        Path::new(SYSTEM_MODELS_DIR),
        Path::new(LOCAL_MODELS_DIR),
    )
}

/// The model paths to load: `configured` (the command line's or the config's) when it names
/// any, else the default ones ([`default_models`], logged with where they were found).
pub fn model_paths(configured: &[PathBuf]) -> Result<Vec<PathBuf>, NoModelFound> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    let found = default_models()?;
    tracing::info!(models = %found.path.display(), from = found.from, "default model");
    Ok(vec![found.path])
}

/// [`default_models`] with its three places given (for tests).
pub fn search(
    env: Option<OsString>,
    system: &Path,
    local: &Path,
) -> Result<FoundModels, NoModelFound> {
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return if holds_model(&path) {
            Ok(FoundModels {
                path,
                from: "$LEUKOSCOPE_MODELS",
            })
        } else {
            Err(NoModelFound {
                tried: format!(
                    "${MODELS_ENV}={} is not an .onnx file nor a folder holding one",
                    path.display()
                ),
            })
        };
    }
    let mut tried = vec![format!("${MODELS_ENV} not set")];
    for (dir, from) in [
        (system, "the installed models"),
        (local, "./models (working directory)"),
    ] {
        if holds_model(dir) {
            return Ok(FoundModels {
                path: dir.to_path_buf(),
                from,
            });
        }
        let shown = if dir.is_relative() {
            std::env::current_dir().map_or_else(|_| dir.to_path_buf(), |cwd| cwd.join(dir))
        } else {
            dir.to_path_buf()
        };
        tried.push(format!("no .onnx file in {}", shown.display()));
    }
    Err(NoModelFound {
        tried: tried.join(", "),
    })
}

/// An `.onnx` file, or a folder with at least one.
fn holds_model(path: &Path) -> bool {
    if path.is_file() {
        return path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    }
    leukoscope_model::variant::model_files(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_with_model(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), b"not read here").unwrap();
        dir
    }

    #[test]
    fn the_environment_comes_first_then_the_installed_then_the_local_models() {
        let env = folder_with_model("a.onnx");
        let system = folder_with_model("b.onnx");
        let local = folder_with_model("c.onnx");
        let found = search(
            Some(env.path().as_os_str().to_owned()),
            system.path(),
            local.path(),
        )
        .unwrap();
        assert_eq!(
            (found.path.as_path(), found.from),
            (env.path(), "$LEUKOSCOPE_MODELS")
        );
        let found = search(None, system.path(), local.path()).unwrap();
        assert_eq!(found.path, system.path());
        let empty = tempfile::tempdir().unwrap();
        let found = search(None, empty.path(), local.path()).unwrap();
        assert_eq!(found.path, local.path());
        // An empty variable is as good as unset.
        let found = search(Some(OsString::new()), empty.path(), local.path()).unwrap();
        assert_eq!(found.path, local.path());
    }

    #[test]
    fn a_file_in_the_environment_is_taken_and_a_bad_one_is_an_error_not_a_fallback() {
        let env = folder_with_model("m.onnx");
        let file = env.path().join("m.onnx");
        let local = folder_with_model("c.onnx");
        let found = search(
            Some(file.clone().into()),
            Path::new("/nonexistent"),
            local.path(),
        );
        assert_eq!(found.unwrap().path, file);
        let err = search(
            Some("/nonexistent/models".into()),
            Path::new("/nonexistent"),
            local.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/models"), "{err}");
    }

    #[test]
    fn nothing_found_names_every_place_looked_at() {
        let empty = tempfile::tempdir().unwrap();
        let err = search(None, Path::new("/nonexistent/system"), empty.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("LEUKOSCOPE_MODELS not set"), "{text}");
        assert!(text.contains("/nonexistent/system"), "{text}");
        assert!(text.contains(&empty.path().display().to_string()), "{text}");
        assert!(text.contains("--model"), "{text}");
    }
}
