//! The reference hosts as [`Classify`] hosts, for burn-train's `Learner` (feature `train`).

use burn::tensor::{Int, Tensor};

use crate::error::Result;
use crate::models::bert::{BertInput, BertModel};
use crate::models::decoder::DecoderInput;
use crate::models::gpt2::Gpt2Model;
use crate::models::llama::LlamaModel;
use crate::train::learner::{Classify, InputLimits, PaddingSide};

impl Classify for BertModel {
    type Input = BertInput;
    const PADDING: PaddingSide = PaddingSide::Right;

    fn input_limits(&self) -> InputLimits {
        InputLimits {
            vocab_size: self.config().vocab_size,
            max_positions: self.config().max_position_embeddings,
        }
    }

    fn classification_input(ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> BertInput {
        BertInput::new(ids, mask)
    }

    fn classification_logits(&self, head: &str, input: BertInput) -> Result<Tensor<2>> {
        self.classify(head, input)
    }
}

impl Classify for LlamaModel {
    type Input = DecoderInput;
    const PADDING: PaddingSide = PaddingSide::Left;

    fn input_limits(&self) -> InputLimits {
        InputLimits {
            vocab_size: self.config().vocab_size,
            max_positions: self.config().max_position_embeddings,
        }
    }

    fn classification_input(ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> DecoderInput {
        DecoderInput::new(ids, mask)
    }

    fn classification_logits(&self, head: &str, input: DecoderInput) -> Result<Tensor<2>> {
        self.classify(head, input)
    }
}

impl Classify for Gpt2Model {
    type Input = DecoderInput;
    const PADDING: PaddingSide = PaddingSide::Left;

    fn input_limits(&self) -> InputLimits {
        InputLimits {
            vocab_size: self.config().vocab_size,
            max_positions: self.config().n_positions,
        }
    }

    fn classification_input(ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> DecoderInput {
        DecoderInput::new(ids, mask)
    }

    fn classification_logits(&self, head: &str, input: DecoderInput) -> Result<Tensor<2>> {
        self.classify(head, input)
    }
}
