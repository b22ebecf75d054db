//! Hugging Face PEFT's LoRA format: `adapter_config.json` (`peft_type: "LORA"`, or `"VERA"`,
//! `"IA3"`) and `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight`
//! (`.vera_lambda_d`, `.ia3_l`).
//!
//! PEFT names the wrapped modules instead of describing a placement; reading gives the settings
//! and the tensors by module path, and the model derives the placement from which of its sites
//! the keys name.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::envelope::{ModelInfo, WeightsFile, read_either, to_json_bytes};
use super::keys::PEFT_MAGNITUDE;
use super::tensors::{TensorMap, safetensors_bytes, write_atomically};
use crate::error::{Error, Result};

/// PEFT's config file (the same name as AdapterHub's).
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's safetensors weights file.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// PEFT's PyTorch weights file.
pub const PEFT_PYTORCH_WEIGHTS_FILE: &str = "adapter_model.bin";
/// Prefix PEFT puts before the base model's module paths.
const PEFT_PREFIX: &str = "base_model.model.";
/// The largest rank a PEFT config may give (far beyond any real LoRA; keeps `r` a sane size).
const MAX_RANK: u64 = 1 << 16;

/// The settings of a PEFT LoRA config that are honoured; everything else must be at its
/// default.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeftSettings {
    pub r: usize,
    pub lora_alpha: f64,
    pub dropout: f64,
    /// rsLoRA: the update is scaled by `lora_alpha / √r` instead of `lora_alpha / r`.
    pub rslora: bool,
    /// DoRA: the file holds a magnitude vector per wrapped module.
    pub dora: bool,
    /// VeRA (`peft_type: "VERA"`) with this initial `d` (`d_initial`): the file holds
    /// `vera_lambda_d` / `vera_lambda_b` per module and the shared `vera_A` / `vera_B`.
    pub vera_d_initial: Option<f64>,
    /// IA3 (`peft_type: "IA3"`): the file holds `<module>.ia3_l` vectors, `[d_output, 1]`, or
    /// `[1, d_input]` for the `feedforward_modules` (which scale their input).
    pub ia3: bool,
}

/// A PEFT LoRA directory as read.
pub(crate) struct SavedPeft {
    pub settings: PeftSettings,
    /// Keys `<module>.lora_A.weight` / `<module>.lora_B.weight`, without PEFT's prefix (nor a
    /// `bert.` one).
    pub weights: WeightsFile,
}

/// What is written for one PEFT LoRA.
pub(crate) struct PeftRecord {
    pub settings: PeftSettings,
    /// Whether the host stores its projections `[in, out]` (transformers' `Conv1D`).
    pub fan_in_fan_out: bool,
    /// The wrapped modules' paths (PEFT's `target_modules`).
    pub targets: Vec<String>,
    /// IA3's modules that scale their input (PEFT's `feedforward_modules`).
    pub feedforward: Vec<String>,
    pub info: ModelInfo,
    /// By module path (`<module>.lora_A.weight`), torch layouts.
    pub tensors: TensorMap,
}

/// Reads the PEFT LoRA in `dir`.
pub(crate) fn read_peft(dir: &Path) -> Result<SavedPeft> {
    let settings = read_settings(&dir.join(PEFT_CONFIG_FILE))?;
    let raw = read_either(dir, PEFT_WEIGHTS_FILE, PEFT_PYTORCH_WEIGHTS_FILE, None)?;
    let mut tensors = TensorMap::new();
    for (key, mut tensor) in raw.tensors {
        if key.ends_with(&format!(".{PEFT_MAGNITUDE}")) && tensor.shape.len() == 1 {
            tensor.shape.insert(0, 1); // `[d_output]` → ours, `[1, d_output]`
        }
        let short = key.strip_prefix(PEFT_PREFIX).unwrap_or(&key);
        let short = short.strip_prefix("bert.").unwrap_or(short).to_string();
        if tensors.insert(short, tensor).is_some() {
            return Err(Error::format(
                &raw.path,
                format!("tensor `{key}` appears twice"),
            ));
        }
    }
    Ok(SavedPeft {
        settings,
        weights: WeightsFile {
            path: raw.path,
            tensors,
        },
    })
}

