//! Adapter configurations, JSON-compatible with AdapterHub's `config` objects.
//!
//! [`AdapterConfig`] is the one type the model API takes; it wraps the per-method configs
//! ([`BnConfig`], [`LoRAConfig`]) and unions of them. [`FusionConfig`] configures AdapterFusion
//! layers. The placement types ([`SiteLocation`], [`LinearLocation`]) say where a config puts
//! its modules.

mod activation;
mod bottleneck;
mod fusion;
mod lora;
mod lora_init;
mod parse;
mod phm;
mod placement;
mod prefix;
mod prompt;
mod reft;
mod union;
mod values;

pub use activation::Activation;
pub use bottleneck::*;
pub use fusion::*;
pub use lora::*;
pub use phm::{PhmRuleInit, PhmWeightInit};
pub use placement::*;
pub use prefix::*;
pub use prompt::*;
pub use reft::*;
pub use values::*;

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The configuration of one named adapter: a single method or a union of methods.
///
/// `architecture` decides the method, as in AdapterHub: absent/`"bottleneck"` is a bottleneck
/// adapter, `"lora"` LoRA or IA3, `"union"` a list of configs applied together.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// Configs are built once per adapter; boxing the large variant would only add noise to matches.
#[allow(clippy::large_enum_variant)]
pub enum AdapterConfig {
    /// A bottleneck adapter (Pfeiffer, Houlsby, parallel, ...).
    Bottleneck(BnConfig),
    /// LoRA or IA3.
    Lora(LoRAConfig),
    /// Prefix tuning.
    PrefixTuning(PrefixTuningConfig),
    /// Prompt tuning.
    PromptTuning(PromptTuningConfig),
    /// Representation fine-tuning (LoReFT, NoReFT, DiReFT).
    Reft(ReftConfig),
    /// Several methods under one adapter name.
    Union(Vec<AdapterConfig>),
}

/// AdapterHub's `architecture` values: which family of methods a config belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Architecture {
    /// Bottleneck adapters (AdapterHub writes no `architecture` for them).
    Bottleneck,
    /// LoRA and its relatives (IA3, DoRA, VeRA).
    Lora,
    /// MTL-LoRA (a [`LoRAConfig`] with [`MultiTaskLoRA`] factors).
    MtlLora,
    /// Prefix tuning.
    PrefixTuning,
    /// Prompt tuning.
    PromptTuning,
    /// Representation fine-tuning (ReFT).
    Reft,
    /// A union of other configs.
    Union,
}

