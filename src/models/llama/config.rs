//! The Hugging Face `config.json` of a Llama-family decoder (Llama, Mistral, Qwen2).

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::LlamaModel;
use super::rope::RopeScaling;
use crate::config::{Activation, check_positive, check_probability, check_sizes};
use crate::error::{Error, Result};
use crate::models::hf_config::read_hf_config;

/// Which transformers architecture a config describes; they share the computation and differ
/// in biases, sliding windows and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderFamily {
    /// `LlamaForCausalLM` (`model_type` `"llama"`).
    Llama,
    /// `MistralForCausalLM` (`"mistral"`): a sliding attention window.
    Mistral,
    /// `Qwen2ForCausalLM` (`"qwen2"`): biases on the query, key and value projections.
    Qwen2,
}

impl DecoderFamily {
    /// transformers' `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            DecoderFamily::Llama => "llama",
            DecoderFamily::Mistral => "mistral",
            DecoderFamily::Qwen2 => "qwen2",
        }
    }

    /// transformers' causal-LM class.
    pub fn model_class(self) -> &'static str {
        match self {
            DecoderFamily::Llama => "LlamaForCausalLM",
            DecoderFamily::Mistral => "MistralForCausalLM",
            DecoderFamily::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// How a layer attends: to every earlier position, or to the last `window` positions only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerAttention {
    /// `"full_attention"`
    FullAttention,
    /// `"sliding_attention"`: the config's `sliding_window`.
    SlidingAttention,
}

/// The fields of a Hugging Face `config.json` that define a Llama, Mistral or Qwen2 decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// The architecture (`model_type`).
    pub model_type: DecoderFamily,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Width of the gated feed-forward block.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads per layer.
    pub num_attention_heads: usize,
    /// Key/value heads per layer (grouped-query attention); the query heads when absent.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// The feed-forward gate's non-linearity (`"silu"`).
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    /// The longest sequence (prompt and generated tokens) the model runs.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary frequencies.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Rescaled rotary frequencies (`"linear"`, `"llama3"`); `None` or `"default"` for none.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Whether the language-model head reuses the token embeddings.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the attention projections (Llama; Qwen2 always has them on q, k, v).
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the feed-forward projections (Llama).
    #[serde(default)]
    pub mlp_bias: bool,
    /// Dropout on attention probabilities.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Width of the sliding attention window (Mistral; Qwen2's sliding layers).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2: whether layers from `max_window_layers` on use the sliding window.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Qwen2: the first layer that slides when `use_sliding_window` is set.
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// Each layer's attention, as transformers 4.57 writes it for Qwen2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<LayerAttention>>,
    /// The padding token, used by generation.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    /// Checkpoint name, recorded in saved adapter configs.
    #[serde(
        default,
        rename = "_name_or_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub name_or_path: Option<String>,
}

fn default_act() -> Activation {
    Activation::Silu
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}

impl LlamaConfig {
    /// A Llama config with the given shape and transformers' defaults for everything else.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
        intermediate_size: usize,
    ) -> Self {
        Self {
            model_type: DecoderFamily::Llama,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: None,
            hidden_act: default_act(),
            max_position_embeddings: 2048,
            rms_norm_eps: default_eps(),
            rope_theta: default_theta(),
            rope_scaling: None,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            attention_dropout: 0.0,
            sliding_window: None,
            use_sliding_window: false,
            max_window_layers: None,
            layer_types: None,
            pad_token_id: None,
            name_or_path: None,
        }
    }

    /// A tiny config for tests and examples (hidden 32, 2 layers, 4 query and 2 key/value heads).
    pub fn tiny() -> Self {
        Self::new(61, 32, 2, 4, 2, 48)
    }

    /// Reads a Hugging Face `config.json` of a Llama, Mistral or Qwen2 model; other model types
    /// and unsupported values are errors naming the field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_hf_config(
            path.as_ref(),
            &["llama", "mistral", "qwen2"],
            false,
            Self::validate,
        )
    }

    /// Builds a randomly initialised model after checking every field.
    pub fn init(&self, device: &Device) -> Result<LlamaModel> {
        self.validate()?;
        Ok(LlamaModel::build(self, device))
    }

    /// Key/value heads per layer.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_width(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The sliding window of layer `layer`, if it has one.
    pub fn window_of(&self, layer: usize) -> Option<usize> {
        match self.model_type {
            DecoderFamily::Llama => None,
            DecoderFamily::Mistral => self.sliding_window,
            DecoderFamily::Qwen2 if !self.use_sliding_window => None,
            DecoderFamily::Qwen2 => {
                let sliding = match &self.layer_types {
                    Some(types) => types.get(layer) == Some(&LayerAttention::SlidingAttention),
                    None => layer >= self.max_window_layers.unwrap_or(self.num_hidden_layers),
                };
                self.sliding_window.filter(|_| sliding)
            }
        }
    }

    /// Whether the query, key and value projections have biases.
    pub(crate) fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == DecoderFamily::Qwen2
    }

    /// Checks every field: sizes at least 1, key/value heads dividing the query heads, an even
    /// head width, `hidden_act` a gate the family uses, a positive epsilon and rope base,
    /// `layer_types` one per layer. The error names the field.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        check_sizes(&sizes)?;
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(Error::invalid(
                "num_key_value_heads",
                self.kv_heads(),
                format!(
                    "must divide num_attention_heads {}",
                    self.num_attention_heads
                ),
            ));
        }
        let head = self.head_width();
        if head == 0 || head % 2 == 1 {
            return Err(Error::invalid(
                "head_dim",
                head,
                "must be even and at least 2 (rotary embeddings rotate pairs)",
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::invalid(
                "num_attention_heads",
                self.num_attention_heads,
                format!(
                    "must divide hidden_size {} (or set head_dim)",
                    self.hidden_size
                ),
            ));
        }
        if let Some(window) = self.sliding_window {
            check_sizes(&[("sliding_window", window)])?;
        }
        if let Some(types) = &self.layer_types
            && types.len() != self.num_hidden_layers
        {
            return Err(Error::invalid(
                "layer_types",
                types.len(),
                format!("must list {} layers", self.num_hidden_layers),
            ));
        }
        if let Some(scaling) = &self.rope_scaling {
            scaling.validate()?;
        }
        check_probability("attention_dropout", self.attention_dropout)?;
        check_positive("rms_norm_eps", self.rms_norm_eps)?;
        check_positive("rope_theta", self.rope_theta)
    }
}
