//! PiSSA and OLoRA: LoRA modules that start from a decomposition of the wrapped weight, which
//! keeps only the residual (PEFT's `init_lora_weights = "pissa"` / `"olora"`).

use std::borrow::Cow;

use burn::linalg::{qr, svd};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use super::LoRA;
use super::init::InitRng;
use super::lora::with_weight;
use crate::config::{LoRAConfig, LoRAInit};
use crate::error::{Error, Result};

/// Upper bound on the QR sweeps per singular value of burn's SVD (it converges in a few).
const SVD_SWEEPS: usize = 200;

/// The factors a PiSSA or OLoRA module started from, `scaling·A₀ B₀` being what left the wrapped
/// weight. Kept on the host: removing the adapter adds them back, and saving writes the adapter
/// as the plain LoRA `[A | A₀] [B; −B₀]` that applies to the original weight (PEFT's
/// `path_initial_model_for_weight_conversion`).
#[derive(Debug, Clone)]
pub(crate) struct InitialFactors {
    /// `A₀`, `[d_input, r]` row-major.
    a: Vec<f32>,
    /// `B₀`, `[r, d_output]` row-major.
    b: Vec<f32>,
    d_input: usize,
    d_output: usize,
    /// The module's scaling (`alpha / r`, or `alpha / √r` with rsLoRA).
    scaling: f64,
}

impl InitialFactors {
    /// The rank `r`.
    fn rank(&self) -> usize {
        self.a.len() / self.d_input
    }

    /// `A₀` `[d_input, r]` and `B₀` `[r, d_output]` on `device`.
    pub(crate) fn tensors(&self, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let r = self.rank();
        let a = TensorData::new(self.a.clone(), [self.d_input, r]);
        let b = TensorData::new(self.b.clone(), [r, self.d_output]);
        (Tensor::from_data(a, device), Tensor::from_data(b, device))
    }

    /// `scaling·A₀ B₀`, `[d_input, d_output]`: what the initialisation took out of the weight.
    pub(crate) fn delta(&self, device: &Device) -> Tensor<2> {
        let (a, b) = self.tensors(device);
        a.matmul(b).mul_scalar(self.scaling)
    }

    /// `weight` without the part the initialisation moved into the adapter.
    pub(crate) fn residual(&self, weight: Tensor<2>) -> Tensor<2> {
        let delta = self.delta(&weight.device());
        weight - delta
    }
}

impl LoRA {
    /// This module started as `config.init_weights` (PiSSA or OLoRA) says from the wrapped
    /// layer's `weight`; the caller takes [`InitialFactors::delta`] out of the layer when it
    /// installs the module.
    ///
    /// # Shapes
    ///
    /// - weight: `[d_input, d_output]` (the wrapped layer's, unmerged)
    pub(crate) fn with_base_init(self, config: &LoRAConfig, weight: Tensor<2>) -> Result<Self> {
        let [d_input, d_output] = weight.dims();
        let r = config.r;
        if r > d_input.min(d_output) {
            return Err(Error::invalid(
                "r",
                r,
                format!(
                    "\"{}\" takes r singular or QR directions of a {d_output}×{d_input} weight: \
                     at most {}",
                    config.init_weights,
                    d_input.min(d_output)
                ),
            ));
        }
        check_finite(&weight)?;
        let device = weight.device();
        // torch's orientation, `[d_output, d_input]`, as PEFT decomposes it; burn's SVD runs on
        // the backend without autodiff.
        let weight = weight.without_autodiff().transpose();
        let scaling = config.scaling();
        let (a, b) = match config.init_weights {
            LoRAInit::Pissa => pissa(svd::<2, 1>(weight, SVD_SWEEPS), r, scaling),
            LoRAInit::PissaNiter(iterations) => {
                let mut rng = InitRng::new(config.init_weights_seed, &weight.device());
                let decomposition = randomized_svd(weight, r, iterations, &mut rng);
                pissa(decomposition, r, scaling)
            }
            LoRAInit::Olora => olora(weight, r),
            other => unreachable!("only PiSSA and OLoRA change the base, not {other}"),
        };
        let initial = InitialFactors {
            a: host_values(a),
            b: host_values(b),
            d_input,
            d_output,
            scaling,
        };
        // From the host values: parameters are leaves of no graph.
        let (a, b) = initial.tensors(&device);
        Ok(Self {
            lora_a: Some(Param::from_tensor(a)),
            lora_b: Some(Param::from_tensor(b)),
            initial: Some(std::sync::Arc::new(initial)),
            ..self
        })
    }
}