impl Architecture {
    /// AdapterHub's string for it.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Bottleneck => "bottleneck",
            Architecture::Lora => "lora",
            Architecture::MtlLora => "mtl_lora",
            Architecture::PrefixTuning => "prefix_tuning",
            Architecture::PromptTuning => "prompt_tuning",
            Architecture::Reft => "reft",
            Architecture::Union => "union",
        }
    }

    /// Reads a config's `architecture` value (absent or `null`: a bottleneck).
    fn of(config: &Map<String, Value>) -> Result<Self> {
        let name = match config.get("architecture") {
            None | Some(Value::Null) => return Ok(Architecture::Bottleneck),
            Some(Value::String(name)) => name.as_str(),
            Some(other) => return Err(Error::invalid("architecture", other, "must be a string")),
        };
        Ok(match name {
            "bottleneck" => Architecture::Bottleneck,
            "lora" => Architecture::Lora,
            "mtl_lora" => Architecture::MtlLora,
            "prefix_tuning" => Architecture::PrefixTuning,
            "prompt_tuning" => Architecture::PromptTuning,
            "reft" => Architecture::Reft,
            "union" => Architecture::Union,
            other => {
                return Err(Error::invalid(
                    "architecture",
                    format!("{other:?}"),
                    "expected bottleneck, lora, mtl_lora, prefix_tuning, prompt_tuning, reft or union",
                ));
            }
        })
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<LoRAConfig> for AdapterConfig {
    fn from(config: LoRAConfig) -> Self {
        AdapterConfig::Lora(config)
    }
}

impl From<PrefixTuningConfig> for AdapterConfig {
    fn from(config: PrefixTuningConfig) -> Self {
        AdapterConfig::PrefixTuning(config)
    }
}

impl From<PromptTuningConfig> for AdapterConfig {
    fn from(config: PromptTuningConfig) -> Self {
        AdapterConfig::PromptTuning(config)
    }
}

impl From<ReftConfig> for AdapterConfig {
    fn from(config: ReftConfig) -> Self {
        AdapterConfig::Reft(config)
    }
}

impl From<BnConfig> for AdapterConfig {
    fn from(config: BnConfig) -> Self {
        AdapterConfig::Bottleneck(config)
    }
}

/// The preset names AdapterHub registers, with the architecture each belongs to.
const KNOWN_PRESETS: &[(&str, &str)] = &[
    ("seq_bn", "bottleneck"),
    ("pfeiffer", "bottleneck"),
    ("double_seq_bn", "bottleneck"),
    ("houlsby", "bottleneck"),
    ("par_bn", "bottleneck"),
    ("parallel", "bottleneck"),
    ("scaled_par_bn", "bottleneck"),
    ("seq_bn_inv", "invertible bottleneck"),
    ("pfeiffer+inv", "invertible bottleneck"),
    ("double_seq_bn_inv", "invertible bottleneck"),
    ("houlsby+inv", "invertible bottleneck"),
    ("compacter", "compacter"),
    ("compacter++", "compacter"),
    ("lora", "lora"),
    ("ia3", "lora (ia3)"),
    ("dora", "lora (dora)"),
    ("vera", "lora (vera)"),
    ("dvora", "lora (vera)"),
    ("mtl_lora", "mtl_lora"),
    ("prefix_tuning", "prefix_tuning"),
    ("prefix_tuning_flat", "prefix_tuning"),
    ("prompt_tuning", "prompt_tuning"),
    ("mam", "union"),
    ("unipelt", "union"),
    ("loreft", "reft"),
    ("noreft", "reft"),
    ("direft", "reft"),
];

impl AdapterConfig {
    /// Loads a config the way AdapterHub's `AdapterConfig.load` does.
    ///
    /// `spec` may be, in the order they are tried (AdapterHub's): a JSON object, a preset name
    /// (`"seq_bn"`, `"pfeiffer"`, `"houlsby"`, `"lora"`, ...), the path of a JSON file (a bare
    /// config or an `adapter_config.json`), or a config string with overrides and unions
    /// (`"seq_bn[reduction_factor=8,non_linearity=gelu]|lora"`). A file called like a preset
    /// does not shadow the preset.
    ///
    /// ```
    /// use burn_adapters::{AdapterConfig, BnConfig};
    /// let config = AdapterConfig::load("pfeiffer[reduction_factor=8]")?;
    /// let AdapterConfig::Bottleneck(bn) = config else { unreachable!() };
    /// assert_eq!(bn, BnConfig { reduction_factor: 8.0.into(), ..BnConfig::seq_bn() });
    /// # Ok::<(), burn_adapters::Error>(())
    /// ```
    pub fn load(spec: &str) -> Result<Self> {
        let trimmed = spec.trim();
        if trimmed.starts_with('{') {
            let value: Value = serde_json::from_str(trimmed).map_err(|e| Error::Json {
                path: "<string>".into(),
                field: ".".into(),
                reason: e.to_string(),
            })?;
            return Self::from_json(&value);
        }
        if is_preset(trimmed) {
            return Self::from_json(&Value::Object(Self::preset_json(trimmed)?));
        }
        let path = Path::new(trimmed);
        if !trimmed.is_empty() && path.is_file() {
            return Self::from_file(path);
        }
        Self::from_config_string(trimmed)
    }

    /// A config string: `name[overrides]` items joined by `|` into a union.
    fn from_config_string(text: &str) -> Result<Self> {
        let items = parse::parse_config_string(text)?;
        let mut configs = items
            .into_iter()
            .map(|item| {
                let mut base = Self::preset_json(&item.name)?;
                for (key, value) in item.overrides {
                    base.insert(key, value);
                }
                Self::from_json(&Value::Object(base))
            })
            .collect::<Result<Vec<_>>>()?;
        if configs.len() == 1 {
            return Ok(configs.remove(0));
        }
        let union = AdapterConfig::Union(configs);
        union.validate()?;
        Ok(union)
    }

    /// Reads a JSON file holding either a bare config or an `adapter_config.json` (whose
    /// `config` key holds it).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.into(),
            field: ".".into(),
            reason: e.to_string(),
        })?;
        let config = value
            .get("config")
            .filter(|c| c.is_object())
            .unwrap_or(&value);
        Self::from_json(config).map_err(|e| match e {
            Error::Json { field, reason, .. } => Error::Json {
                path: path.into(),
                field,
                reason,
            },
            other => other,
        })
    }

    fn preset_json(name: &str) -> Result<Map<String, Value>> {
        let preset = BnConfig::preset(name)
            .map(AdapterConfig::from)
            .or_else(|| LoRAConfig::preset(name).map(AdapterConfig::from))
            .or_else(|| PrefixTuningConfig::preset(name).map(AdapterConfig::from))
            .or_else(|| {
                (name == "prompt_tuning").then(|| PromptTuningConfig::prompt_tuning().into())
            })
            .or_else(|| ReftConfig::preset(name).map(AdapterConfig::from))
            .or_else(|| Self::union_preset(name));
        if let Some(config) = preset {
            match config.to_json() {
                Value::Object(map) => return Ok(map),
                _ => unreachable!("a config serialises to a JSON object"),
            }
        }
        match KNOWN_PRESETS.iter().find(|(preset, _)| *preset == name) {
            Some((_, arch)) => Err(Error::Unsupported(format!(
                "config `{name}` (architecture {arch})"
            ))),
            None => Err(Error::UnknownConfig(crate::error::shorten(name, 0))),
        }
    }

    /// Builds a config from AdapterHub's JSON form, validating every field.
    pub fn from_json(value: &Value) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(Error::Json {
                path: "<config>".into(),
                field: ".".into(),
                reason: format!("a config must be a JSON object, found {value}"),
            });
        };
        // The architecture key chooses the type; the type's own fields are the rest.
        let mut fields = map.clone();
        let architecture = Architecture::of(map)?;
        fields.remove("architecture");
        let fields = Value::Object(fields);
        let config = match architecture {
            Architecture::Bottleneck => AdapterConfig::Bottleneck(deserialize_named(&fields)?),
            Architecture::Lora => AdapterConfig::Lora(deserialize_named(&fields)?),
            Architecture::MtlLora => AdapterConfig::Lora(mtl_lora_from_json(fields)?),
            Architecture::PrefixTuning => AdapterConfig::PrefixTuning(deserialize_named(&fields)?),
            Architecture::PromptTuning => AdapterConfig::PromptTuning(deserialize_named(&fields)?),
            Architecture::Reft => AdapterConfig::Reft(deserialize_named(&fields)?),
            Architecture::Union => Self::union_from_json(&fields)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// The `configs` list of a union.
    fn union_from_json(fields: &Value) -> Result<Self> {
        let parts = match fields.get("configs") {
            Some(Value::Array(parts)) if !parts.is_empty() => parts,
            Some(Value::Array(_)) => {
                return Err(Error::invalid(
                    "configs",
                    "[]",
                    "a union needs at least one config",
                ));
            }
            _ => {
                return Err(Error::invalid(
                    "configs",
                    "missing",
                    "a union needs a `configs` list",
                ));
            }
        };
        if let Some(key) = fields
            .as_object()
            .and_then(|map| map.keys().find(|k| *k != "configs"))
        {
            return Err(Error::invalid(key, "-", "a union has only `configs`"));
        }
        parts
            .iter()
            .map(Self::from_json)
            .collect::<Result<Vec<_>>>()
            .map(AdapterConfig::Union)
    }

    /// AdapterHub's JSON form of this config (the `config` object of `adapter_config.json`).
    pub fn to_json(&self) -> Value {
        match self {
            AdapterConfig::Bottleneck(config) => {
                serde_json::to_value(config).expect("a BnConfig always serialises")
            }
            AdapterConfig::Lora(config) => {
                let mut value =
                    serde_json::to_value(config).expect("a LoRAConfig always serialises");
                if let (Some(multi_task), Value::Object(map)) = (&config.multi_task, &mut value) {
                    let Ok(Value::Object(fields)) = serde_json::to_value(multi_task) else {
                        unreachable!("MultiTaskLoRA serialises to an object")
                    };
                    map.extend(fields);
                    map.insert("architecture".into(), "mtl_lora".into());
                }
                value
            }
            AdapterConfig::PrefixTuning(config) => {
                serde_json::to_value(config).expect("a PrefixTuningConfig always serialises")
            }
            AdapterConfig::PromptTuning(config) => {
                serde_json::to_value(config).expect("a PromptTuningConfig always serialises")
            }
            AdapterConfig::Reft(config) => {
                serde_json::to_value(config).expect("a ReftConfig always serialises")
            }
            AdapterConfig::Union(configs) => serde_json::json!({
                "architecture": "union",
                "configs": configs.iter().map(Self::to_json).collect::<Vec<_>>(),
            }),
        }
    }

    /// The config's architecture (AdapterHub's `architecture` key).
    pub fn architecture(&self) -> Architecture {
        match self {
            AdapterConfig::Bottleneck(_) => Architecture::Bottleneck,
            AdapterConfig::Lora(config) if config.multi_task.is_some() => Architecture::MtlLora,
            AdapterConfig::Lora(_) => Architecture::Lora,
            AdapterConfig::PrefixTuning(_) => Architecture::PrefixTuning,
            AdapterConfig::PromptTuning(_) => Architecture::PromptTuning,
            AdapterConfig::Reft(_) => Architecture::Reft,
            AdapterConfig::Union(_) => Architecture::Union,
        }
    }

    /// The methods of this config: the configs of a union, else the config itself.
    pub fn parts(&self) -> &[AdapterConfig] {
        match self {
            AdapterConfig::Union(configs) => configs,
            single => std::slice::from_ref(single),
        }
    }

    /// This config if it is a bottleneck config.
    fn as_bottleneck(&self) -> Option<&BnConfig> {
        match self {
            AdapterConfig::Bottleneck(config) => Some(config),
            _ => None,
        }
    }

    /// Checks every field's domain (including parts of a union).
    pub fn validate(&self) -> Result<()> {
        match self {
            AdapterConfig::Bottleneck(config) => config.validate(),
            AdapterConfig::Lora(config) => config.validate(),
            AdapterConfig::PrefixTuning(config) => config.validate(),
            AdapterConfig::PromptTuning(config) => config.validate(),
            AdapterConfig::Reft(config) => config.validate(),
            AdapterConfig::Union(configs) => {
                for config in configs {
                    if matches!(config, AdapterConfig::Union(_)) {
                        return Err(Error::invalid(
                            "configs",
                            "union",
                            "unions cannot be nested",
                        ));
                    }
                    config.validate()?;
                }
                union::check_union_pairs(configs)
            }
        }
    }

    /// The first bottleneck part of this config, if any.
    pub fn bottleneck(&self) -> Option<&BnConfig> {
        self.parts().iter().find_map(Self::as_bottleneck)
    }

    /// The LoRA/IA3 part of this config, if any.
    pub fn lora(&self) -> Option<&LoRAConfig> {
        self.parts().iter().find_map(|part| match part {
            AdapterConfig::Lora(config) => Some(config),
            _ => None,
        })
    }

    /// The prefix-tuning part of this config, if any.
    pub fn prefix_tuning(&self) -> Option<&PrefixTuningConfig> {
        self.parts().iter().find_map(|part| match part {
            AdapterConfig::PrefixTuning(config) => Some(config),
            _ => None,
        })
    }

    /// The prompt-tuning part of this config, if any.
    pub fn prompt_tuning(&self) -> Option<&PromptTuningConfig> {
        self.parts().iter().find_map(|part| match part {
            AdapterConfig::PromptTuning(config) => Some(config),
            _ => None,
        })
    }

    /// The ReFT part of this config, if any.
    pub fn reft(&self) -> Option<&ReftConfig> {
        self.parts().iter().find_map(|part| match part {
            AdapterConfig::Reft(config) => Some(config),
            _ => None,
        })
    }

    /// Layers listed in `leave_out` by any part of the config.
    pub(crate) fn leave_out(&self) -> Vec<usize> {
        match self {
            AdapterConfig::Bottleneck(config) => config.leave_out.clone(),
            AdapterConfig::Lora(config) => config.leave_out.clone(),
            AdapterConfig::PrefixTuning(config) => config.leave_out.clone(),
            AdapterConfig::PromptTuning(_) => Vec::new(),
            AdapterConfig::Reft(_) => Vec::new(),
            AdapterConfig::Union(configs) => configs.iter().flat_map(Self::leave_out).collect(),
        }
    }
}

