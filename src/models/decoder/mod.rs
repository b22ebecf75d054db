//! What every decoder host shares: the batch type, the key/value cache, the causal attention
//! bias and reading Hugging Face weight files.

mod cache;
pub(crate) mod heads;
mod input;
mod load;
mod mask;

pub use cache::KvCache;
pub use input::DecoderInput;

pub(crate) use cache::LayerCache;
pub(crate) use load::{load_weights, weight_files};
pub(crate) use mask::AttentionBias;

use burn::nn::{Embedding, Linear};
use burn::tensor::module::linear;
use burn::tensor::{Int, Tensor};

/// One forward's inputs, resolved against the cache.
pub(crate) struct Step {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// Padding of every key (cached and new), `[batch, past + seq]`.
    pub key_mask: Tensor<2, Int>,
    /// Positions of the new tokens, `[batch, seq]`.
    pub positions: Tensor<2, Int>,
    /// Cached positions before this forward.
    pub past: usize,
}

impl Step {
    /// Resolves `input` (repeated `channels` times for a `Parallel` setup) against `cache`:
    /// the cache takes the new positions' padding and makes room for `layers` layers.
    pub(crate) fn new(
        input: DecoderInput,
        channels: usize,
        cache: Option<&mut KvCache>,
        layers: usize,
    ) -> Self {
        let input = input.repeat(channels);
        let [batch, seq] = input.input_ids.dims();
        let device = input.input_ids.device();
        let past = cache.as_ref().map_or(0, |cache| cache.len());
        let mask = input
            .attention_mask
            .unwrap_or_else(|| Tensor::ones([batch, seq], &device));
        let key_mask = match cache {
            Some(cache) => cache.extend(mask, layers),
            None => mask,
        };
        let positions = input.position_ids.unwrap_or_else(|| {
            Tensor::<1, Int>::arange(past as i64..(past + seq) as i64, &device)
                .reshape([1, seq])
                .expand([batch, seq])
        });
        Self {
            input_ids: input.input_ids,
            key_mask,
            positions,
            past,
        }
    }
}

/// Next-token logits of final hidden states: through the output projection, or through the
/// token embeddings when they are tied (`tie_word_embeddings`).
///
/// # Shapes
///
/// - hidden: `[batch, seq, hidden]`, output: `[batch, seq, vocab]`
pub(crate) fn output_logits(
    hidden: Tensor<3>,
    lm_head: Option<&Linear>,
    embeddings: &Embedding,
) -> Tensor<3> {
    match lm_head {
        Some(head) => head.forward(hidden),
        None => linear(hidden, embeddings.weight.val().transpose(), None),
    }
}
