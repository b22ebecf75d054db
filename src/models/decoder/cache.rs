//! The key/value cache of incremental decoding.

use burn::tensor::{Int, Tensor};

/// The keys and values of the positions a decoder has already seen, and their padding: pass the
/// same cache to successive `forward_cached`
/// calls and each call runs only its new positions.
///
/// A cache belongs to one batch and one active setup: start a new one (`KvCache::new()`) for
/// another batch, or after changing the active adapters.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    /// The padding of every cached position, `[batch, len]` (1 = token).
    pub(crate) mask: Option<Tensor<2, Int>>,
    /// The rows the cached batch had.
    pub(crate) batch: usize,
    /// Positions of a prompt (prompt tuning) at the start of the cache.
    pub(crate) prompt_len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many positions are cached (an active prompt's included: it sits in the first ones).
    pub fn len(&self) -> usize {
        self.mask.as_ref().map_or(0, |mask| mask.dims()[1])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the padding of new positions (`[batch, seq]`) for a model of `layers` layers
    /// and returns the padding of every position.
    pub(crate) fn extend(&mut self, mask: Tensor<2, Int>, layers: usize) -> Tensor<2, Int> {
        let key_mask = match self.mask.take() {
            Some(cached) => Tensor::cat(vec![cached, mask], 1),
            None => mask,
        };
        self.mask = Some(key_mask.clone());
        self.batch = key_mask.dims()[0];
        self.layers.resize_with(layers, Default::default);
        key_mask
    }
}

/// One layer's keys and values after the rotary embedding, `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerCache {
    key: Option<Tensor<4>>,
    value: Option<Tensor<4>>,
}

impl LayerCache {
    /// Appends `key` and `value` (`[batch, kv_heads, seq, head_dim]`) and returns every cached
    /// position's keys and values.
    pub(crate) fn append(&mut self, key: Tensor<4>, value: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let join = |cached: Option<Tensor<4>>, new: Tensor<4>| match cached {
            Some(cached) => Tensor::cat(vec![cached, new], 2),
            None => new,
        };
        let key = join(self.key.take(), key);
        let value = join(self.value.take(), value);
        self.key = Some(key.clone());
        self.value = Some(value.clone());
        (key, value)
    }
}
