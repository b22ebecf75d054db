//! Picking a device by name, for command-line tools and benches.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The device for a backend name: `flex` (always), and `wgpu`, `tch`, `cuda` when the crate
/// feature of the same name is enabled. Append `+autodiff` (e.g. `flex+autodiff`) for a
/// training device.
pub fn device_by_name(name: &str) -> Result<Device> {
    let (backend, autodiff) = match name.strip_suffix("+autodiff") {
        Some(backend) => (backend, true),
        None => (name, false),
    };
    let device = match backend {
        "flex" => Device::flex(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch" => Device::libtorch(),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        other => {
            return Err(Error::invalid(
                "device",
                other,
                format!("available: {}", available_backends().join(", ")),
            ));
        }
    };
    Ok(if autodiff { device.autodiff() } else { device })
}

/// Names accepted by [`device_by_name`] in this build.
pub fn available_backends() -> Vec<&'static str> {
    let mut names = vec!["flex"];
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "tch") {
        names.push("tch");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}