/// Writes a PEFT LoRA into `dir`. Full module paths as `target_modules` match exactly these
/// modules (PEFT matches a name when a module's path equals it or ends in `.<name>`).
pub(crate) fn write_peft(dir: &Path, record: PeftRecord) -> Result<()> {
    let config = match (record.settings.vera_d_initial, record.settings.ia3) {
        (Some(d_initial), _) => vera_config(&record, d_initial),
        (None, true) => ia3_config(&record),
        (None, false) => lora_config(&record),
    };
    let weights: TensorMap = record
        .tensors
        .into_iter()
        .map(|(key, mut tensor)| {
            // `[1, d_output]` here, `[d_output]` in PEFT's files.
            if key.ends_with(&format!(".{PEFT_MAGNITUDE}")) {
                tensor.shape = vec![tensor.values.len()];
            }
            // VeRA's shared matrices are the PEFT model's own (`base_model.vera_A`).
            match key.starts_with("base_model.") {
                true => (key, tensor),
                false => (format!("{PEFT_PREFIX}{key}"), tensor),
            }
        })
        .collect();
    write_atomically(
        dir,
        &[
            (PEFT_WEIGHTS_FILE, safetensors_bytes(&weights)?),
            (PEFT_CONFIG_FILE, to_json_bytes(&config)),
        ],
    )
}

/// PEFT's `VeraConfig` JSON (the matrices saved: `save_projection`).
fn vera_config(record: &PeftRecord, d_initial: f64) -> Value {
    json!({
        "base_model_name_or_path": record.info.model_name,
        "bias": "none",
        "d_initial": d_initial,
        "fan_in_fan_out": record.fan_in_fan_out,
        "inference_mode": true,
        "init_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "modules_to_save": null,
        "peft_type": "VERA",
        "projection_prng_key": 0,
        "r": record.settings.r,
        "revision": null,
        "save_projection": true,
        "target_modules": record.targets,
        "task_type": null,
        "vera_dropout": record.settings.dropout,
    })
}

/// PEFT's `IA3Config` JSON.
fn ia3_config(record: &PeftRecord) -> Value {
    json!({
        "base_model_name_or_path": record.info.model_name,
        "exclude_modules": null,
        "fan_in_fan_out": record.fan_in_fan_out,
        "feedforward_modules": record.feedforward,
        "inference_mode": true,
        "init_ia3_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "modules_to_save": null,
        "peft_type": "IA3",
        "revision": null,
        "target_modules": record.targets,
        "task_type": null,
    })
}

/// PEFT's `LoraConfig` JSON.
fn lora_config(record: &PeftRecord) -> Value {
    json!({
        "alpha_pattern": {},
        "base_model_name_or_path": record.info.model_name,
        "bias": "none",
        "fan_in_fan_out": record.fan_in_fan_out,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": python_number(record.settings.lora_alpha),
        "lora_dropout": record.settings.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": record.settings.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": record.targets,
        "task_type": null,
        "use_dora": record.settings.dora,
        "use_rslora": record.settings.rslora,
    })
}

/// `8` rather than `8.0` for integral values, as Python writes an int.
fn python_number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

