//! Choosing where training runs: burn-flex on the CPU (default), wgpu, or CUDA.
//!
//! All model and training code is backend-generic (burn 0.22 picks the backend at run time from
//! the device), so a GPU host differs only in the device chosen here.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// A compute backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex on the CPU, multithreaded with rayon (the default).
    Flex,
    /// burn's wgpu backend (Vulkan/Metal/DX12); needs the `wgpu` cargo feature.
    Wgpu,
    /// burn's CUDA backend on GPU 0; needs the `cuda` cargo feature and the NVIDIA driver.
    Cuda,
}

/// The device for inference (no autodiff) on `kind`.
pub fn inference_device(kind: BackendKind) -> Result<Device> {
    match kind {
        BackendKind::Flex => Ok(Device::flex()),
        BackendKind::Wgpu => wgpu_device(),
        BackendKind::Cuda => cuda_device(),
    }
}

/// The device for training (with autodiff) on `kind`.
pub fn training_device(kind: BackendKind) -> Result<Device> {
    Ok(inference_device(kind)?.autodiff())
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    Ok(Device::wgpu(Default::default()))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device> {
    bail!(
        "this trainer was built without the `wgpu` feature: rebuild with `cargo build --release -p trainer --features wgpu`"
    )
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device> {
    // cudarc panics when libcuda is missing, so look for the driver library first.
    match find_cuda_driver(&library_dirs()) {
        Some(lib) => {
            tracing::info!("CUDA driver found at {}", lib.display());
            Ok(Device::cuda(0usize))
        }
        None => bail!(
            "the CUDA backend needs the NVIDIA driver library libcuda.so.1, which was not found \
             in {:?}; use --backend flex to train on the CPU",
            library_dirs()
        ),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device> {
    let _ = find_cuda_driver(&library_dirs());
    bail!(
        "this trainer was built without the `cuda` feature: see README, 'Training on a CUDA host'"
    )
}

/// Folders searched for the CUDA driver: `LD_LIBRARY_PATH`, then the usual system folders.
fn library_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/cuda/lib64",
        "/usr/lib/wsl/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// The first `libcuda.so.1` (or `libcuda.so`) in `dirs`.
fn find_cuda_driver(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|d| ["libcuda.so.1", "libcuda.so"].map(|n| d.join(n)))
        .find(|p| Path::new(p).exists())
}

/// Sets the number of CPU threads burn-flex uses (rayon's global pool). `None` = all cores.
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
    {
        tracing::warn!("could not set {n} threads: {e}");
    }
}

/// Number of threads burn-flex will use.
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_driver_is_found_only_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        assert_eq!(find_cuda_driver(&dirs), None);
        std::fs::write(dir.path().join("libcuda.so.1"), b"").unwrap();
        assert_eq!(
            find_cuda_driver(&dirs),
            Some(dir.path().join("libcuda.so.1"))
        );
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn missing_backend_features_are_explained() {
        let err = inference_device(BackendKind::Wgpu).unwrap_err().to_string();
        assert!(err.contains("--features wgpu"), "{err}");
    }
}
