//! A batch for a decoder host and its checks.

use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};
use crate::models::input_checks::{check_not_empty, check_range, check_same_shape};

/// Token ids, padding and positions for one batch of a decoder.
#[derive(Debug, Clone)]
pub struct DecoderInput {
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

impl DecoderInput {
    /// Input ids with a padding mask.
    pub fn new(input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask: Some(attention_mask),
            position_ids: None,
        }
    }

    /// One generation step: ids with the padding of every row and the positions of the new
    /// tokens.
    pub(crate) fn step(
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        position_ids: Tensor<2, Int>,
    ) -> Self {
        Self {
            input_ids,
            attention_mask: Some(attention_mask),
            position_ids: Some(position_ids),
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

    /// The batch `channels` times over (a `Parallel` setup runs it once per branch: branch `i`
    /// is rows `i·batch..(i+1)·batch`).
    pub(crate) fn repeat(self, channels: usize) -> Self {
        if channels <= 1 {
            return self;
        }
        Self {
            input_ids: self.input_ids.repeat_dim(0, channels),
            attention_mask: self.attention_mask.map(|m| m.repeat_dim(0, channels)),
            position_ids: self.position_ids.map(|p| p.repeat_dim(0, channels)),
        }
    }

    /// Checks that a model with `vocab_size` tokens and `context` positions can run this batch
    /// after `past` cached positions of `cached_batch` rows: at least one row and one position,
    /// at most `context` positions in all, a mask and positions of the ids' shape, ids below
    /// `vocab_size` and positions below `context` (neither negative). The value checks read the
    /// smallest and largest ids back from the device.
    pub fn check(
        &self,
        vocab_size: usize,
        context: usize,
        past: usize,
        cached_batch: usize,
    ) -> Result<()> {
        let dims = self.input_ids.dims();
        check_not_empty("input_ids", dims)?;
        let [batch, seq] = dims;
        if past > 0 && batch != cached_batch {
            return Err(Error::input(
                "input_ids",
                format!("{batch} rows, but the cache holds {cached_batch}"),
            ));
        }
        if past + seq > context {
            return Err(Error::input(
                "input_ids",
                format!("{past} cached and {seq} new positions exceed the context of {context}"),
            ));
        }
        check_same_shape("attention_mask", self.attention_mask.as_ref(), dims)?;
        check_same_shape("position_ids", self.position_ids.as_ref(), dims)?;
        check_range("input_ids", &self.input_ids, vocab_size)?;
        match &self.position_ids {
            Some(positions) => check_range("position_ids", positions, context),
            None => Ok(()),
        }
    }
}
