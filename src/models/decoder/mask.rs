//! The additive attention bias of a causal batch: future positions, padding and, for sliding
//! layers, positions outside the window get the dtype's lowest value, as in transformers.

use burn::tensor::{Bool, DType, Int, Tensor};

use crate::models::input_checks::masked_score;

/// The bias of one forward, per distinct window of the model's layers.
#[derive(Debug, Clone)]
pub(crate) struct AttentionBias {
    biases: Vec<(Option<usize>, Tensor<4>)>,
}

impl AttentionBias {
    /// The bias for queries at positions `past..past + seq` of keys `0..past + seq`, whose
    /// padding `key_mask` marks (`[batch, past + seq]`, 0 = padding), for each of `windows`.
    ///
    /// With `future_infinite`, future keys get -∞ rather than the lowest value, as in
    /// transformers' GPT-2, which adds its mask to scores already set to the lowest value there:
    /// a padded query then attends to the (padded) keys up to its own position, not to all.
    pub(crate) fn new(
        key_mask: Tensor<2, Int>,
        past: usize,
        seq: usize,
        windows: impl IntoIterator<Item = Option<usize>>,
        dtype: DType,
        future_infinite: bool,
    ) -> Self {
        let [batch, keys] = key_mask.dims();
        let device = key_mask.device();
        let lowest = masked_score(dtype);
        let query_pos = Tensor::<1, Int>::arange(past as i64..(past + seq) as i64, &device)
            .reshape([seq, 1])
            .expand([seq, keys]);
        let key_pos = Tensor::<1, Int>::arange(0..keys as i64, &device)
            .reshape([1, keys])
            .expand([seq, keys]);
        let future = key_pos.clone().greater(query_pos.clone());
        let padded = key_mask
            .equal_elem(0)
            .reshape([batch, 1, 1, keys])
            .expand([batch, 1, seq, keys]);
        let mut biases: Vec<(Option<usize>, Tensor<4>)> = Vec::new();
        for window in windows {
            if biases.iter().any(|(w, _)| *w == window) {
                continue;
            }
            let mut masked: Tensor<2, Bool> = future.clone();
            if let Some(window) = window {
                let outside =
                    (query_pos.clone() - key_pos.clone()).greater_equal_elem(window as i64);
                masked = masked.bool_or(outside);
            }
            let masked = masked
                .reshape([1, 1, seq, keys])
                .expand([batch, 1, seq, keys])
                .bool_or(padded.clone());
            let mut bias = Tensor::<4>::zeros([batch, 1, seq, keys], &device)
                .cast(dtype)
                .mask_fill(masked, lowest);
            if future_infinite {
                let future = future.clone().reshape([1, 1, seq, keys]);
                bias = bias.mask_fill(future.expand([batch, 1, seq, keys]), f64::NEG_INFINITY);
            }
            biases.push((window, bias));
        }
        Self { biases }
    }

    /// The bias of a layer with `window`.
    ///
    /// # Panics
    ///
    /// If `window` was not among the windows the bias was built for (the model builds it from
    /// its own layers).
    pub(crate) fn for_window(&self, window: Option<usize>) -> Tensor<4> {
        self.biases
            .iter()
            .find(|(w, _)| *w == window)
            .map(|(_, bias)| bias.clone())
            .expect("the bias is built for every layer's window")
    }
}
