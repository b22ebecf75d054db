//! DoRA (Liu et al., 2024): a LoRA whose adapted weight is split into a learned magnitude per
//! output and a direction, `W' = m ⊙ (W + ΔW) / ‖W + ΔW‖`.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Tensor;

use super::{LoRA, SharedFactors};

impl LoRA {
    /// This module with DoRA's magnitude, started at the norm of every output's adapted weight
    /// `‖W + ΔW‖`, so that the layer's output is unchanged by the decomposition (PEFT's start;
    /// AdapterHub starts at `‖W‖`, the same while `ΔW` starts at zero).
    ///
    /// # Shapes
    ///
    /// - weight: `[d_input, d_output]` (the wrapped layer's, unmerged)
    pub fn with_magnitude(self, weight: Tensor<2>) -> Self {
        let norm = column_norm(self.adapted(weight, None));
        Self {
            magnitude: Some(Param::from_tensor(norm)),
            ..self
        }
    }

    /// `W + ΔW` (ΔW detached), `[d_input, d_output]`.
    fn adapted(&self, weight: Tensor<2>, shared: Option<&SharedFactors>) -> Tensor<2> {
        match self.low_rank_delta(shared) {
            Some(delta) => weight.detach() + delta,
            None => weight.detach(),
        }
    }

    /// `m / ‖adapted‖` for this module's magnitude `m`, `[1, d_output]`, and the norm of every
    /// output, detached: DoRA treats the norm as a constant in the backward pass (the paper's
    /// section 4.3, as PEFT does). `None` for a module without a magnitude.
    fn dora_factor(&self, adapted: Tensor<2>) -> Option<(Tensor<2>, Tensor<2>)> {
        let magnitude = self.magnitude.as_ref()?;
        let norm = column_norm(adapted);
        Some((magnitude.val() / norm.clone(), norm))
    }

    /// The layer output with DoRA applied, given the plain output `W x + b` and the (scaled)
    /// low-rank contribution `delta`: `b + f ⊙ (W x + delta)` with `f = m / ‖W + ΔW‖`, computed
    /// as PEFT does, `output + (f − 1) ⊙ W x + f ⊙ delta`. `None` for a module without a
    /// magnitude.
    ///
    /// # Shapes
    ///
    /// - output, delta: `[batch, seq, d_output]`
    pub(crate) fn dora_combine(
        &self,
        output: &Tensor<3>,
        delta: &Tensor<3>,
        linear: &Linear,
        shared: Option<&SharedFactors>,
    ) -> Option<Tensor<3>> {
        self.magnitude.as_ref()?;
        let (factor, _) = self.dora_factor(self.adapted(linear.weight.val(), shared))?;
        let factor: Tensor<3> = factor.unsqueeze();
        let base = match &linear.bias {
            Some(bias) => output.clone() - bias.val().unsqueeze(),
            None => output.clone(),
        };
        Some(output.clone() + (factor.clone() - 1.0) * base + factor * delta.clone())
    }

    /// `m / ‖W + ΔW‖ ⊙ (W + ΔW)` for the merge, and the norm, which
    /// [`LoRA::dora_unmerged`](Self::dora_unmerged) needs to undo it (the merged weight alone
    /// does not determine it). The bias stays as it is. `None` for a module without a
    /// magnitude.
    pub(crate) fn dora_merged(
        &self,
        weight: Tensor<2>,
        shared: Option<&SharedFactors>,
    ) -> Option<(Tensor<2>, Tensor<2>)> {
        self.magnitude.as_ref()?;
        let adapted = self.adapted(weight, shared);
        let (factor, norm) = self.dora_factor(adapted.clone())?;
        Some((adapted * factor.detach(), norm))
    }

    /// Undoes [`LoRA::dora_merged`] given the norm it returned: `W' / f − ΔW`.
    pub(crate) fn dora_unmerged(
        &self,
        merged: Tensor<2>,
        norm: Tensor<2>,
        shared: Option<&SharedFactors>,
    ) -> Option<Tensor<2>> {
        let factor = self.magnitude.as_ref()?.val().detach() / norm;
        let delta = self.low_rank_delta(shared)?;
        Some(merged / factor - delta)
    }
}

/// The norm of every output's column, `[1, d_output]` from `[d_input, d_output]`, detached.
fn column_norm(weight: Tensor<2>) -> Tensor<2> {
    weight.powi_scalar(2).sum_dim(0).sqrt().detach()
}
