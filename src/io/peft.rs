//! Hugging Face PEFT's LoRA format: `adapter_config.json` (`peft_type: "LORA"`) and
//! `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight`.
//!
//! PEFT names the wrapped modules instead of describing a placement, so reading derives the
//! placement from the tensor keys and accepts it when it is one AdapterHub's `LoRAConfig` can
//! express (the same projections in every layer that is not left out). PEFT's scaling is
//! `lora_alpha / r` (`lora_alpha / √r` with `use_rslora`); it is carried over exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::Module;
use serde_json::{Value, json};

use super::adapterhub::read_either;
use super::keys::ReferenceName;
use super::tensors::{TensorMap, safetensors_bytes, write_atomically};
use super::transfer::{Collect, Fill};
use crate::config::{AdapterConfig, CompositionMode, LoRAConfig, LoRAInit};
use crate::error::{Error, Result};
use crate::model::{AdapterHost, AdapterModel, AdapterModules, build_modules};
use crate::sites::{LinearLocation, LinearPosition};

/// PEFT's config file (the same name as AdapterHub's).
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's safetensors weights file.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// PEFT's PyTorch weights file.
pub const PEFT_PYTORCH_WEIGHTS_FILE: &str = "adapter_model.bin";
/// Prefix PEFT puts before the base model's module paths.
const PEFT_PREFIX: &str = "base_model.model.";

/// A PEFT adapter read from disk and built for a host, not yet installed.
pub(crate) struct LoadedPeft {
    pub config: AdapterConfig,
    pub modules: AdapterModules,
}

/// PEFT's name of one of our LoRA parameters (PEFT's `lora_A` is `[r, d_input]`, as AdapterHub's).
fn peft_name(path: &str) -> Option<ReferenceName> {
    let name = match path {
        "lora_a" => "lora_A.weight",
        "lora_b" => "lora_B.weight",
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![name.into()],
        transpose: true,
    })
}

/// The module a linear site wraps, in transformers' naming (`encoder.layer.0.attention.self.query`).
fn module_path<M: AdapterHost>(model: &M, location: LinearLocation) -> String {
    let path = model.linear_site_path(location);
    path.strip_suffix(".loras").unwrap_or(&path).to_string()
}

/// Parses transformers' BERT module names into a site location.
fn parse_module(module: &str) -> Option<LinearLocation> {
    let rest = module.strip_prefix("encoder.layer.")?;
    let (layer, rest) = rest.split_once('.')?;
    let position = match rest {
        "attention.self.query" => LinearPosition::Query,
        "attention.self.key" => LinearPosition::Key,
        "attention.self.value" => LinearPosition::Value,
        "intermediate.dense" => LinearPosition::Intermediate,
        "output.dense" => LinearPosition::Output,
        _ => return None,
    };
    Some(LinearLocation {
        layer: layer.parse().ok()?,
        position,
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

/// The settings of a PEFT LoRA config that we honour; everything else must be at its default.
struct PeftSettings {
    r: usize,
    lora_alpha: f64,
    dropout: f64,
    rslora: bool,
}

fn read_settings(path: &Path) -> Result<PeftSettings> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let config: Value =
        serde_json::from_str(&text).map_err(|e| field_error(path, ".", e.to_string()))?;
    if !config.is_object() {
        return Err(field_error(path, ".", "expected a JSON object"));
    }
    match config.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        Some(other) => return Err(Error::Unsupported(format!("PEFT adapters of type {other}"))),
        None => return Err(field_error(path, "peft_type", "missing or not a string")),
    }
    let number = |field: &str, default: Option<f64>| -> Result<f64> {
        match config.get(field) {
            None | Some(Value::Null) => default.ok_or_else(|| field_error(path, field, "missing")),
            Some(value) => value.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                field_error(path, field, format!("expected a number, found {value}"))
            }),
        }
    };
    let flag = |field: &str| -> Result<bool> {
        match config.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(value) => Err(field_error(
                path,
                field,
                format!("expected a bool, found {value}"),
            )),
        }
    };
    let r = match config.get("r").and_then(Value::as_u64) {
        Some(r) if (1..=1 << 16).contains(&r) => r as usize,
        _ => {
            return Err(field_error(
                path,
                "r",
                format!("expected a rank ≥ 1, found {:?}", config.get("r")),
            ));
        }
    };
    let settings = PeftSettings {
        r,
        lora_alpha: number("lora_alpha", Some(8.0))?,
        dropout: number("lora_dropout", Some(0.0))?,
        rslora: flag("use_rslora")?,
    };
    if !(0.0..1.0).contains(&settings.dropout) {
        return Err(field_error(
            path,
            "lora_dropout",
            "must be a probability in [0, 1)",
        ));
    }
    // Features with no equivalent here: refuse rather than load something different.
    for field in ["use_dora", "fan_in_fan_out", "lora_bias"] {
        if flag(field)? {
            return Err(Error::Unsupported(format!(
                "PEFT LoRA with `{field}: true`"
            )));
        }
    }
    match config.get("bias").and_then(Value::as_str) {
        None | Some("none") => {}
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "PEFT LoRA with `bias: \"{other}\"`"
            )));
        }
    }
    for field in ["rank_pattern", "alpha_pattern"] {
        if config
            .get(field)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(Error::Unsupported(format!(
                "PEFT LoRA with a non-empty `{field}`"
            )));
        }
    }
    if config
        .get("modules_to_save")
        .and_then(Value::as_array)
        .is_some_and(|m| !m.is_empty())
    {
        return Err(Error::Unsupported(
            "PEFT LoRA with `modules_to_save`".into(),
        ));
    }
    Ok(settings)
}

