//! AdapterHub's adapter directory: `adapter_config.json` + `adapter.safetensors` (or
//! `pytorch_adapter.bin`), and optionally the head of the same name: `head_config.json` +
//! `model_head.safetensors` (or `pytorch_model_head.bin`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use serde_json::{Value, json};

use super::keys::{bottleneck_name, head_name, lora_name, strip_model_prefix};
use super::tensors::{
    TensorMap, checksum, parse_safetensors, read_pytorch, safetensors_bytes, write_atomically,
};
use super::transfer::{Collect, Fill};
use crate::config::AdapterConfig;
use crate::error::{Error, Result};
use crate::heads::{HeadConfig, PredictionHead};
use crate::model::{AdapterHost, AdapterModules, build_modules};

/// Name of the adapter config file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// Name of the safetensors weights file.
pub const WEIGHTS_FILE: &str = "adapter.safetensors";
/// Name of the PyTorch weights file AdapterHub writes by default.
pub const PYTORCH_WEIGHTS_FILE: &str = "pytorch_adapter.bin";
/// Name of the head config file.
pub const HEAD_CONFIG_FILE: &str = "head_config.json";
/// Name of the safetensors head weights file.
pub const HEAD_WEIGHTS_FILE: &str = "model_head.safetensors";
/// Name of the PyTorch head weights file.
pub const PYTORCH_HEAD_WEIGHTS_FILE: &str = "pytorch_model_head.bin";
/// The `version` recorded in saved configs: the AdapterHub release whose format this is.
pub const FORMAT_VERSION: &str = "adapters.1.3.0";
/// The key under which a saved config records the CRC-32 of its weights file (AdapterHub ignores
/// keys it does not know). A reader that finds another checksum holds files of two saves.
pub const WEIGHTS_CHECKSUM_KEY: &str = "weights_crc32";
/// How often a load is tried while it finds files of two saves (a concurrent save in progress),
/// waiting 1, 2, 4, ... ms in between.
const READ_ATTEMPTS: u32 = 8;

/// An adapter read from disk, built for a host but not yet installed in it.
pub(crate) struct LoadedAdapter {
    pub name: String,
    pub config: AdapterConfig,
    /// The modules, per site.
    pub modules: AdapterModules,
    /// The head saved with the adapter, if any (and if the host has heads).
    pub head: Option<PredictionHead>,
}

/// `value` with the checksum of the weights file saved beside it.
pub(crate) fn with_checksum(mut value: Value, (file, bytes): (&str, &[u8])) -> Value {
    value[WEIGHTS_CHECKSUM_KEY] = json!({ file: checksum(bytes) });
    value
}

/// The JSON file AdapterHub writes around a config (sorted keys, as Python's `json.dump`), with
/// the checksum of the weights file it belongs to.
fn envelope<M: AdapterHost>(
    model: &M,
    config: Value,
    name: &str,
    model_class: &str,
    weights: (&str, &[u8]),
) -> Vec<u8> {
    let info = model.model_info();
    let value = json!({
        "config": config,
        "hidden_size": model.hidden_size(),
        "model_class": model_class,
        "model_name": info.model_name,
        "model_type": info.model_type,
        "name": name,
        "version": FORMAT_VERSION,
    });
    serde_json::to_vec_pretty(&with_checksum(value, weights)).expect("JSON values always serialise")
}

/// Runs `read` until it does not find files of two different saves (a save running
/// concurrently), at most [`READ_ATTEMPTS`] times.
pub(crate) fn read_consistently<T>(mut read: impl FnMut() -> Result<T>) -> Result<T> {
    for attempt in 0..READ_ATTEMPTS - 1 {
        match read() {
            Err(Error::ChecksumMismatch { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(1 << attempt));
            }
            other => return other,
        }
    }
    read()
}

