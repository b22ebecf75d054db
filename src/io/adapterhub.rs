//! AdapterHub's adapter directory: `adapter_config.json` + `adapter.safetensors` (or
//! `pytorch_adapter.bin`), and optionally the head of the same name: `head_config.json` +
//! `model_head.safetensors` (or `pytorch_model_head.bin`).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::envelope::{
    Envelope, ModelInfo, WeightsFile, envelope_bytes, in_file, read_consistently, read_envelope,
    read_weights,
};
use super::tensors::{TensorMap, safetensors_bytes, write_atomically};
use crate::config::AdapterConfig;
use crate::error::{Error, Result};
use crate::heads::HeadConfig;

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

/// An adapter directory as read: the config and the tensors by AdapterHub key.
pub(crate) struct SavedAdapter {
    /// The config file's envelope (name, hidden size, path).
    pub envelope: Envelope,
    pub config: AdapterConfig,
    /// Keys without a model prefix: `encoder.layer.0.output.adapters.<name>.adapter_up.weight`.
    pub weights: WeightsFile,
    /// The head saved beside it, when asked for and present.
    pub head: Option<SavedHead>,
}

/// A head directory as read.
pub(crate) struct SavedHead {
    pub envelope: Envelope,
    pub config: HeadConfig,
    /// Keys `heads.<name>.<index>.weight`, as AdapterHub writes them.
    pub weights: WeightsFile,
}

/// What is written for one adapter (and its head).
pub(crate) struct AdapterRecord<'a> {
    pub name: &'a str,
    pub config: &'a AdapterConfig,
    pub hidden_size: usize,
    pub info: ModelInfo,
    /// By AdapterHub key, torch layouts.
    pub tensors: TensorMap,
    pub head: Option<HeadRecord<'a>>,
}

/// What is written for a head.
pub(crate) struct HeadRecord<'a> {
    pub config: &'a HeadConfig,
    pub tensors: TensorMap,
}

/// Writes an adapter (and its head) into `dir`; the adapter's config goes last, as it is what
/// makes the directory loadable.
pub(crate) fn write_adapter(dir: &Path, record: AdapterRecord<'_>) -> Result<()> {
    let model_class = match record.head {
        Some(_) => record.info.model_class_with_heads(),
        None => record.info.model_class.clone(),
    };
    let envelope = |config: serde_json::Value, weights: (&str, &[u8])| {
        envelope_bytes(
            config,
            record.name,
            record.hidden_size,
            &record.info,
            model_class.clone(),
            weights,
        )
    };
    let weights = safetensors_bytes(&record.tensors)?;
    let config = envelope(record.config.to_json(), (WEIGHTS_FILE, &weights));
    let mut files = vec![(WEIGHTS_FILE, weights)];
    if let Some(head) = &record.head {
        let head_config = serde_json::to_value(head.config).expect("head configs serialise");
        let head_weights = safetensors_bytes(&head.tensors)?;
        let head_envelope = envelope(head_config, (HEAD_WEIGHTS_FILE, &head_weights));
        files.push((HEAD_WEIGHTS_FILE, head_weights));
        files.push((HEAD_CONFIG_FILE, head_envelope));
    }
    files.push((CONFIG_FILE, config));
    write_atomically(dir, &files)
}

/// Reads the adapter in `dir`, and with `with_head` the head saved beside it (if any).
pub(crate) fn read_adapter(dir: &Path, with_head: bool) -> Result<SavedAdapter> {
    read_consistently(|| {
        let envelope = read_envelope(&dir.join(CONFIG_FILE))?;
        let config = adapter_config(&envelope)?;
        let weights = read_weights(dir, WEIGHTS_FILE, PYTORCH_WEIGHTS_FILE, &envelope)?;
        let head = match with_head && dir.join(HEAD_CONFIG_FILE).is_file() {
            true => Some(read_head(dir)?),
            false => None,
        };
        Ok(SavedAdapter {
            envelope,
            config,
            weights,
            head,
        })
    })
}

/// The name the adapter in `dir` was saved under.
#[cfg(feature = "train")]
pub(crate) fn saved_adapter_name(dir: &Path) -> Result<String> {
    Ok(read_envelope(&dir.join(CONFIG_FILE))?.name)
}

/// The adapter config of an envelope. Configs written before versions were recorded meant the
/// tanh approximation by `"gelu"` (AdapterHub's `ACTIVATION_RENAME`).
fn adapter_config(envelope: &Envelope) -> Result<AdapterConfig> {
    let mut config = envelope.config.clone();
    if envelope.file.get("version").is_none()
        && let Some(act) = config.get_mut("non_linearity")
    {
        match act.as_str() {
            Some("gelu") => *act = json!("gelu_new"),
            Some("gelu_orig") => *act = json!("gelu"),
            _ => {}
        }
    }
    AdapterConfig::from_json(&config).map_err(|e| in_file(&envelope.path, e))
}

/// Reads the head saved in `dir`.
fn read_head(dir: &Path) -> Result<SavedHead> {
    let envelope = read_envelope(&dir.join(HEAD_CONFIG_FILE))?;
    let config: HeadConfig =
        serde_path_to_error::deserialize(&envelope.config).map_err(|e| Error::Json {
            path: envelope.path.clone(),
            field: format!("config.{}", e.path()),
            reason: e.into_inner().to_string(),
        })?;
    config.validate().map_err(|e| in_file(&envelope.path, e))?;
    let weights = read_weights(dir, HEAD_WEIGHTS_FILE, PYTORCH_HEAD_WEIGHTS_FILE, &envelope)?;
    Ok(SavedHead {
        envelope,
        config,
        weights,
    })
}

/// The directories below `dir` that hold an adapter, sorted.
pub(crate) fn adapter_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.join(CONFIG_FILE).is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}
