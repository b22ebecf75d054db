//! A batch for [`BertModel`](super::BertModel), its checks, and the model's outputs.

use burn::tensor::{Int, Tensor};

use super::BertConfig;
use crate::error::{Error, Result};
use crate::models::input_checks::{check_not_empty, check_range, check_same_shape};

/// Token ids and masks for one batch.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding, `[batch, seq]` (all ones if absent).
    pub attention_mask: Option<Tensor<2, Int>>,
    /// Segment ids, `[batch, seq]` (zeros if absent).
    pub token_type_ids: Option<Tensor<2, Int>>,
}

/// Outputs of [`BertModel::forward`](super::BertModel::forward).
#[derive(Debug, Clone)]
pub struct BertModelOutput {
    /// Hidden states of the last layer, `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// `tanh(dense(h[CLS]))` if the model has a pooler, `[batch, hidden]`.
    pub pooler_output: Option<Tensor<2>>,
}

impl BertInput {
    /// Input ids with a padding mask and no token types.
    pub fn new(input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask: Some(attention_mask),
            token_type_ids: None,
        }
    }

    /// Checks that a model built from `config` can run this batch: at least one row and one
    /// position, at most `max_position_embeddings` positions, a mask and token types of the
    /// ids' shape, ids below `vocab_size` and token types below `type_vocab_size` (neither
    /// negative). The value checks read the smallest and largest ids back from the device.
    pub fn check(&self, config: &BertConfig) -> Result<()> {
        let dims = self.input_ids.dims();
        check_not_empty("input_ids", dims)?;
        let seq = dims[1];
        if seq > config.max_position_embeddings {
            return Err(Error::input(
                "input_ids",
                format!(
                    "{seq} positions, but the model has {} position embeddings",
                    config.max_position_embeddings
                ),
            ));
        }
        check_same_shape("attention_mask", self.attention_mask.as_ref(), dims)?;
        check_same_shape("token_type_ids", self.token_type_ids.as_ref(), dims)?;
        check_range("input_ids", &self.input_ids, config.vocab_size)?;
        match &self.token_type_ids {
            Some(types) => check_range("token_type_ids", types, config.type_vocab_size),
            None => Ok(()),
        }
    }
}
