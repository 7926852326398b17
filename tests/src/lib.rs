//! End-to-end tests across the leukoscope crates live in `tests/`; this library holds what they
//! share: where the workspace's programs and data are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// A program of the workspace (`trainer`, `quantize`, `edge`), built by the same cargo command
/// next to the test executable (`target/<profile>/`).
///
/// # Panics
/// When it is not built, with the command that builds it: `cargo test --workspace` builds every
/// program, `cargo test -p leukoscope-tests` alone does not.
pub fn program(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p trainer -p quantize -p edge` first \
         (`cargo test --workspace` builds it)",
        path.display()
    );
    path
}

/// Runs a program with `args`.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(program(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} does not run: {e}"))
}

/// Exit status, stdout and stderr of a finished program, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The shared data folder: `LEUKOSCOPE_DATA`, else `../shared/data` beside the workspace.
pub fn shared_data() -> PathBuf {
    std::env::var_os("LEUKOSCOPE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/data"))
}

/// The folders of shipped models (each holds one contract's `.onnx` files) and the dataset under
/// [`shared_data`] each was trained on.
pub const SHIPPED: &[(&str, &str)] = &[("models", "all-taleqani")];

/// A shipped model file and its dataset folder.
pub struct ShippedModel {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Its dataset (one subfolder per label), which may be absent.
    pub data: PathBuf,
}

/// The shipped models of every [`SHIPPED`] folder, sorted within each (none for a folder that
/// is missing or empty).
pub fn shipped_models() -> Vec<ShippedModel> {
    SHIPPED
        .iter()
        .flat_map(|(dir, data)| {
            leukoscope_model::variant::model_files(&workspace().join(dir))
                .unwrap_or_default()
                .into_iter()
                .map(move |path| ShippedModel {
                    path,
                    data: shared_data().join(data),
                })
        })
        .collect()
}
