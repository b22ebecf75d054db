//! Invertible adapters (AdapterHub's `NICECouplingBlock` and `GLOWCouplingBlock`): a coupling
//! block on the embedded input whose exact inverse runs before a language-model head's output
//! embeddings, so that input and output embeddings stay tied through the adapter.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use super::init::{InitRng, dense};
use crate::config::{Activation, BnConfig, InvertibleBlock};
use crate::error::{Error, Result};

/// AdapterHub's soft clamp of GLOW's log-scales: a scale lies in `(e^-clamp, e^clamp)`.
const GLOW_CLAMP: f64 = 5.0;

/// The most weights a subnetwork's down projection may have (1 GiB of f32): a tiny reduction
/// factor is refused rather than aborting on the allocation.
const MAX_SUBNET_WEIGHTS: f64 = (1u64 << 28) as f64;

/// The subnetwork of a coupling block: `up(act(down(x)))`, `d_in → ⌊d_in / factor⌋ → d_out`
/// (AdapterHub's `nn.Sequential(Linear, Activation, Linear)`, indices 0 and 2).
#[derive(Module, Debug)]
pub struct CouplingNet {
    /// `[d_in] → [⌊d_in / factor⌋]`.
    pub down: Linear,
    /// `[⌊d_in / factor⌋] → [d_out]`.
    pub up: Linear,
    /// The non-linearity between them (the adapter config's `non_linearity`).
    #[module(skip)]
    pub activation: Activation,
}

