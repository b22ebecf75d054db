//! The key/value cache of incremental decoding.

use burn::tensor::{Int, Tensor};

/// The keys and values of the positions a decoder has already seen, and their padding: pass the
/// same cache to successive [`LlamaModel::forward_cached`](super::LlamaModel::forward_cached)
/// calls and each call runs only its new positions.
///
/// A cache belongs to one batch and one active setup: start a new one (`KvCache::new()`) for
/// another batch, or after changing the active adapters.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub(super) layers: Vec<LayerCache>,
    /// The padding of every cached position, `[batch, len]` (1 = token).
    pub(super) mask: Option<Tensor<2, Int>>,
    /// The rows the cached batch had.
    pub(super) batch: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many positions are cached.
    pub fn len(&self) -> usize {
        self.mask.as_ref().map_or(0, |mask| mask.dims()[1])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
