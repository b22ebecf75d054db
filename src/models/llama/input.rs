//! A batch for [`LlamaModel`](super::LlamaModel) and its checks.

use burn::tensor::{Int, Tensor};

use super::LlamaConfig;
use crate::error::{Error, Result};
use crate::models::input_checks::check_range;

/// Token ids, padding and positions for one batch of a decoder.
#[derive(Debug, Clone)]
pub struct LlamaInput {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding, `[batch, seq]` (all ones if absent). Decoders pad on
    /// the left.
    pub attention_mask: Option<Tensor<2, Int>>,
    /// The position of each token, `[batch, seq]`; if absent, `past..past + seq` in every row
    /// (`past` being the cached length), as transformers' forward does. Generation passes the
    /// positions of left-padded rows (`cumsum(mask) - 1`).
    pub position_ids: Option<Tensor<2, Int>>,
}

impl LlamaInput {
    /// Input ids with a padding mask.
    pub fn new(input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask: Some(attention_mask),
            position_ids: None,
        }
    }

    /// Input ids without padding.
    pub fn ids(input_ids: Tensor<2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask: None,
            position_ids: None,
        }
    }

    /// Checks that a model built from `config` can run this batch after `past` cached
    /// positions of `cached_batch` rows: at least one row and one position, at most
    /// `max_position_embeddings` positions in all, a mask and positions of the ids' shape, ids
    /// below `vocab_size` and positions below `max_position_embeddings` (neither negative). The
    /// value checks read the smallest and largest ids back from the device.
    pub fn check(&self, config: &LlamaConfig, past: usize, cached_batch: usize) -> Result<()> {
        let [batch, seq] = self.input_ids.dims();
        if batch == 0 || seq == 0 {
            return Err(Error::input(
                "input_ids",
                format!("shape [{batch}, {seq}] is empty"),
            ));
        }
        if past > 0 && batch != cached_batch {
            return Err(Error::input(
                "input_ids",
                format!("{batch} rows, but the cache holds {cached_batch}"),
            ));
        }
        let context = config.max_position_embeddings;
        if past + seq > context {
            return Err(Error::input(
                "input_ids",
                format!("{past} cached and {seq} new positions exceed the context of {context}"),
            ));
        }
        for (name, tensor) in [
            ("attention_mask", &self.attention_mask),
            ("position_ids", &self.position_ids),
        ] {
            if let Some(t) = tensor
                && t.dims() != [batch, seq]
            {
                return Err(Error::input(
                    name,
                    format!("shape {:?}, but input_ids has [{batch}, {seq}]", t.dims()),
                ));
            }
        }
        check_range("input_ids", &self.input_ids, config.vocab_size)?;
        match &self.position_ids {
            Some(positions) => check_range("position_ids", positions, context),
            None => Ok(()),
        }
    }
}
