//! Prompt tuning: trained embeddings that join the embedded input (AdapterHub's `PromptTuning`).

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use super::init::{InitRng, param};
use crate::config::{PromptCombine, PromptTuningConfig};
use crate::error::Result;

/// One adapter's prompt.
#[derive(Module, Debug)]
pub struct PromptTuning {
    /// The prompt's embeddings, `[prompt_length, hidden]` (AdapterHub's `prompt_embedding`).
    pub embedding: Param<Tensor<2>>,
    /// Where the prompt goes.
    #[module(skip)]
    pub combine: PromptCombine,
}

impl PromptTuning {
    /// A prompt for a model of width `hidden_size`, drawn from
    /// `U(-random_uniform_scale, random_uniform_scale)` (a `from_string` prompt is set from
    /// token embeddings afterwards).
    pub fn new(config: &PromptTuningConfig, hidden_size: usize, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut rng = InitRng::new(config.init_weights_seed, device);
        let n = config.prompt_length * hidden_size;
        let values = rng.uniform(n, config.random_uniform_scale);
        Ok(Self {
            embedding: param(values, [config.prompt_length, hidden_size], device),
            combine: config.combine,
        })
    }

    /// Prompt positions.
    pub fn len(&self) -> usize {
        self.embedding.shape().dims::<2>()[0]
    }

    /// Whether the prompt has no positions (never, for a validated config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many of a row's tokens come before the prompt (0, or 1 after the first token).
    pub fn offset(&self) -> usize {
        match self.combine {
            PromptCombine::Prefix => 0,
            PromptCombine::PrefixAfterBos => 1,
        }
    }
}