fn field_error(path: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Json {
        path: path.to_path_buf(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads and checks PEFT's `adapter_config.json`.
fn read_settings(path: &Path) -> Result<PeftSettings> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let config: Value =
        serde_json::from_str(&text).map_err(|e| field_error(path, ".", e.to_string()))?;
    let Value::Object(config) = config else {
        return Err(field_error(path, ".", "expected a JSON object"));
    };
    let fields = Fields {
        path,
        config: &config,
    };
    let vera = match config.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => false,
        Some("VERA") => true,
        Some("IA3") => {
            fields.reject_unsupported()?;
            return Ok(ia3_settings());
        }
        Some(other) => return Err(Error::Unsupported(format!("PEFT adapters of type {other}"))),
        None => return Err(field_error(path, "peft_type", "missing or not a string")),
    };
    let r = match config.get("r").and_then(Value::as_u64) {
        Some(r) if (1..=MAX_RANK).contains(&r) => r as usize,
        _ => {
            return Err(field_error(
                path,
                "r",
                format!("expected a rank ≥ 1, found {:?}", config.get("r")),
            ));
        }
    };
    let settings = match vera {
        false => PeftSettings {
            r,
            lora_alpha: fields.number("lora_alpha", Some(8.0))?,
            dropout: fields.number("lora_dropout", Some(0.0))?,
            rslora: fields.flag("use_rslora")?,
            dora: fields.flag("use_dora")?,
            vera_d_initial: None,
            ia3: false,
        },
        true => vera_settings(&fields, r)?,
    };
    if !(0.0..1.0).contains(&settings.dropout) {
        let field = if vera { "vera_dropout" } else { "lora_dropout" };
        return Err(field_error(path, field, "must be a probability in [0, 1)"));
    }
    fields.reject_unsupported()?;
    Ok(settings)
}

/// A PEFT VeRA's settings: no scaling (`lora_alpha = r`), and the shared matrices in the file
/// (PEFT regenerates them from `projection_prng_key` with torch's generator otherwise).
fn vera_settings(fields: &Fields<'_>, r: usize) -> Result<PeftSettings> {
    if fields.config.get("save_projection") == Some(&Value::Bool(false)) {
        return Err(Error::Unsupported(format!(
            "PEFT VeRA with `save_projection: false` ({}): the file lacks the shared matrices, \
             which PEFT redraws with torch's generator",
            fields.path.display()
        )));
    }
    Ok(PeftSettings {
        r,
        lora_alpha: r as f64,
        dropout: fields.number("vera_dropout", Some(0.0))?,
        rslora: false,
        dora: false,
        vera_d_initial: Some(fields.number("d_initial", Some(0.1))?),
        ia3: false,
    })
}

/// A PEFT IA3's settings: vectors without scaling or dropout. Which modules scale their input
/// (`feedforward_modules`) shows in the vectors' shapes.
fn ia3_settings() -> PeftSettings {
    PeftSettings {
        r: 1,
        lora_alpha: 1.0,
        dropout: 0.0,
        rslora: false,
        dora: false,
        vera_d_initial: None,
        ia3: true,
    }
}

/// PEFT's `init_lora_weights` values that change the base model's weights when the adapter is
/// created (the saved factors belong to that residual base, not to the checkpoint).
const BASE_CHANGING_INITS: [&str; 4] = ["pissa", "olora", "corda", "loftq"];

/// PEFT's `init_lora_weights` values that leave the base as it is.
const PLAIN_INITS: [&str; 3] = ["gaussian", "eva", "orthogonal"];

/// Typed access to the fields of a PEFT config, with errors naming file and field.
struct Fields<'a> {
    path: &'a Path,
    config: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn number(&self, field: &str, default: Option<f64>) -> Result<f64> {
        match self.config.get(field) {
            None | Some(Value::Null) => {
                default.ok_or_else(|| field_error(self.path, field, "missing"))
            }
            Some(value) => value.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                field_error(
                    self.path,
                    field,
                    format!("expected a number, found {value}"),
                )
            }),
        }
    }

    fn flag(&self, field: &str) -> Result<bool> {
        match self.config.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(value) => Err(field_error(
                self.path,
                field,
                format!("expected a bool, found {value}"),
            )),
        }
    }

    /// `init_lora_weights`: any initialisation that leaves the base weights as they are is fine
    /// (the file holds the trained factors); PiSSA, OLoRA, CorDA and LoftQ subtract their start
    /// from the base, so their factors computed on the checkpoint would be wrong.
    fn check_initialisation(&self) -> Result<()> {
        let init = match self.config.get("init_lora_weights") {
            None | Some(Value::Null) | Some(Value::Bool(_)) => return Ok(()),
            Some(Value::String(init)) => init.as_str(),
            Some(other) => {
                return Err(field_error(
                    self.path,
                    "init_lora_weights",
                    format!("expected a bool or a string, found {other}"),
                ));
            }
        };
        if PLAIN_INITS.contains(&init) {
            return Ok(());
        }
        if BASE_CHANGING_INITS
            .iter()
            .any(|changing| init == *changing || init.starts_with(&format!("{changing}_")))
        {
            return Err(Error::Unsupported(format!(
                "PEFT LoRA with `init_lora_weights: \"{init}\"` ({}): it belongs to a base whose \
                 weights its initialisation changed; convert it to a plain LoRA with PEFT's \
                 `save_pretrained(..., path_initial_model_for_weight_conversion=...)` first",
                self.path.display()
            )));
        }
        Err(field_error(
            self.path,
            "init_lora_weights",
            format!("unknown initialisation \"{init}\""),
        ))
    }

    /// Features with no equivalent here: refused rather than loaded as something different.
    /// (`fan_in_fan_out` describes the base layer's storage, not the LoRA tensors; PEFT sets it
    /// from the module type whatever the file says, and so does the host here.)
    fn reject_unsupported(&self) -> Result<()> {
        self.check_initialisation()?;
        for field in ["lora_bias"] {
            if self.flag(field)? {
                return Err(Error::Unsupported(format!(
                    "PEFT LoRA with `{field}: true`"
                )));
            }
        }
        match self.config.get("bias").and_then(Value::as_str) {
            None | Some("none") => {}
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "PEFT LoRA with `bias: \"{other}\"`"
                )));
            }
        }
        for field in ["rank_pattern", "alpha_pattern"] {
            if self
                .config
                .get(field)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                return Err(Error::Unsupported(format!(
                    "PEFT LoRA with a non-empty `{field}`"
                )));
            }
        }
        if self
            .config
            .get("modules_to_save")
            .and_then(Value::as_array)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(Error::Unsupported(
                "PEFT LoRA with `modules_to_save`".into(),
            ));
        }
        Ok(())
    }
}
