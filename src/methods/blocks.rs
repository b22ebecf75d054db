//! The output blocks of a fused projection that a module updates.

use burn::tensor::Tensor;

/// Which equal-width output blocks of a fused projection a LoRA/IA3 module updates, as in
/// AdapterHub's `LoRAMergedLinear` (GPT-2's `c_attn` computes query, key and value in one
/// matmul; `attn_matrices` picks the blocks).
///
/// Each enabled block gets its own rank-`r` update (`A` holds one `[d_input, r]` slice and `B`
/// one `[r, width]` slice per enabled block, in block order); the other blocks are left as the
/// projection computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputBlocks {
    enabled: Vec<bool>,
}

impl OutputBlocks {
    /// Blocks in output order, `true` where the module acts.
    pub fn new(enabled: Vec<bool>) -> Self {
        Self { enabled }
    }

    /// How many blocks the module updates.
    pub fn count(&self) -> usize {
        self.enabled.iter().filter(|e| **e).count()
    }

    /// The width of one block of a `d_output`-wide projection.
    pub fn width(&self, d_output: usize) -> usize {
        d_output / self.enabled.len()
    }

    /// `x`, whose last dimension holds the enabled blocks one after another, placed at their
    /// blocks of the full output; the other blocks are `fill`.
    ///
    /// # Shapes
    ///
    /// - x: `[..., count·width]`
    /// - output: `[..., blocks·width]`
    pub(crate) fn pad<const D: usize>(&self, x: Tensor<D>, fill: f64) -> Tensor<D> {
        if self.count() == self.enabled.len() {
            return x;
        }
        let mut shape = x.dims();
        let width = shape[D - 1] / self.count().max(1);
        shape[D - 1] = width;
        let mut next = 0;
        let pieces = self
            .enabled
            .iter()
            .map(|enabled| {
                if *enabled {
                    next += 1;
                    x.clone().narrow(D - 1, (next - 1) * width, width)
                } else {
                    Tensor::<D>::zeros(shape, &x.device())
                        .cast(x.dtype())
                        .add_scalar(fill)
                }
            })
            .collect();
        Tensor::cat(pieces, D - 1)
    }
}