/// Writes adapter `name` of `model` (and its head, if it has one) into `dir`.
pub(crate) fn save_adapter<M: AdapterHost>(model: &M, dir: &Path, name: &str) -> Result<()> {
    let config = model
        .registry()
        .config(name)
        .ok_or_else(|| Error::UnknownAdapter(name.to_string()))?;
    let mut tensors = TensorMap::new();
    model.visit_sites(&mut |site| {
        if let Some(adapter) = site.adapters().get(name) {
            let ln_before = adapter.norm_before.is_some();
            let naming = |path: &str| bottleneck_name(path, ln_before);
            adapter.visit(&mut Collect {
                path: Vec::new(),
                prefix: format!("{}.{name}", model.site_path(site.location())),
                naming: &naming,
                out: &mut tensors,
            });
        }
    });
    model.visit_linear_sites(&mut |site| {
        if let Some(lora) = site.loras().get(name) {
            lora.visit(&mut Collect {
                path: Vec::new(),
                prefix: format!("{}.{name}", model.linear_site_path(site.location())),
                naming: &lora_name,
                out: &mut tensors,
            });
        }
    });
    let info = model.model_info();
    let head = model.heads().and_then(|heads| heads.get(name));
    let model_class = match head {
        Some(_) => info.model_class_with_heads(),
        None => info.model_class.clone(),
    };
    let weights = safetensors_bytes(&tensors)?;
    let config = envelope(
        model,
        config.to_json(),
        name,
        &model_class,
        (WEIGHTS_FILE, &weights),
    );
    let mut files = vec![(WEIGHTS_FILE, weights)];
    if let Some(head) = head {
        let mut head_tensors = TensorMap::new();
        let naming = |path: &str| head_name(path, |i| head.reference_index(i));
        head.visit(&mut Collect {
            path: Vec::new(),
            prefix: format!("heads.{name}"),
            naming: &naming,
            out: &mut head_tensors,
        });
        let head_config = serde_json::to_value(&head.config).expect("head configs serialise");
        let head_weights = safetensors_bytes(&head_tensors)?;
        let head_envelope = envelope(
            model,
            head_config,
            name,
            &model_class,
            (HEAD_WEIGHTS_FILE, &head_weights),
        );
        files.push((HEAD_WEIGHTS_FILE, head_weights));
        files.push((HEAD_CONFIG_FILE, head_envelope));
    }
    // The adapter's config goes last: it is what makes the directory loadable.
    files.push((CONFIG_FILE, config));
    write_atomically(dir, &files)
}