impl CouplingNet {
    /// BERT-initialised as AdapterHub does (`N(0, 0.02)` weights, zero biases).
    fn new(
        rng: &mut InitRng,
        dims: (usize, usize),
        factor: f64,
        activation: Activation,
        device: &Device,
    ) -> Result<Self> {
        let (d_in, d_out) = dims;
        // Python's `int(d_in // factor)`.
        let bottleneck = (d_in as f64 / factor).floor();
        if bottleneck < 1.0 || bottleneck * d_in as f64 > MAX_SUBNET_WEIGHTS {
            return Err(Error::invalid(
                "inv_adapter_reduction_factor",
                factor,
                format!(
                    "the invertible adapter's subnetworks read {d_in} features: the factor must \
                     leave a bottleneck of 1 to {} features",
                    (MAX_SUBNET_WEIGHTS / d_in as f64) as u64
                ),
            ));
        }
        let bottleneck = bottleneck as usize;
        let mut linear = |d_in: usize, d_out: usize| {
            let weight = rng.normal(d_in * d_out, 0.0, 0.02);
            dense(weight, vec![0.0; d_out], d_in, d_out, device)
        };
        Ok(Self {
            down: linear(d_in, bottleneck),
            up: linear(bottleneck, d_out),
            activation,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.up
            .forward(self.activation.forward(self.down.forward(x)))
    }
}

/// An invertible adapter on embeddings of width `d`, split into halves `x₁ = x[.., :d/2]` and
/// `x₂ = x[.., d/2:]`.
#[derive(Module, Debug)]
pub enum InvertibleAdapter {
    /// Additive coupling.
    Nice(NiceCoupling),
    /// Affine coupling.
    Glow(GlowCoupling),
}

/// NICE: `y₁ = x₁ + F(x₂)`, `y₂ = x₂ + G(y₁)`; inverse `x₂ = y₂ − G(y₁)`, `x₁ = y₁ − F(x₂)`.
#[derive(Module, Debug)]
pub struct NiceCoupling {
    /// `F`: second half → first half (AdapterHub's `F`).
    pub f: CouplingNet,
    /// `G`: first half → second half (AdapterHub's `G`).
    pub g: CouplingNet,
}

/// GLOW: `[s₂, t₂] = S₂(x₂)`, `y₁ = e(s₂)·x₁ + t₂`, `[s₁, t₁] = S₁(y₁)`, `y₂ = e(s₁)·x₂ + t₁`,
/// with `e(s) = exp(c · 0.636 · atan(s / c))`, `c = 5`; the inverse undoes the two steps in
/// reverse order.
///
/// This is the block AdapterHub's `GLOWCouplingBlock` is taken from (FrEIA's, Ardizzone et
/// al.). AdapterHub 1.3.0's own forward direction replaces `S₂(x₂)` by `[x₁, x₂]`, slices the
/// subnetwork outputs along the sequence instead of the features and returns a list, so a GLOW
/// adapter fails in its first forward there; the parameters and their names are AdapterHub's.
#[derive(Module, Debug)]
pub struct GlowCoupling {
    /// `S₁`: first half → `[s₁, t₁]` for the second half (AdapterHub's `s1`).
    pub s1: CouplingNet,
    /// `S₂`: second half → `[s₂, t₂]` for the first half (AdapterHub's `s2`).
    pub s2: CouplingNet,
}

impl InvertibleAdapter {
    /// The invertible adapter `config.inv_adapter` asks for, on embeddings of width `width`,
    /// or `None` when it asks for none.
    pub fn new(config: &BnConfig, width: usize, device: &Device) -> Result<Option<Self>> {
        let Some(block) = config.inv_adapter else {
            return Ok(None);
        };
        config.validate()?;
        let factor = config.inv_adapter_reduction_factor.unwrap_or(2.0);
        if width < 2 {
            return Err(Error::invalid(
                "inv_adapter",
                format!("{block:?}"),
                format!("a coupling block splits the embeddings in two halves; width {width}"),
            ));
        }
        let mut rng = InitRng::new(config.init_weights_seed, device);
        let (first, second) = (width / 2, width - width / 2);
        let activation = config.non_linearity;
        let mut net =
            |d_in, d_out| CouplingNet::new(&mut rng, (d_in, d_out), factor, activation, device);
        Ok(Some(match block {
            InvertibleBlock::Nice => InvertibleAdapter::Nice(NiceCoupling {
                f: net(second, first)?,
                g: net(first, second)?,
            }),
            InvertibleBlock::Glow => InvertibleAdapter::Glow(GlowCoupling {
                s1: net(first, 2 * second)?,
                s2: net(second, 2 * first)?,
            }),
        }))
    }

    /// The coupling applied to embeddings.
    ///
    /// # Shapes
    ///
    /// - embedded: `[batch, seq, width]`, output: the same shape.
    pub fn forward(&self, embedded: Tensor<3>) -> Tensor<3> {
        let (x1, x2) = halves(embedded);
        let (y1, y2) = match self {
            InvertibleAdapter::Nice(nice) => {
                let y1 = x1 + nice.f.forward(x2.clone());
                let y2 = x2 + nice.g.forward(y1.clone());
                (y1, y2)
            }
            InvertibleAdapter::Glow(glow) => {
                let (s2, t2) = scale_shift(glow.s2.forward(x2.clone()));
                let y1 = glow_scale(s2) * x1 + t2;
                let (s1, t1) = scale_shift(glow.s1.forward(y1.clone()));
                let y2 = glow_scale(s1) * x2 + t1;
                (y1, y2)
            }
        };
        Tensor::cat(vec![y1, y2], 2)
    }

    /// The exact inverse of [`InvertibleAdapter::forward`] (AdapterHub's `rev=True`), applied
    /// to hidden states before a language-model head's output embeddings.
    ///
    /// # Shapes
    ///
    /// - hidden: `[batch, seq, width]`, output: the same shape.
    pub fn inverse(&self, hidden: Tensor<3>) -> Tensor<3> {
        let (y1, y2) = halves(hidden);
        let (x1, x2) = match self {
            InvertibleAdapter::Nice(nice) => {
                let x2 = y2 - nice.g.forward(y1.clone());
                let x1 = y1 - nice.f.forward(x2.clone());
                (x1, x2)
            }
            InvertibleAdapter::Glow(glow) => {
                let (s1, t1) = scale_shift(glow.s1.forward(y1.clone()));
                let x2 = (y2 - t1) / glow_scale(s1);
                let (s2, t2) = scale_shift(glow.s2.forward(x2.clone()));
                let x1 = (y1 - t2) / glow_scale(s2);
                (x1, x2)
            }
        };
        Tensor::cat(vec![x1, x2], 2)
    }
}

/// `x[.., :d/2]` and `x[.., d/2:]`.
fn halves(x: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
    let width = x.dims()[2];
    let first = width / 2;
    (
        x.clone().narrow(2, 0, first),
        x.narrow(2, first, width - first),
    )
}

/// A GLOW subnetwork's output `[s, t]`, split in its two halves.
fn scale_shift(r: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
    let half = r.dims()[2] / 2;
    (r.clone().narrow(2, 0, half), r.narrow(2, half, half))
}

/// `e(s) = exp(c · 0.636 · atan(s / c))`.
fn glow_scale(s: Tensor<3>) -> Tensor<3> {
    s.div_scalar(GLOW_CLAMP)
        .atan()
        .mul_scalar(GLOW_CLAMP * 0.636)
        .exp()
}
