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

use crate::error::{Error, Result};
use crate::sites::{EmbeddingSite, HiddenStateSite, InterventionPositions, PromptPlacement};

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
    /// The prompt this forward inserts (on a sequence's first forward).
    pub prompt: Option<PromptPlacement>,
}

impl Step {
    /// Resolves `input` (repeated `channels` times for a `Parallel` setup) against `cache`:
    /// the cache takes the new positions' padding and makes room for `layers` layers. The
    /// active prompt of `prompts` joins the sequence's first forward; its positions are then
    /// part of the mask, the positions and the cache like the tokens'.
    pub(crate) fn new(
        input: DecoderInput,
        channels: usize,
        cache: Option<&mut KvCache>,
        layers: usize,
        prompts: &EmbeddingSite,
    ) -> Self {
        let input = input.repeat(channels);
        let first = cache.as_ref().is_none_or(|cache| cache.is_empty());
        let batch = input.input_ids.dims()[0];
        let prompt = first
            .then(|| prompts.prompt(batch, input.attention_mask.as_ref()))
            .flatten();
        let [batch, seq] = input.input_ids.dims();
        let device = input.input_ids.device();
        let past = cache.as_ref().map_or(0, |cache| cache.len());
        let mask = input
            .attention_mask
            .unwrap_or_else(|| Tensor::ones([batch, seq], &device));
        // Given positions count the tokens only: a cached prompt moves them up.
        let positions = match input.position_ids {
            Some(positions) => positions + cache.as_ref().map_or(0, |c| c.prompt_len) as i64,
            None => Tensor::<1, Int>::arange(past as i64..(past + seq) as i64, &device)
                .reshape([1, seq])
                .expand([batch, seq]),
        };
        let (mask, positions) = match &prompt {
            Some(prompt) => (prompt.extend_mask(mask), prompt.extend_positions(positions)),
            None => (mask, positions),
        };
        let key_mask = match cache {
            Some(cache) => {
                if let Some(prompt) = &prompt {
                    cache.prompt_len = prompt.len;
                }
                cache.extend(mask, layers)
            }
            None => mask,
        };
        Self {
            input_ids: input.input_ids,
            key_mask,
            positions,
            past,
            prompt,
        }
    }
}

/// The positions ReFT counts from in a forward of `x` after `past` cached positions whose keys'
/// padding is `key_mask`, when one of `sites` intervenes.
pub(crate) fn intervention_positions<'a>(
    mut sites: impl Iterator<Item = &'a HiddenStateSite>,
    key_mask: &Tensor<2, Int>,
    past: usize,
    x: &Tensor<3>,
) -> Option<InterventionPositions> {
    let [batch, seq, _] = x.dims();
    let device = x.device();
    sites
        .any(HiddenStateSite::is_active)
        .then(|| InterventionPositions::new(Some(key_mask), batch, past, seq, &device))
}

/// Checks that a first forward's prompt, with the input's `seq` positions, fits the context
/// (what `DecoderInput::check` cannot see).
pub(crate) fn check_prompt_fits(
    site: &EmbeddingSite,
    cache: Option<&KvCache>,
    seq: usize,
    context: usize,
) -> Result<()> {
    let first = cache.is_none_or(KvCache::is_empty);
    match site.active_len().filter(|_| first) {
        Some(len) if len + seq > context => Err(Error::input(
            "input_ids",
            format!("the prompt's {len} and {seq} new positions exceed the context of {context}"),
        )),
        _ => Ok(()),
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
