//! The Hugging Face `config.json` of a BERT encoder.

use std::path::Path;

use serde::{Deserialize, Serialize};

use burn::tensor::Device;

use super::BertModel;
use crate::config::{Activation, check_positive, check_probability, check_sizes};
use crate::error::{Error, Result};
use crate::models::hf_config::read_hf_config;

/// The fields of a Hugging Face `config.json` that define a BERT encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Feed-forward non-linearity (`"gelu"` is the exact erf form; an unknown name is an error).
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    /// Dropout on hidden states.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned positions.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Checkpoint name, recorded in saved adapter configs.
    #[serde(
        default,
        rename = "_name_or_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub name_or_path: Option<String>,
}

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_positions() -> usize {
    512
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// A config with the given shape and BERT's defaults for everything else.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
        intermediate_size: usize,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size,
            hidden_act: default_act(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            name_or_path: None,
        }
    }

    /// A tiny config for tests and examples (hidden 32, 2 layers, 4 heads).
    pub fn tiny() -> Self {
        Self::new(99, 32, 2, 4, 64)
    }

    /// bert-base-uncased's shape (hidden 768, 12 layers, 12 heads, FFN 3072).
    pub fn bert_base() -> Self {
        Self::new(30522, 768, 12, 12, 3072)
    }

    /// Reads a Hugging Face `config.json` of a BERT model (`model_type` `"bert"`, or absent as in
    /// old checkpoints); other model types are refused, as their weights would load into the
    /// wrong computation.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_hf_config(path.as_ref(), &["bert"], true, Self::validate)
    }

    /// Builds a randomly initialised model (with a pooler) after checking every field.
    pub fn init(&self, device: &Device) -> Result<BertModel> {
        self.validate()?;
        Ok(BertModel::build(self, device))
    }

    /// Checks every field: sizes at least 1, heads dividing the hidden size, probabilities in
    /// `[0, 1)`, a positive `layer_norm_eps`. The error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::invalid(
                "num_attention_heads",
                self.num_attention_heads,
                format!("must divide hidden_size {}", self.hidden_size),
            ));
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        check_sizes(&sizes)?;
        check_probability("hidden_dropout_prob", self.hidden_dropout_prob)?;
        check_probability(
            "attention_probs_dropout_prob",
            self.attention_probs_dropout_prob,
        )?;
        check_positive("layer_norm_eps", self.layer_norm_eps)
    }
}