impl LoRA {
    /// `linear` with the part this PiSSA/OLoRA module took over taken out (unchanged for other
    /// modules).
    pub(crate) fn take_start_from(&self, linear: Linear) -> Linear {
        match &self.initial {
            Some(initial) => with_weight(linear, |w| initial.residual(w)),
            None => linear,
        }
    }

    /// `linear` with the part this PiSSA/OLoRA module took over put back.
    pub(crate) fn give_start_back(&self, linear: Linear) -> Linear {
        match &self.initial {
            Some(initial) => with_weight(linear, |w| {
                let delta = initial.delta(&w.device());
                w + delta
            }),
            None => linear,
        }
    }
}

impl LoRA {
    /// The module as it is saved: a PiSSA/OLoRA module becomes the plain LoRA of twice the rank
    /// that applies to the original weight, `[A | A₀] [B; −B₀]` (its update minus its start,
    /// PEFT's conversion); other modules as they are.
    pub(crate) fn as_saved(&self) -> Cow<'_, LoRA> {
        let (Some(initial), Some(a), Some(b)) = (&self.initial, &self.lora_a, &self.lora_b) else {
            return Cow::Borrowed(self);
        };
        let (a0, b0) = initial.tensors(&a.device());
        let value = |param: &Param<Tensor<2>>| param.val().detach().set_require_grad(false);
        let a = Tensor::cat(vec![value(a), a0], 1);
        let b = Tensor::cat(vec![value(b), b0.neg()], 0);
        Cow::Owned(Self {
            lora_a: Some(Param::from_tensor(a)),
            lora_b: Some(Param::from_tensor(b)),
            initial: None,
            ..self.clone()
        })
    }
}

/// PiSSA's factors from `W = U S Vᵀ` (torch's orientation): `A = (√(S_r / scaling) V_rᵀ)ᵀ`,
/// `B = (U_r √(S_r / scaling))ᵀ` in this crate's `[d_input, r]` / `[r, d_output]`.
fn pissa(
    (u, s, vt): (Tensor<2>, Tensor<1>, Tensor<2>),
    r: usize,
    scaling: f64,
) -> (Tensor<2>, Tensor<2>) {
    let root = s.slice(0..r).div_scalar(scaling).sqrt();
    let [d_output, _] = u.dims();
    let [_, d_input] = vt.dims();
    let a = vt.slice([0..r, 0..d_input]).transpose() * root.clone().unsqueeze_dim(0);
    let b = u.slice([0..d_output, 0..r]).transpose() * root.unsqueeze_dim(1);
    (a, b)
}

/// OLoRA's factors from `W = Q R` (torch's orientation): `A = R[:r]ᵀ`, `B = Q[:, :r]ᵀ`.
fn olora(weight: Tensor<2>, r: usize) -> (Tensor<2>, Tensor<2>) {
    let [d_output, d_input] = weight.dims();
    let (q, rr) = qr(weight, true);
    let a = rr.slice([0..r, 0..d_input]).transpose();
    let b = q.slice([0..d_output, 0..r]).transpose();
    (a, b)
}

/// A rank-`r` SVD of `weight` `[m, n]` by randomized subspace iteration (Halko, Martinsson and
/// Tropp, 2011, algorithms 4.4 and 5.1; `torch.svd_lowrank` without oversampling, as PEFT calls
/// it): `(U [m, r], S [r], Vᵀ [r, n])`.
fn randomized_svd(
    weight: Tensor<2>,
    r: usize,
    iterations: u32,
    rng: &mut InitRng,
) -> (Tensor<2>, Tensor<1>, Tensor<2>) {
    let [_, n] = weight.dims();
    let device = weight.device();
    let probe = Tensor::from_data(
        TensorData::new(rng.normal(n * r, 0.0, 1.0), [n, r]),
        &device,
    );
    let orthonormal = |matrix: Tensor<2>| qr(matrix, true).0;
    let mut basis = orthonormal(weight.clone().matmul(probe));
    for _ in 0..iterations {
        let back = orthonormal(weight.clone().transpose().matmul(basis));
        basis = orthonormal(weight.clone().matmul(back));
    }
    let projected = basis.clone().transpose().matmul(weight); // [r, n]
    let (u, s, vt) = svd::<2, 1>(projected, SVD_SWEEPS);
    (basis.matmul(u), s, vt)
}

/// A non-finite weight has no decomposition (and would stall the SVD).
fn check_finite(weight: &Tensor<2>) -> Result<()> {
    let finite = weight.clone().is_finite().all().into_scalar();
    match finite {
        true => Ok(()),
        false => Err(Error::InvalidSetup(
            "PiSSA/OLoRA decompose the wrapped weight, which holds a NaN or an infinity".into(),
        )),
    }
}

fn host_values(tensor: Tensor<2>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}
