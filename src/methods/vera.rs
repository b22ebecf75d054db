//! VeRA (Kopiczko et al., 2024): LoRA's `A` and `B` frozen, random and shared by every module of
//! an adapter; each module trains two scaling vectors instead.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::init::{InitRng, param};
use crate::config::{LoRAConfig, LoRAInit};

/// VeRA's trained vectors at one module: `d` scales the rank-`r` intermediate and `b` the
/// output (AdapterHub's diagonal matrices `vera_D` and `vera_B`, PEFT's `vera_lambda_d` and
/// `vera_lambda_b`).
#[derive(Module, Debug)]
pub struct VeraScales {
    /// `d`, `[r]`.
    pub d: Param<Tensor<1>>,
    /// `b`, `[d_output]`.
    pub b: Param<Tensor<1>>,
}

impl VeraScales {
    /// The vectors at their initial values (`vera_d`, `vera_b`).
    pub(crate) fn new(r: usize, d_output: usize, d: f64, b: f64, device: &Device) -> Self {
        Self {
            d: param(vec![d as f32; r], [r], device),
            b: param(vec![b as f32; d_output], [d_output], device),
        }
    }

    /// `A diag(d)`.
    ///
    /// # Shapes
    ///
    /// - a: `[d_input, r]`, output: `[d_input, r]`
    pub(crate) fn scale_down(&self, a: Tensor<2>) -> Tensor<2> {
        a * self.d.val().unsqueeze()
    }

    /// `B diag(b)`.
    ///
    /// # Shapes
    ///
    /// - b: `[r, d_output]`, output: `[r, d_output]`
    pub(crate) fn scale_up(&self, b: Tensor<2>) -> Tensor<2> {
        b * self.b.val().unsqueeze()
    }
}

/// An adapter's shared random matrices, drawn once for the largest input and output of the
/// layers it wraps; each module takes the leading rows of `A` and columns of `B` it needs, as
/// PEFT slices its `vera_A` and `vera_B` (AdapterHub draws them for the first layer's shapes,
/// and can only wrap layers of that shape).
#[derive(Debug, Clone)]
pub(crate) struct VeraProjections {
    /// `[max_input, r]`.
    a: Tensor<2>,
    /// `[r, max_output]`.
    b: Tensor<2>,
}

impl VeraProjections {
    /// Draws the matrices as `config.init_weights` says, in torch's layouts' fans (AdapterHub's
    /// `init_shared_vera_parameters`): `"vera"` kaiming-uniform with gain √2 (`A`'s fan is
    /// `max_input`, `B`'s is `r`), `"lora"` `A` kaiming-uniform with `a = √5` and `B` zeros,
    /// `"bert"` N(0, 0.02), `"ia3"` ones.
    pub(crate) fn draw(
        config: &LoRAConfig,
        [max_input, max_output]: [usize; 2],
        rng: &mut InitRng,
        device: &Device,
    ) -> Self {
        let r = config.r;
        let (a, b) = match config.init_weights {
            LoRAInit::Vera => (
                rng.uniform(max_input * r, (6.0 / max_input as f64).sqrt()),
                rng.uniform(r * max_output, (6.0 / r as f64).sqrt()),
            ),
            LoRAInit::Lora => (
                rng.uniform(max_input * r, 1.0 / (max_input as f64).sqrt()),
                vec![0.0; r * max_output],
            ),
            LoRAInit::Bert => (
                rng.normal(max_input * r, 0.0, 0.02),
                rng.normal(r * max_output, 0.0, 0.02),
            ),
            LoRAInit::Ia3 => (vec![1.0; max_input * r], vec![1.0; r * max_output]),
            LoRAInit::Gaussian | LoRAInit::Pissa | LoRAInit::PissaNiter(_) | LoRAInit::Olora => {
                unreachable!("LoRAConfig::validate refuses VeRA with it")
            }
        };
        Self {
            a: Tensor::from_data(TensorData::new(a, [max_input, r]), device),
            b: Tensor::from_data(TensorData::new(b, [r, max_output]), device),
        }
    }

    /// The device the matrices are on.
    pub(crate) fn device(&self) -> Device {
        self.a.device()
    }

    /// The frozen `A` (`[d_input, r]`) and `B` (`[r, d_output]`) of a module on a layer
    /// `d_input → d_output` (at most [`VeraProjections::dims`]).
    pub(crate) fn slice(&self, d_input: usize, d_output: usize) -> [Param<Tensor<2>>; 2] {
        let a = self.a.clone().narrow(0, 0, d_input);
        let b = self.b.clone().narrow(1, 0, d_output);
        [a, b].map(|t| Param::from_tensor(t).set_require_grad(false))
    }
}
