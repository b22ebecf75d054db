//! MTL-LoRA's factors (AdapterHub's `MTLLoRA`): several up projections mixed by learned
//! weights, and a task-specific matrix between the down projection and them.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use super::init::{InitRng, param};
use crate::config::{LoRAInit, MultiTaskLoRA, TaskSpecificMatrix};

/// The task-specific matrix `Λ` (AdapterHub's `task_specific.values`).
#[derive(Module, Debug)]
pub enum TaskSpecific {
    /// `diag(λ)`, `λ` of length `r`.
    SingularValues(Param<Tensor<1>>),
    /// A full `[r, r]` matrix.
    Linear(Param<Tensor<2>>),
}

/// The factors MTL-LoRA adapters share after `share_parameters` (AdapterHub's
/// `shared_parameters.<names>`): `A` and the up projections, held once by the site.
#[derive(Module, Debug)]
pub struct SharedFactors {
    /// `A`, `[d_input, r]`.
    pub lora_a: Param<Tensor<2>>,
    /// The up projections `Bₖ`, `[n, r, d_output]`.
    pub lora_b: Param<Tensor<3>>,
}

/// What MTL-LoRA puts in place of LoRA's `B`: `Λ` after `A`, then `Σₖ ŵₖ Bₖ` with
/// `ŵ = softmax(w / sharpness)`. The mixture is linear, so it is formed once per forward on the
/// `[r, d_output]` factors instead of running every up projection on the activations
/// (AdapterHub's `exp(w / sharpness) / Σ exp(...)`, computed without its overflow).
#[derive(Module, Debug)]
pub struct MultiTaskFactors {
    /// The up projections `Bₖ`, `[n, r, d_output]` (AdapterHub's `lora_B`, `[n, d_output, r]`);
    /// `None` while they are shared ([`SharedFactors`]).
    pub lora_b: Option<Param<Tensor<3>>>,
    /// `Λ`.
    pub task_specific: TaskSpecific,
    /// The mixing weights `w`, `[n]` (AdapterHub's `weights`).
    pub weights: Param<Tensor<1>>,
    /// The mixing temperature.
    #[module(skip)]
    pub sharpness: f64,
}

impl MultiTaskFactors {
    /// AdapterHub's initialisation: `Bₖ` zeros (`init_weights = "lora"`, and `"ia3"`, which it
    /// leaves at the zeros it allocates) or N(0, 0.02) (`"bert"`), `Λ` and `w` ones.
    pub(crate) fn new(
        config: &MultiTaskLoRA,
        init: LoRAInit,
        shape: [usize; 2],
        rng: &mut InitRng,
        device: &Device,
    ) -> Self {
        let [r, d_output] = shape;
        let n = config.n_up_projection;
        let up = match init {
            LoRAInit::Bert => rng.normal(n * r * d_output, 0.0, 0.02),
            _ => vec![0.0; n * r * d_output],
        };
        let task_specific = match config.task_specific_matrix_type {
            TaskSpecificMatrix::SingularValues => {
                TaskSpecific::SingularValues(param(vec![1.0; r], [r], device))
            }
            TaskSpecificMatrix::Linear => {
                TaskSpecific::Linear(param(vec![1.0; r * r], [r, r], device))
            }
        };
        Self {
            lora_b: Some(param(up, [n, r, d_output], device)),
            task_specific,
            weights: param(vec![1.0; n], [n], device),
            sharpness: config.weights_sharpness,
        }
    }

    /// `A Λ`.
    ///
    /// # Shapes
    ///
    /// - a: `[d_input, r]`, output: `[d_input, r]`
    pub fn down(&self, a: Tensor<2>) -> Tensor<2> {
        match &self.task_specific {
            TaskSpecific::SingularValues(values) => a * values.val().unsqueeze(),
            TaskSpecific::Linear(matrix) => a.matmul(matrix.val()),
        }
    }

    /// `Σₖ ŵₖ Bₖ`, with the shared `Bₖ` when this module's are shared.
    ///
    /// # Shapes
    ///
    /// - output: `[r, d_output]`
    pub fn up(&self, shared: Option<&SharedFactors>) -> Tensor<2> {
        let up = match (&self.lora_b, shared) {
            (Some(up), _) => up.val(),
            (None, Some(shared)) => shared.lora_b.val(),
            (None, None) => unreachable!("an MTL-LoRA module holds or shares its up projections"),
        };
        let [n, r, d_output] = up.dims();
        let mix = softmax(self.weights.val().div_scalar(self.sharpness), 0);
        (up * mix.reshape([n, 1, 1]))
            .sum_dim(0)
            .reshape([r, d_output])
    }
}
