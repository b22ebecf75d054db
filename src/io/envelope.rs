//! What AdapterHub's config files share: the envelope around a config (`name`, `hidden_size`,
//! the model's identity, `version`), the checksum of the weights saved beside it, and reading the
//! weights file of a directory.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::keys::strip_model_prefix;
use super::tensors::{TensorMap, checksum, parse_safetensors, read_pytorch};
use crate::error::{Error, Result};

/// The `version` recorded in saved configs: the AdapterHub release whose format this is.
pub const FORMAT_VERSION: &str = "adapters.1.3.0";
/// The key under which a saved config records the CRC-32 of its weights file (AdapterHub ignores
/// keys it does not know). A reader that finds another checksum holds files of two saves.
pub(crate) const WEIGHTS_CHECKSUM_KEY: &str = "weights_crc32";
/// How often a load is tried while it finds files of two saves (a concurrent save in progress),
/// waiting 1, 2, 4, ... ms in between.
const READ_ATTEMPTS: u32 = 8;

/// Identity of a host model, recorded in saved config files (AdapterHub writes transformers'
/// names; it does not check them when loading). Unknown parts are written as `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelInfo {
    /// transformers' `model_type` (`"bert"`).
    pub model_type: Option<String>,
    /// transformers' class name (`"BertModel"`).
    pub model_class: Option<String>,
    /// The checkpoint name, if known.
    pub model_name: Option<String>,
}

impl ModelInfo {
    /// The class name AdapterHub records for the same model with heads (`BertAdapterModel`).
    pub fn model_class_with_heads(&self) -> Option<String> {
        let class = self.model_class.as_deref()?;
        Some(format!("{}AdapterModel", class.trim_end_matches("Model")))
    }
}

/// What an envelope records beside its config.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    /// The file, for error messages.
    pub path: PathBuf,
    /// The name the config was saved under.
    pub name: String,
    /// The hidden size recorded, if any.
    pub hidden_size: Option<usize>,
    /// The inner `config` object.
    pub config: Value,
    /// The whole file.
    pub file: Value,
}

/// The JSON file AdapterHub writes around a config (sorted keys, as Python's `json.dump`), with
/// the checksum of the weights file it belongs to.
pub(crate) fn envelope_bytes(
    config: Value,
    name: &str,
    hidden_size: usize,
    info: &ModelInfo,
    model_class: Option<String>,
    weights: (&str, &[u8]),
) -> Vec<u8> {
    let value = json!({
        "config": config,
        "hidden_size": hidden_size,
        "model_class": model_class,
        "model_name": info.model_name,
        "model_type": info.model_type,
        "name": name,
        "version": FORMAT_VERSION,
    });
    to_json_bytes(&with_checksum(value, weights))
}

/// `value` with the checksum of the weights file saved beside it.
pub(crate) fn with_checksum(mut value: Value, (file, bytes): (&str, &[u8])) -> Value {
    value[WEIGHTS_CHECKSUM_KEY] = json!({ file: checksum(bytes) });
    value
}

/// AdapterHub's layout of a JSON file: indent 2 (serde_json's maps are sorted).
pub(crate) fn to_json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("JSON values always serialise")
}

/// Reads a config envelope: the saved name, the recorded hidden size and the inner `config`.
pub(crate) fn read_envelope(path: &Path) -> Result<Envelope> {
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
    let hidden_size = match file.get("hidden_size") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64().map(|h| h as usize).ok_or_else(|| {
            json_error("hidden_size", format!("expected an integer, found {value}"))
        })?),
    };
    let name = match file.get("name") {
        Some(Value::String(name)) => name.clone(),
        other => {
            return Err(json_error(
                "name",
                format!("expected a string, found {other:?}"),
            ));
        }
    };
    Ok(Envelope {
        path: path.to_path_buf(),
        name,
        hidden_size,
        config,
        file,
    })
}

impl Envelope {
    /// Checks the recorded hidden size against the model's.
    pub fn check_hidden_size(&self, hidden_size: usize) -> Result<()> {
        match self.hidden_size {
            Some(found) if found != hidden_size => Err(Error::HiddenSizeMismatch {
                path: self.path.clone(),
                expected: hidden_size,
                found,
            }),
            _ => Ok(()),
        }
    }
}

/// Re-labels a config error as an error of the file the config came from.
pub(crate) fn in_file(path: &Path, error: Error) -> Error {
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

/// The tensors of one weights file, and its path for error messages.
#[derive(Debug, Clone)]
pub(crate) struct WeightsFile {
    /// The file.
    pub path: PathBuf,
    /// Its tensors, by key.
    pub tensors: TensorMap,
}

/// The safetensors file of a directory if present, else its PyTorch archive. A checksum the
/// envelope records must match the file's.
pub(crate) fn read_either(
    dir: &Path,
    safetensors: &str,
    pytorch: &str,
    envelope: Option<&Envelope>,
) -> Result<WeightsFile> {
    let path = dir.join(safetensors);
    if path.is_file() {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if let Some(envelope) = envelope
            && let Some(recorded) = envelope.file[WEIGHTS_CHECKSUM_KEY].get(safetensors)
            && recorded.as_u64() != Some(u64::from(checksum(&bytes)))
        {
            return Err(Error::ChecksumMismatch {
                config: envelope.path.clone(),
                weights: path,
            });
        }
        let tensors = parse_safetensors(&path, &bytes)?;
        return Ok(WeightsFile { path, tensors });
    }
    let path = dir.join(pytorch);
    if path.is_file() {
        let tensors = read_pytorch(&path)?;
        return Ok(WeightsFile { path, tensors });
    }
    Err(Error::io(
        dir.join(safetensors),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("neither {safetensors} nor {pytorch} exists"),
        ),
    ))
}

/// The weights of a directory (see [`read_either`]), keys without a model prefix (`bert.`).
pub(crate) fn read_weights(
    dir: &Path,
    safetensors: &str,
    pytorch: &str,
    envelope: &Envelope,
) -> Result<WeightsFile> {
    let raw = read_either(dir, safetensors, pytorch, Some(envelope))?;
    let mut tensors = TensorMap::new();
    for (key, tensor) in raw.tensors {
        let key = strip_model_prefix(&key).to_string();
        if tensors.insert(key.clone(), tensor).is_some() {
            return Err(Error::format(
                &raw.path,
                format!("tensor `{key}` appears with and without the `bert.` prefix"),
            ));
        }
    }
    Ok(WeightsFile {
        path: raw.path,
        tensors,
    })
}
