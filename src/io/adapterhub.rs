//! AdapterHub's adapter directory: `adapter_config.json` + `adapter.safetensors`
//! (or `pytorch_adapter.bin`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{Value, json};

use super::keys::{bottleneck_name, strip_model_prefix};
use super::tensors::{
    HostTensor, TensorMap, read_pytorch, read_safetensors, safetensors_bytes, write_atomically,
};
use crate::config::AdapterConfig;
use crate::error::{Error, Result};
use crate::methods::Bottleneck;
use crate::model::AdapterHost;

/// Name of the adapter config file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// Name of the safetensors weights file.
pub const WEIGHTS_FILE: &str = "adapter.safetensors";
/// Name of the PyTorch weights file AdapterHub writes by default.
pub const PYTORCH_WEIGHTS_FILE: &str = "pytorch_adapter.bin";
/// The `version` recorded in saved configs: the AdapterHub release whose format this is.
pub const FORMAT_VERSION: &str = "adapters.1.3.0";

/// An adapter read from disk, built for a host but not yet installed in it.
pub(crate) struct LoadedAdapter {
    pub name: String,
    pub config: AdapterConfig,
    /// One entry per site, in [`AdapterHost::visit_sites`] order.
    pub modules: Vec<Option<Bottleneck>>,
}

/// Collects a bottleneck's parameters under their AdapterHub names, in torch layout.
struct Collect<'a> {
    path: Vec<String>,
    prefix: &'a str,
    ln_before: bool,
    out: &'a mut TensorMap,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        let name = bottleneck_name(&path, self.ln_before)
            .unwrap_or_else(|| panic!("bottleneck parameter `{path}` has no AdapterHub name"));
        let data = param.val().into_data().convert::<f32>();
        let tensor = HostTensor {
            shape: data.shape().to_vec(),
            values: data.try_to_vec::<f32>().expect("converted to f32"),
        };
        let tensor = if name.transpose {
            tensor.transposed()
        } else {
            tensor
        };
        for alias in name.names {
            self.out
                .insert(format!("{}.{alias}", self.prefix), tensor.clone());
        }
    }
}

/// Writes adapter `name` of `model` into `dir` in AdapterHub's format.
pub(crate) fn save_adapter<M: AdapterHost>(model: &M, dir: &Path, name: &str) -> Result<()> {
    let config = model
        .registry()
        .config(name)
        .ok_or_else(|| Error::UnknownAdapter(name.to_string()))?;
    let mut tensors = TensorMap::new();
    model.visit_sites(&mut |site| {
        if let Some(adapter) = site.adapters().get(name) {
            let prefix = format!("{}.{name}", model.site_path(site.location()));
            adapter.visit(&mut Collect {
                path: Vec::new(),
                prefix: &prefix,
                ln_before: adapter.norm_before.is_some(),
                out: &mut tensors,
            });
        }
    });
    let info = model.model_info();
    // serde_json's maps are sorted, so this prints with sorted keys like Python's json.dump.
    let config_json = json!({
        "config": config.to_json(),
        "hidden_size": model.hidden_size(),
        "model_class": info.model_class,
        "model_name": info.model_name,
        "model_type": info.model_type,
        "name": name,
        "version": FORMAT_VERSION,
    });
    let config_bytes =
        serde_json::to_vec_pretty(&config_json).expect("JSON values always serialise");
    write_atomically(
        dir,
        &[
            (WEIGHTS_FILE, safetensors_bytes(&tensors)?),
            (CONFIG_FILE, config_bytes),
        ],
    )
}

/// Reads and checks `dir/adapter_config.json`: the adapter's name and config.
fn read_config(dir: &Path, hidden_size: usize) -> Result<(String, AdapterConfig)> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let json_error = |field: &str, reason: String| Error::Json {
        path: path.clone(),
        field: field.to_string(),
        reason,
    };
    let file: Value = serde_json::from_str(&text).map_err(|e| json_error(".", e.to_string()))?;
    let Some(mut config) = file.get("config").filter(|c| c.is_object()).cloned() else {
        return Err(json_error("config", "missing or not an object".into()));
    };
    match file.get("hidden_size") {
        None | Some(Value::Null) => {}
        Some(value) => match value.as_u64() {
            Some(found) if found as usize == hidden_size => {}
            Some(found) => {
                return Err(Error::HiddenSizeMismatch {
                    path,
                    expected: hidden_size,
                    found: found as usize,
                });
            }
            None => {
                return Err(json_error(
                    "hidden_size",
                    format!("expected an integer, found {value}"),
                ));
            }
        },
    }
    let name = match file.get("name") {
        Some(Value::String(name)) => name.clone(),
        other => {
            return Err(json_error(
                "name",
                format!("expected a string, found {other:?}"),
            ));
        }
    };
    // Configs written before versions were recorded meant the tanh approximation by "gelu".
    if file.get("version").is_none()
        && let Some(act) = config.get_mut("non_linearity")
    {
        match act.as_str() {
            Some("gelu") => *act = json!("gelu_new"),
            Some("gelu_orig") => *act = json!("gelu"),
            _ => {}
        }
    }
    let config = AdapterConfig::from_json(&config).map_err(|e| match e {
        Error::InvalidConfig {
            field,
            value,
            reason,
        } => json_error(&format!("config.{field}"), format!("{value}: {reason}")),
        Error::Json { field, reason, .. } => json_error(&format!("config.{field}"), reason),
        other => other,
    })?;
    Ok((name, config))
}

