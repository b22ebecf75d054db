//! AdapterHub's fusion directory: `adapter_fusion_config.json` +
//! `model_adapter_fusion.safetensors` (or `pytorch_model_adapter_fusion.bin`).

use std::path::Path;

use serde_json::{Value, json};

use super::envelope::{
    Envelope, FORMAT_VERSION, ModelInfo, WeightsFile, read_consistently, read_envelope,
    read_weights, to_json_bytes, with_checksum,
};
use super::tensors::{TensorMap, safetensors_bytes, write_atomically};
use crate::config::FusionConfig;
use crate::error::{Error, Result};
use crate::names::FusionKey;

/// Name of the fusion config file.
pub const FUSION_CONFIG_FILE: &str = "adapter_fusion_config.json";
/// Name of the safetensors fusion weights file.
pub const FUSION_WEIGHTS_FILE: &str = "model_adapter_fusion.safetensors";
/// Name of the PyTorch fusion weights file.
pub const PYTORCH_FUSION_WEIGHTS_FILE: &str = "pytorch_model_adapter_fusion.bin";

/// A fusion directory as read.
pub(crate) struct SavedFusion {
    pub envelope: Envelope,
    /// The fused adapters (`adapter_names`, or the saved name in older files).
    pub key: FusionKey,
    pub config: FusionConfig,
    /// Keys `<site>.adapter_fusion_layer.<saved name>.query.weight`, ...
    pub weights: WeightsFile,
}

/// What is written for one fusion layer.
pub(crate) struct FusionRecord<'a> {
    pub key: &'a FusionKey,
    pub config: &'a FusionConfig,
    pub hidden_size: usize,
    pub info: ModelInfo,
    pub tensors: TensorMap,
}

/// Writes a fusion layer into `dir`.
pub(crate) fn write_fusion(dir: &Path, record: FusionRecord<'_>) -> Result<()> {
    let name = record.key.to_string();
    let config = json!({
        "adapter_names": record.key.adapters(),
        "config": serde_json::to_value(record.config).expect("fusion configs serialise"),
        "hidden_size": record.hidden_size,
        "model_class": record.info.model_class,
        "model_name": record.info.model_name,
        "model_type": record.info.model_type,
        "name": name,
        "version": FORMAT_VERSION,
    });
    let weights = safetensors_bytes(&record.tensors)?;
    let config = with_checksum(config, (FUSION_WEIGHTS_FILE, &weights));
    write_atomically(
        dir,
        &[
            (FUSION_WEIGHTS_FILE, weights),
            (FUSION_CONFIG_FILE, to_json_bytes(&config)),
        ],
    )
}

/// Reads the fusion in `dir`.
pub(crate) fn read_fusion(dir: &Path) -> Result<SavedFusion> {
    read_consistently(|| {
        let envelope = read_envelope(&dir.join(FUSION_CONFIG_FILE))?;
        let json_error = |field: &str, reason: String| Error::Json {
            path: envelope.path.clone(),
            field: field.into(),
            reason,
        };
        let key = match envelope.file.get("adapter_names") {
            Some(Value::Array(names)) => {
                let names = names
                    .iter()
                    .map(|n| {
                        n.as_str().map(str::to_string).ok_or_else(|| {
                            json_error("adapter_names", format!("{n} is not a string"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                FusionKey::new(names)
            }
            // Older files only have the name.
            _ => FusionKey::parse(&envelope.name),
        }
        .map_err(|e| json_error("adapter_names", e.to_string()))?;
        let config: FusionConfig = serde_path_to_error::deserialize(&envelope.config)
            .map_err(|e| json_error(&format!("config.{}", e.path()), e.into_inner().to_string()))?;
        let weights = read_weights(
            dir,
            FUSION_WEIGHTS_FILE,
            PYTORCH_FUSION_WEIGHTS_FILE,
            &envelope,
        )?;
        Ok(SavedFusion {
            envelope,
            key,
            config,
            weights,
        })
    })
}