/// Reads and checks a config envelope: the saved name and the inner `config` object.
pub(crate) fn read_envelope(path: &Path, hidden_size: usize) -> Result<(String, Value, Value)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json_error = |field: &str, reason: String| Error::Json {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    let file: Value = serde_json::from_str(&text).map_err(|e| json_error(".", e.to_string()))?;
    let Some(config) = file.get("config").filter(|c| c.is_object()).cloned() else {
        return Err(json_error("config", "missing or not an object".into()));
    };
    match file.get("hidden_size") {
        None | Some(Value::Null) => {}
        Some(value) => match value.as_u64() {
            Some(found) if found as usize == hidden_size => {}
            Some(found) => {
                return Err(Error::HiddenSizeMismatch {
                    path: path.to_path_buf(),
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
    Ok((name, config, file))
}

/// Re-labels config errors as errors of the file they came from.
fn in_file(path: &Path, error: Error) -> Error {
    let json_error = |field: String, reason: String| Error::Json {
        path: path.to_path_buf(),
        field,
        reason,
    };
    match error {
        Error::InvalidConfig {
            field,
            value,
            reason,
        } => json_error(format!("config.{field}"), format!("{value}: {reason}")),
        Error::Json { field, reason, .. } => json_error(format!("config.{field}"), reason),
        other => other,
    }
}

/// Reads `dir/adapter_config.json`: the adapter's saved name, config, and the whole file.
fn read_config(dir: &Path, hidden_size: usize) -> Result<(String, AdapterConfig, Value)> {
    let path = dir.join(CONFIG_FILE);
    let (name, mut config, file) = read_envelope(&path, hidden_size)?;
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
    let config = AdapterConfig::from_json(&config).map_err(|e| in_file(&path, e))?;
    Ok((name, config, file))
}

/// The config file a weights file belongs to: its path and parsed JSON, which may record the
/// weights' checksum.
pub(crate) type Companion<'a> = Option<(&'a Path, &'a Value)>;

/// The safetensors file of a directory if present, else its PyTorch archive: the path and the
/// raw tensors. A checksum recorded in `config` must match the file's.
pub(crate) fn read_either(
    dir: &Path,
    safetensors: &str,
    pytorch: &str,
    config: Companion<'_>,
) -> Result<(PathBuf, TensorMap)> {
    if dir.join(safetensors).is_file() {
        let file = dir.join(safetensors);
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        if let Some((config, json)) = config
            && let Some(recorded) = json[WEIGHTS_CHECKSUM_KEY].get(safetensors)
            && recorded.as_u64() != Some(u64::from(checksum(&bytes)))
        {
            return Err(Error::ChecksumMismatch {
                config: config.to_path_buf(),
                weights: file,
            });
        }
        let raw = parse_safetensors(&file, &bytes)?;
        Ok((file, raw))
    } else if dir.join(pytorch).is_file() {
        let file = dir.join(pytorch);
        let raw = read_pytorch(&file)?;
        Ok((file, raw))
    } else {
        Err(Error::io(
            dir.join(safetensors),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("neither {safetensors} nor {pytorch} exists"),
            ),
        ))
    }
}

/// The weights of a directory (see [`read_either`]). Keys lose a model prefix (`bert.`) if they
/// have one.
pub(crate) fn read_weights(
    dir: &Path,
    safetensors: &str,
    pytorch: &str,
    config: Companion<'_>,
) -> Result<(PathBuf, TensorMap)> {
    let (file, raw) = read_either(dir, safetensors, pytorch, config)?;
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
    Ok((file, tensors))
}

pub(crate) fn reject_unused(
    file: PathBuf,
    tensors: &TensorMap,
    used: &BTreeSet<String>,
) -> Result<()> {
    match tensors.keys().find(|k| !used.contains(*k)) {
        Some(key) => Err(Error::UnexpectedTensor {
            path: file,
            key: key.clone(),
        }),
        None => Ok(()),
    }
}

/// Reads the adapter in `dir` (and its head) and builds its modules for `model`, without
/// changing `model`.
pub(crate) fn read_adapter<M: AdapterHost>(
    model: &M,
    dir: &Path,
    load_as: Option<&str>,
    device: &Device,
) -> Result<LoadedAdapter> {
    read_consistently(|| read_adapter_once(model, dir, load_as, device))
}

fn read_adapter_once<M: AdapterHost>(
    model: &M,
    dir: &Path,
    load_as: Option<&str>,
    device: &Device,
) -> Result<LoadedAdapter> {
    let (saved_name, config, file) = read_config(dir, model.hidden_size())?;
    let name = load_as
        .map(str::to_string)
        .unwrap_or_else(|| saved_name.clone());
    let config_path = dir.join(CONFIG_FILE);
    let (file, tensors) = read_weights(
        dir,
        WEIGHTS_FILE,
        PYTORCH_WEIGHTS_FILE,
        Some((&config_path, &file)),
    )?;
    // The initial values are overwritten; a fixed seed avoids drawing from the device.
    let AdapterModules { residual, linear } = build_modules(model, &config, Some(0))?;
    let mut used = BTreeSet::new();
    // The file records the adapter under the name it was saved with.
    let prefix = |module_path: String| format!("{module_path}.{saved_name}");
    let mut residual_paths = Vec::new();
    model.visit_sites(&mut |site| residual_paths.push(model.site_path(site.location())));
    let residual = residual
        .into_iter()
        .zip(residual_paths)
        .map(|(adapter, path)| {
            adapter
                .map(|adapter| {
                    let ln_before = adapter.norm_before.is_some();
                    let naming = move |path: &str| bottleneck_name(path, ln_before);
                    Fill::new(prefix(path), &naming, &file, &tensors, &mut used, device)
                        .fill(adapter)
                })
                .transpose()
        })
        .collect::<Result<_>>()?;
    let mut linear_paths = Vec::new();
    model
        .visit_linear_sites(&mut |site| linear_paths.push(model.linear_site_path(site.location())));
    let linear = linear
        .into_iter()
        .zip(linear_paths)
        .map(|(lora, path)| {
            lora.map(|lora| {
                Fill::new(prefix(path), &lora_name, &file, &tensors, &mut used, device).fill(lora)
            })
            .transpose()
        })
        .collect::<Result<_>>()?;
    let modules = AdapterModules { residual, linear };
    reject_unused(file, &tensors, &used)?;
    let head = match model.heads() {
        Some(_) if dir.join(HEAD_CONFIG_FILE).is_file() => Some(read_head(model, dir, device)?),
        _ => None,
    };
    Ok(LoadedAdapter {
        name,
        config,
        modules,
        head,
    })
}

/// Reads the head saved in `dir`.
fn read_head<M: AdapterHost>(model: &M, dir: &Path, device: &Device) -> Result<PredictionHead> {
    let path = dir.join(HEAD_CONFIG_FILE);
    let (saved_name, config, envelope) = read_envelope(&path, model.hidden_size())?;
    let config: HeadConfig =
        serde_path_to_error::deserialize(&config).map_err(|e| Error::Json {
            path: path.clone(),
            field: format!("config.{}", e.path()),
            reason: e.into_inner().to_string(),
        })?;
    let head = PredictionHead::new(config, model.hidden_size(), model.head_dropout(), device)
        .map_err(|e| in_file(&path, e))?;
    let (file, tensors) = read_weights(
        dir,
        HEAD_WEIGHTS_FILE,
        PYTORCH_HEAD_WEIGHTS_FILE,
        Some((&path, &envelope)),
    )?;
    let mut used = BTreeSet::new();
    let naming = |p: &str| head_name(p, |i| head.reference_index(i));
    let filled = Fill::new(
        format!("heads.{saved_name}"),
        &naming,
        &file,
        &tensors,
        &mut used,
        device,
    )
    .fill(head.clone())?;
    reject_unused(file, &tensors, &used)?;
    Ok(filled)
}