/// Fills a freshly built bottleneck's parameters from file tensors, checking names and shapes.
struct Fill<'a> {
    path: Vec<String>,
    prefix: &'a str,
    ln_before: bool,
    file: &'a Path,
    tensors: &'a TensorMap,
    used: &'a mut BTreeSet<String>,
    device: &'a Device,
    error: Option<Error>,
}

impl Fill<'_> {
    fn lookup(&mut self, path: &str, dims: &[usize]) -> Result<TensorData> {
        let name = bottleneck_name(path, self.ln_before).ok_or_else(|| {
            Error::Unsupported(format!(
                "bottleneck parameter `{path}` has no AdapterHub name"
            ))
        })?;
        let keys: Vec<String> = name
            .names
            .iter()
            .map(|n| format!("{}.{n}", self.prefix))
            .collect();
        let found = keys
            .iter()
            .find(|k| self.tensors.contains_key(*k))
            .ok_or_else(|| Error::MissingTensor {
                path: self.file.to_path_buf(),
                key: keys[0].clone(),
            })?;
        for key in &keys {
            if self.tensors.contains_key(key) {
                self.used.insert(key.clone());
            }
        }
        let tensor = &self.tensors[found];
        let expected: Vec<usize> = if name.transpose {
            dims.iter().rev().copied().collect()
        } else {
            dims.to_vec()
        };
        if tensor.shape != expected || tensor.values.len() != expected.iter().product::<usize>() {
            return Err(Error::ShapeMismatch {
                path: self.file.to_path_buf(),
                key: found.clone(),
                expected,
                found: tensor.shape.clone(),
            });
        }
        if let Some(bad) = tensor.values.iter().find(|v| !v.is_finite()) {
            return Err(Error::format(
                self.file,
                format!("tensor `{found}` holds a non-finite value ({bad})"),
            ));
        }
        let tensor = if name.transpose {
            tensor.transposed()
        } else {
            tensor.clone()
        };
        Ok(TensorData::new(tensor.values, tensor.shape))
    }
}

impl ModuleMapper for Fill<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let path = self.path.join(".");
        let dims = param.lazy_shape().to_vec();
        match self.lookup(&path, &dims) {
            Ok(data) => {
                let device = self.device.clone();
                param.map(|_| Tensor::from_data(data, &device))
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// The weights file of an adapter directory: safetensors if present, else the PyTorch archive.
fn weights_file(dir: &Path) -> Result<(PathBuf, TensorMap)> {
    let safetensors = dir.join(WEIGHTS_FILE);
    if safetensors.is_file() {
        return Ok((safetensors.clone(), read_safetensors(&safetensors)?));
    }
    let pytorch = dir.join(PYTORCH_WEIGHTS_FILE);
    if pytorch.is_file() {
        return Ok((pytorch.clone(), read_pytorch(&pytorch)?));
    }
    Err(Error::io(
        safetensors,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("neither {WEIGHTS_FILE} nor {PYTORCH_WEIGHTS_FILE} exists"),
        ),
    ))
}

/// Reads the adapter in `dir` and builds its modules for `model`, without changing `model`.
pub(crate) fn read_adapter<M: AdapterHost>(
    model: &M,
    dir: &Path,
    load_as: Option<&str>,
    device: &Device,
) -> Result<LoadedAdapter> {
    let (saved_name, config) = read_config(dir, model.hidden_size())?;
    let name = load_as
        .map(str::to_string)
        .unwrap_or_else(|| saved_name.clone());
    let (file, raw) = weights_file(dir)?;
    let mut tensors = TensorMap::new();
    for (key, tensor) in raw {
        let key = strip_model_prefix(&key).to_string();
        if tensors.insert(key.clone(), tensor).is_some() {
            return Err(Error::format(
                &file,
                format!("tensor `{key}` appears with and without the `bert.` prefix"),
            ));
        }
    }
    let hidden = model.hidden_size();
    let mut used = BTreeSet::new();
    let mut modules = Vec::new();
    let mut failure = None;
    model.visit_sites(&mut |site| {
        if failure.is_some() {
            return;
        }
        let Some(bn) = site.placed(&config) else {
            modules.push(None);
            return;
        };
        // The initial values are overwritten; a fixed seed avoids drawing from the device.
        let seeded = crate::config::BnConfig {
            init_weights_seed: Some(0),
            ..bn.clone()
        };
        let adapter = match Bottleneck::new(&seeded, hidden, site.location().layer, device) {
            Ok(adapter) => adapter,
            Err(e) => {
                failure = Some(e);
                return;
            }
        };
        // The file records the adapter under the name it was saved with.
        let prefix = format!("{}.{saved_name}", model.site_path(site.location()));
        let mut fill = Fill {
            path: Vec::new(),
            prefix: &prefix,
            ln_before: bn.ln_before,
            file: &file,
            tensors: &tensors,
            used: &mut used,
            device,
            error: None,
        };
        let adapter = adapter.map(&mut fill);
        match fill.error {
            Some(e) => failure = Some(e),
            None => modules.push(Some(adapter.train_like(device))),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(key) = tensors.keys().find(|k| !used.contains(*k)) {
        return Err(Error::UnexpectedTensor {
            path: file,
            key: key.clone(),
        });
    }
    Ok(LoadedAdapter {
        name,
        config,
        modules,
    })
}
