//! Reading a Hugging Face `config.json`: the model type check and errors that name the field.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// Reads the `config.json` at `path` into `T` after checking its `model_type` against
/// `model_types` (an absent `model_type` passes when `absent_ok`, as in old BERT checkpoints),
/// then runs `validate`. Every error names the file and the JSON field.
pub(crate) fn read_hf_config<T: DeserializeOwned>(
    path: &Path,
    model_types: &[&str],
    absent_ok: bool,
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json_error = |field: String, reason: String| Error::Json {
        path: path.into(),
        field,
        reason,
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| json_error(".".into(), e.to_string()))?;
    match value.get("model_type") {
        None | Some(Value::Null) if absent_ok => {}
        Some(Value::String(model_type)) if model_types.contains(&model_type.as_str()) => {}
        other => {
            let found = other.map_or("nothing".to_string(), Value::to_string);
            return Err(json_error(
                "model_type".into(),
                format!("{found} is not one of {model_types:?}"),
            ));
        }
    }
    let config: T = serde_path_to_error::deserialize(&value)
        .map_err(|e| json_error(e.path().to_string(), e.into_inner().to_string()))?;
    validate(&config).map_err(|e| match e {
        Error::InvalidConfig {
            field,
            value,
            reason,
        } => json_error(field, format!("{value}: {reason}")),
        other => other,
    })?;
    Ok(config)
}