/// An `mtl_lora` config: its [`MultiTaskLoRA`] keys, the rest a [`LoRAConfig`].
fn mtl_lora_from_json(mut fields: Value) -> Result<LoRAConfig> {
    let Value::Object(map) = &mut fields else {
        unreachable!("from_json passes the config's object")
    };
    let multi_task: Map<String, Value> = MultiTaskLoRA::KEYS
        .iter()
        .filter_map(|key| map.remove(*key).map(|value| (key.to_string(), value)))
        .collect();
    let multi_task = deserialize_named(&Value::Object(multi_task))?;
    Ok(LoRAConfig {
        multi_task: Some(multi_task),
        ..deserialize_named(&fields)?
    })
}

/// Whether `name` is one of AdapterHub's preset names.
fn is_preset(name: &str) -> bool {
    KNOWN_PRESETS.iter().any(|(preset, _)| *preset == name)
}

/// Deserialises `T`, turning serde's message into an error naming the JSON path of the field.
fn deserialize_named<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        let value_text = lookup(value, &field)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        Error::invalid(field, value_text, inner)
    })
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty() && *p != "?")
        .try_fold(value, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_is_named() {
        let err = AdapterConfig::load("seq_bn[init_weights=xavier]").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { field, .. } if field == "init_weights"),
            "{err}"
        );
        let err = AdapterConfig::load("seq_bn[reduction_factor=0]").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { field, .. } if field == "reduction_factor"),
            "{err}"
        );
        let err = AdapterConfig::load("seq_bn[bogus=1]").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
