//! The Hugging Face `config.json` of a GPT-2 model.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::Gpt2Model;
use crate::config::{Activation, check_positive, check_probability, check_sizes};
use crate::error::{Error, Result};
use crate::models::hf_config::read_hf_config;

/// The fields of a Hugging Face GPT-2 `config.json` (`GPT2LMHeadModel`), with transformers'
/// defaults for absent ones. Its JSON form carries `"model_type": "gpt2"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model_type", rename = "gpt2")]
pub struct Gpt2Config {
    /// Vocabulary size.
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// The longest sequence (prompt and generated tokens): the learned positions.
    #[serde(default = "default_positions")]
    pub n_positions: usize,
    /// Width of the hidden states.
    #[serde(default = "default_embd")]
    pub n_embd: usize,
    /// Number of decoder blocks.
    #[serde(default = "default_layers")]
    pub n_layer: usize,
    /// Attention heads per block.
    #[serde(default = "default_heads")]
    pub n_head: usize,
    /// Width of the feed-forward block; `4·n_embd` when absent.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// The feed-forward non-linearity (`"gelu_new"`).
    #[serde(default = "default_act")]
    pub activation_function: Activation,
    /// Dropout after the attention and feed-forward blocks.
    #[serde(default = "default_dropout")]
    pub resid_pdrop: f64,
    /// Dropout on the embeddings.
    #[serde(default = "default_dropout")]
    pub embd_pdrop: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attn_pdrop: f64,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Whether attention scores are divided by `√head_dim`.
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Whether the scores of block `i` are also divided by `i + 1`.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// transformers' upcast-and-reorder of the eager attention: the same values in f32.
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    /// Cross-attention blocks (encoder-decoder use); not supported.
    #[serde(default)]
    pub add_cross_attention: bool,
    /// Whether the language-model head reuses the token embeddings (GPT-2 always does).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
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

fn default_vocab() -> usize {
    50257
}
fn default_positions() -> usize {
    1024
}
fn default_embd() -> usize {
    768
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    12
}
fn default_act() -> Activation {
    Activation::GeluNew
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl Gpt2Config {
    /// A GPT-2 config with the given shape and transformers' defaults for everything else.
    pub fn new(vocab_size: usize, n_embd: usize, n_layer: usize, n_head: usize) -> Self {
        Self {
            vocab_size,
            n_positions: default_positions(),
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            activation_function: default_act(),
            resid_pdrop: default_dropout(),
            embd_pdrop: default_dropout(),
            attn_pdrop: default_dropout(),
            layer_norm_epsilon: default_eps(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
            add_cross_attention: false,
            tie_word_embeddings: true,
            pad_token_id: None,
            name_or_path: None,
        }
    }

    /// A tiny config for tests and examples (hidden 32, 2 blocks, 4 heads, 128 positions).
    pub fn tiny() -> Self {
        Self {
            n_positions: 128,
            ..Self::new(61, 32, 2, 4)
        }
    }

    /// Reads a Hugging Face `config.json` of a GPT-2 model; other model types and unsupported
    /// values are errors naming the field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_hf_config(path.as_ref(), &["gpt2"], false, Self::validate)
    }

    /// Builds a randomly initialised model after checking every field.
    pub fn init(&self, device: &Device) -> Result<Gpt2Model> {
        self.validate()?;
        Ok(Gpt2Model::build(self, device))
    }

    /// Width of the feed-forward block.
    pub fn inner_size(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Width of one attention head.
    pub fn head_width(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// The factor block `layer` multiplies its attention scores by.
    pub(crate) fn attention_scale(&self, layer: usize) -> f64 {
        let mut scale = 1.0;
        if self.scale_attn_weights {
            scale /= (self.head_width() as f64).sqrt();
        }
        if self.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        scale
    }

    /// Checks every field: sizes at least 1, heads dividing `n_embd`, no cross-attention,
    /// probabilities in `[0, 1]`, a positive epsilon. The error names the field.
    pub fn validate(&self) -> Result<()> {
        check_sizes(&[
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.inner_size()),
        ])?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::invalid(
                "n_head",
                self.n_head,
                format!("must divide n_embd {}", self.n_embd),
            ));
        }
        if self.add_cross_attention {
            return Err(Error::invalid(
                "add_cross_attention",
                true,
                "cross-attention (encoder-decoder GPT-2) is not supported",
            ));
        }
        check_probability("resid_pdrop", self.resid_pdrop)?;
        check_probability("embd_pdrop", self.embd_pdrop)?;
        check_probability("attn_pdrop", self.attn_pdrop)?;
        check_positive("layer_norm_epsilon", self.layer_norm_epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_writes_and_reads_back_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let config = Gpt2Config::tiny();
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(Gpt2Config::from_file(&path).unwrap(), config);
    }

    /// Found by the `model_config` fuzz target: serde_json's default float parser reads
    /// `1e-45` an ulp away from the nearest double, so the shortest form it writes back
    /// names another number.
    #[test]
    fn tiny_floats_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut text = serde_json::to_value(Gpt2Config::tiny()).unwrap();
        text["layer_norm_epsilon"] = serde_json::from_str("1e-45").unwrap();
        std::fs::write(&path, text.to_string()).unwrap();
        let config = Gpt2Config::from_file(&path).unwrap();
        assert_eq!(config.layer_norm_epsilon.to_bits(), 1e-45f64.to_bits());
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(Gpt2Config::from_file(&path).unwrap(), config);
    }
}
