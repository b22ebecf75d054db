//! `PromptTuningConfig`: AdapterHub's config of prompt tuning (architecture `"prompt_tuning"`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a new prompt's embeddings start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptInit {
    /// `U(-random_uniform_scale, random_uniform_scale)`.
    RandomUniform,
    /// The word embeddings of `prompt_init_text`'s tokens, repeated to `prompt_length`. This
    /// crate has no tokenizer: add the adapter with `random_uniform` and call
    /// [`AdapterModel::init_prompt_from_tokens`](crate::AdapterModel::init_prompt_from_tokens)
    /// with the text's token ids.
    FromString,
}

/// Where the prompt goes in the embedded input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptCombine {
    /// Before every token.
    Prefix,
    /// After the first token (`[CLS]` or `<s>`), before the others.
    PrefixAfterBos,
}

/// Configuration of prompt tuning (Lester et al., 2021; AdapterHub's `PromptTuningConfig`), field
/// for field.
///
/// `prompt_length` trained embeddings join the embedded input, and the attention mask grows
/// with them. The model's outputs keep the input's positions (the prompt's are internal), so
/// heads, losses and generation read the input's tokens.
///
/// Its JSON form carries `"architecture": "prompt_tuning"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "architecture",
    rename = "prompt_tuning",
    deny_unknown_fields,
    default = "PromptTuningConfig::prompt_tuning"
)]
pub struct PromptTuningConfig {
    /// Prompt positions.
    pub prompt_length: usize,
    /// How the embeddings start.
    pub prompt_init: PromptInit,
    /// The text of `from_string`.
    pub prompt_init_text: Option<String>,
    /// The bound of `random_uniform` (0.5). AdapterHub keeps it out of its files (a class
    /// attribute, not a field); it is written only when it differs.
    #[serde(skip_serializing_if = "is_default_scale")]
    pub random_uniform_scale: f64,
    /// Where the prompt goes.
    pub combine: PromptCombine,
    /// Seed of the initialisation.
    pub init_weights_seed: Option<u64>,
}

const DEFAULT_SCALE: f64 = 0.5;

fn is_default_scale(scale: &f64) -> bool {
    *scale == DEFAULT_SCALE
}

impl PromptTuningConfig {
    /// The `prompt_tuning` preset: 10 positions before the input, `U(-0.5, 0.5)`.
    pub fn prompt_tuning() -> Self {
        Self {
            prompt_length: 10,
            prompt_init: PromptInit::RandomUniform,
            prompt_init_text: None,
            random_uniform_scale: DEFAULT_SCALE,
            combine: PromptCombine::Prefix,
            init_weights_seed: None,
        }
    }

    /// Checks every field's domain.
    pub fn validate(&self) -> Result<()> {
        if self.prompt_length == 0 {
            return Err(Error::invalid(
                "prompt_length",
                0,
                "a prompt needs at least one position",
            ));
        }
        if !(self.random_uniform_scale.is_finite() && self.random_uniform_scale >= 0.0) {
            return Err(Error::invalid(
                "random_uniform_scale",
                self.random_uniform_scale,
                "must be finite and not negative",
            ));
        }
        if self.prompt_init == PromptInit::FromString && self.prompt_init_text.is_none() {
            return Err(Error::invalid(
                "prompt_init_text",
                "null",
                "prompt_init \"from_string\" needs the text",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_serialises_as_adapterhubs() {
        let json = serde_json::to_value(PromptTuningConfig::prompt_tuning()).unwrap();
        let expected = serde_json::json!({
            "architecture": "prompt_tuning", "combine": "prefix", "init_weights_seed": null,
            "prompt_init": "random_uniform", "prompt_init_text": null, "prompt_length": 10,
        });
        assert_eq!(json, expected);
    }
}