/// The weights file of a PEFT directory, keys reduced to `<module>.lora_{A,B}.weight`.
fn read_peft_weights(dir: &Path) -> Result<(PathBuf, TensorMap)> {
    let (file, raw) = read_either(dir, PEFT_WEIGHTS_FILE, PEFT_PYTORCH_WEIGHTS_FILE, None)?;
    let mut tensors = TensorMap::new();
    for (key, tensor) in raw {
        let short = key.strip_prefix(PEFT_PREFIX).unwrap_or(&key);
        let short = short.strip_prefix("bert.").unwrap_or(short).to_string();
        if tensors.insert(short, tensor).is_some() {
            return Err(Error::format(
                &file,
                format!("tensor `{key}` appears twice"),
            ));
        }
    }
    Ok((file, tensors))
}

/// Reads the PEFT LoRA in `dir` and builds it for `model`, without changing `model`.
pub(crate) fn read_peft<M: AdapterHost>(model: &M, dir: &Path) -> Result<LoadedPeft> {
    let settings = read_settings(&dir.join(PEFT_CONFIG_FILE))?;
    let (file, tensors) = read_peft_weights(dir)?;

    // Placement from the keys: which modules carry lora_A/lora_B.
    let mut wrapped: BTreeMap<LinearLocation, String> = BTreeMap::new();
    for key in tensors.keys() {
        let module = key
            .strip_suffix(".lora_A.weight")
            .or_else(|| key.strip_suffix(".lora_B.weight"))
            .ok_or_else(|| Error::UnexpectedTensor {
                path: file.clone(),
                key: key.clone(),
            })?;
        let location = parse_module(module).ok_or_else(|| {
            Error::Unsupported(format!(
                "PEFT LoRA on `{module}` ({}): AdapterHub's LoRA wraps only the attention \
                 query/key/value and the feed-forward projections",
                file.display()
            ))
        })?;
        wrapped.insert(location, module.to_string());
    }
    if wrapped.is_empty() {
        return Err(Error::format(&file, "no LoRA tensors"));
    }
    let layers: BTreeSet<usize> = wrapped.keys().map(|l| l.layer).collect();
    let has = |position| wrapped.keys().any(|l| l.position == position);
    let attn_matrices: Vec<String> = [
        (LinearPosition::Query, "q"),
        (LinearPosition::Key, "k"),
        (LinearPosition::Value, "v"),
    ]
    .into_iter()
    .filter(|(p, _)| has(*p))
    .map(|(_, m)| m.to_string())
    .collect();
    // rsLoRA scales by lora_alpha/√r; with alpha' = lora_alpha·√r, alpha'/r is the same.
    let alpha = if settings.rslora {
        settings.lora_alpha * (settings.r as f64).sqrt()
    } else {
        settings.lora_alpha
    };
    let config = LoRAConfig {
        selfattn_lora: !attn_matrices.is_empty(),
        intermediate_lora: has(LinearPosition::Intermediate),
        output_lora: has(LinearPosition::Output),
        leave_out: (0..model.num_layers())
            .filter(|l| !layers.contains(l))
            .collect(),
        r: settings.r,
        alpha,
        dropout: settings.dropout,
        attn_matrices: if attn_matrices.is_empty() {
            vec!["q".into(), "v".into()]
        } else {
            attn_matrices
        },
        composition_mode: CompositionMode::Add,
        init_weights: LoRAInit::Lora,
        ..LoRAConfig::lora()
    };
    if let Some(layer) = layers.iter().find(|l| **l >= model.num_layers()) {
        return Err(Error::format(
            &file,
            format!(
                "LoRA on layer {layer}, but the model has {} layers",
                model.num_layers()
            ),
        ));
    }
    // The derived config must place modules exactly where the file has them.
    let mut placed = BTreeSet::new();
    model.visit_linear_sites(&mut |site| {
        if config.places_at(site.location()) {
            placed.insert(site.location());
        }
    });
    if let Some(missing) = placed.iter().find(|l| !wrapped.contains_key(l)) {
        return Err(Error::Unsupported(format!(
            "PEFT LoRA that wraps a projection in some layers but not in others ({}: no \
             tensors for `{}`)",
            file.display(),
            module_path(model, *missing)
        )));
    }
    let config = AdapterConfig::Lora(config);
    config.validate()?;
    let AdapterModules { residual, linear } = build_modules(model, &config, Some(0))?;
    let mut paths = Vec::new();
    model.visit_linear_sites(&mut |site| paths.push(module_path(model, site.location())));
    let mut used = BTreeSet::new();
    let device = model.device()?;
    let linear = linear
        .into_iter()
        .zip(paths)
        .map(|(lora, prefix)| {
            lora.map(|lora| {
                Fill::new(prefix, &peft_name, &file, &tensors, &mut used, &device).fill(lora)
            })
            .transpose()
        })
        .collect::<Result<_>>()?;
    if let Some(key) = tensors.keys().find(|k| !used.contains(*k)) {
        return Err(Error::UnexpectedTensor {
            path: file,
            key: key.clone(),
        });
    }
    Ok(LoadedPeft {
        config,
        modules: AdapterModules { residual, linear },
    })
}

