//! Picking a device by name, for command-line tools and benches.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The device for a backend name: `flex`, `wgpu`, `tch` or `cuda`, each when the crate feature of
/// the same name is enabled (`flex` is a default feature). Append `+autodiff` (e.g.
/// `flex+autodiff`) for a training device.
// Built without any backend feature, every name is an error and the last line is unreachable.
#[allow(unreachable_code, unused_variables)]
pub fn device_by_name(name: &str) -> Result<Device> {
    let (backend, autodiff) = match name.strip_suffix("+autodiff") {
        Some(backend) => (backend, true),
        None => (name, false),
    };
    let device: Device = match backend {
        #[cfg(feature = "flex")]
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

/// Whether `device` is burn-flex, with or without autodiff (burn's device equality ignores
/// autodiff). The places where burn-flex's own kernel is slow enough to do the work on the host
/// ask this.
pub(crate) fn is_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Names accepted by [`device_by_name`] in this build.
pub fn available_backends() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "flex") {
        names.push("flex");
    }
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

/// Casts every float parameter of `module` (a model with its adapters, or one adapter) to
/// `dtype`, e.g. `DType::F16` or `DType::BF16` on devices that support it
/// (`device.supports_dtype(dtype)`). The forward then runs in that precision.
pub fn cast_params<M: burn::module::Module>(module: M, dtype: burn::tensor::DType) -> M {
    struct Cast(burn::tensor::DType);
    impl burn::module::ModuleMapper for Cast {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<burn::tensor::Tensor<D>>,
        ) -> burn::module::Param<burn::tensor::Tensor<D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}