/// Writes LoRA adapter `name` of `model` as a PEFT LoRA into `dir`.
pub(crate) fn save_peft<M: AdapterHost>(model: &M, dir: &Path, name: &str) -> Result<()> {
    let config = model
        .registry()
        .config(name)
        .ok_or_else(|| Error::UnknownAdapter(name.to_string()))?;
    let unsupported =
        |what: &str| Error::Unsupported(format!("saving `{name}` in PEFT format: {what}"));
    let lora = match config {
        AdapterConfig::Lora(lora) => lora,
        _ => {
            return Err(unsupported(
                "PEFT's LoRA format holds plain LoRA adapters only",
            ));
        }
    };
    if lora.composition_mode != CompositionMode::Add {
        return Err(unsupported("IA3 is a different PEFT type"));
    }
    if lora.use_gating {
        return Err(unsupported("PEFT has no gated LoRA"));
    }
    let mut tensors = TensorMap::new();
    let mut targets = Vec::new();
    model.visit_linear_sites(&mut |site| {
        if let Some(module) = site.loras().get(name) {
            let path = module_path(model, site.location());
            module.visit(&mut Collect {
                path: Vec::new(),
                prefix: format!("{PEFT_PREFIX}{path}"),
                naming: &peft_name,
                out: &mut tensors,
            });
            targets.push(path);
        }
    });
    let info = model.model_info();
    // Full module paths as target_modules match exactly these modules (PEFT matches a name
    // when a module's path equals it or ends in `.<name>`).
    let peft_config = json!({
        "alpha_pattern": {},
        "base_model_name_or_path": info.model_name,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": python_number(lora.alpha),
        "lora_dropout": lora.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": lora.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": null,
        "use_dora": false,
        "use_rslora": false,
    });
    let config_bytes = serde_json::to_vec_pretty(&peft_config).expect("JSON values serialise");
    write_atomically(
        dir,
        &[
            (PEFT_WEIGHTS_FILE, safetensors_bytes(&tensors)?),
            (PEFT_CONFIG_FILE, config_bytes),
        ],
    )
}
