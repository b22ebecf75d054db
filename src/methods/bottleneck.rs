//! The bottleneck adapter: `up(act(down(x)))`, with the placement logic of AdapterHub's
//! `Adapter` / `ParallelAdapter` (pre-forward, forward, post-forward).

use burn::module::{Flag, Module, Param};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Distribution, Tensor, activation::sigmoid, module::linear};

use super::dropout;
use super::init::{InitRng, constant, dense};
use super::{PhmLinear, PhmPosition, SharedPhm};
use crate::config::{Activation, BnConfig, InitWeights, ResidualBeforeLn, Scaling};
use crate::error::Result;

/// How a bottleneck is wired into its site; fixed when it is built from a [`BnConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BottleneckWiring {
    /// The non-linearity after the down projection.
    pub activation: Activation,
    /// See [`BnConfig::original_ln_before`].
    pub original_ln_before: bool,
    /// See [`BnConfig::original_ln_after`].
    pub original_ln_after: bool,
    /// See [`BnConfig::residual_before_ln`].
    pub residual_before_ln: ResidualBeforeLn,
    /// See [`BnConfig::adapter_residual_before_ln`].
    pub adapter_residual_before_ln: bool,
    /// Constant output scaling (1 when the scaling is learned).
    pub fixed_scaling: f64,
    /// See [`BnConfig::is_parallel`].
    pub is_parallel: bool,
    /// See [`BnConfig::stochastic_depth`].
    pub stochastic_depth: f64,
}

/// One bottleneck adapter at one site.
///
/// Parameter names map to AdapterHub's as follows (see `io::keys`): `norm_before` ↔
/// `adapter_down.0` (and its alias `adapter_norm_before`), `down` ↔ `adapter_down.0`
/// (`adapter_down.1` after a `norm_before`), `up` ↔ `adapter_up`, `gate` ↔ `gate`,
/// `scaling` ↔ `scaling`, `norm_after` ↔ `adapter_norm_after`. With Compacter's PHM layers
/// (`phm_layer`) the projections hold [`PhmLinear`]s.
#[derive(Module, Debug)]
pub struct Bottleneck {
    /// LayerNorm on the adapter input (`ln_before`).
    pub norm_before: Option<LayerNorm>,
    /// Down projection `[hidden] → [bottleneck]`.
    pub down: Projection,
    /// Up projection `[bottleneck] → [hidden]`.
    pub up: Projection,
    /// Learned scaling: `[1]` (`"learned"`) or `[hidden]` (`"channel"`).
    pub scaling: Option<Param<Tensor<1>>>,
    /// Gate `Linear(hidden, 1)` (`use_gating`).
    pub gate: Option<Linear>,
    /// LayerNorm on the adapter output (`ln_after`).
    pub norm_after: Option<LayerNorm>,
    /// Dropout on the scaled up projection.
    pub dropout: Dropout,
    /// Enables stochastic depth in training mode (same convention as [`Dropout`]).
    pub training: Param<Flag>,
    /// Wiring fixed at construction.
    #[module(skip)]
    pub wiring: BottleneckWiring,
}

/// A bottleneck projection: a dense layer, or Compacter's PHM layer (`phm_layer`).
// Two per adapter per site: the size of the larger variant is no cost worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Projection {
    /// `x W + b`.
    Dense(Linear),
    /// `x (Σᵢ Cᵢ ⊗ Wᵢ) + b`.
    Phm(PhmLinear),
}

impl Projection {
    /// The projection of `x`; `shared` holds what the adapter's PHM layers share across layers,
    /// if anything (see [`PhmLinear::weight_matrix`]).
    ///
    /// # Shapes
    ///
    /// - x: `[..., d_in]`, output: `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>, shared: Option<&SharedPhm>) -> Tensor<D> {
        match self {
            Self::Dense(dense) => dense.forward(x),
            Self::Phm(phm) => phm.forward(x, shared),
        }
    }

    /// The weight `[d_in, d_out]` and bias `[d_out]` it applies.
    pub fn weight_and_bias(&self, shared: Option<&SharedPhm>) -> (Tensor<2>, Option<Tensor<1>>) {
        match self {
            Self::Dense(dense) => (dense.weight.val(), dense.bias.as_ref().map(Param::val)),
            Self::Phm(phm) => (phm.weight_matrix(shared), phm.bias.as_ref().map(Param::val)),
        }
    }

    /// Output width.
    pub fn d_output(&self) -> usize {
        match self {
            Self::Dense(dense) => dense.weight.shape().dims::<2>()[1],
            Self::Phm(phm) => phm.dims[1],
        }
    }

    /// The projection with a fixed PHM rule frozen (`learn_phm` false).
    pub(crate) fn with_fixed_rule(self) -> Self {
        match self {
            Self::Phm(phm) => Self::Phm(phm.with_fixed_rule()),
            dense => dense,
        }
    }
}

/// The tensors a bottleneck reads at a site, after `pre_forward`.
#[derive(Debug, Clone)]
pub struct BottleneckInput {
    /// The adapter input (`z`).
    pub hidden: Tensor<3>,
    /// The adapter's residual (`res`).
    pub residual: Tensor<3>,
}

impl Bottleneck {
    /// Builds the adapter for a model of width `hidden_size` at `layer`, initialised as `config`
    /// says.
    pub fn new(
        config: &BnConfig,
        hidden_size: usize,
        layer: usize,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let bottleneck = config
            .reduction_factor
            .bottleneck_size(hidden_size, layer)?;
        let mut rng = InitRng::new(config.init_weights_seed, device);
        let [down, up] = match config.phm_layer {
            false => projections(
                config.init_weights,
                hidden_size,
                bottleneck,
                &mut rng,
                device,
            )
            .map(Projection::Dense),
            true => {
                config.check_phm_widths([hidden_size, bottleneck])?;
                let mut phm = |position, dims| {
                    Projection::Phm(PhmLinear::new(config, position, dims, &mut rng, device))
                };
                [
                    phm(PhmPosition::Down, [hidden_size, bottleneck]),
                    phm(PhmPosition::Up, [bottleneck, hidden_size]),
                ]
            }
        };
        let gate = config
            .use_gating
            .then(|| gate(config.init_weights, hidden_size, &mut rng, device));
        let norm = || LayerNormConfig::new(hidden_size).init(device);
        let (scaling, fixed_scaling) = match config.scaling {
            Scaling::Fixed(s) => (None, s),
            Scaling::Learned => (Some(constant(1.0, [1], device)), 1.0),
            Scaling::Channel => (Some(constant(1.0, [hidden_size], device)), 1.0),
        };
        Ok(Self {
            norm_before: config.ln_before.then(norm),
            down,
            up,
            scaling,
            gate,
            norm_after: config.ln_after.then(norm),
            dropout: DropoutConfig::new(config.dropout).init(),
            training: Param::from_bool(true),
            wiring: BottleneckWiring {
                activation: config.non_linearity,
                original_ln_before: config.original_ln_before,
                original_ln_after: config.original_ln_after,
                residual_before_ln: config.residual_before_ln,
                adapter_residual_before_ln: config.adapter_residual_before_ln,
                fixed_scaling,
                is_parallel: config.is_parallel,
                stochastic_depth: config.stochastic_depth,
            },
        })
    }

    /// Width of the bottleneck.
    pub fn bottleneck_size(&self) -> usize {
        self.down.d_output()
    }

    /// The adapter with a fixed PHM rule frozen (`learn_phm` false), whatever a trainability
    /// mapping set.
    pub(crate) fn with_fixed_parameters(self) -> Self {
        Self {
            down: self.down.with_fixed_rule(),
            up: self.up.with_fixed_rule(),
            ..self
        }
    }

    /// Selects the adapter input and residual from the sublayer output `hidden` and the
    /// sublayer's residual input `residual` (AdapterHub's `pre_forward`). `layer_norm` is the
    /// sublayer's own LayerNorm, `None` for pre-norm hosts whose residual blocks end in a plain sum.
    ///
    /// # Shapes
    ///
    /// - hidden, residual: `[batch, seq, hidden]`
    pub fn pre_forward(
        &self,
        hidden: Tensor<3>,
        residual: Tensor<3>,
        layer_norm: Option<&LayerNorm>,
    ) -> BottleneckInput {
        let w = &self.wiring;
        if w.is_parallel {
            // A parallel adapter reads the sublayer's input.
            return BottleneckInput {
                hidden: residual.clone(),
                residual,
            };
        }
        let mut adapter_residual =
            (w.residual_before_ln == ResidualBeforeLn::Before).then(|| hidden.clone());
        let hidden = if w.original_ln_before {
            let sum = hidden + residual;
            if w.residual_before_ln == ResidualBeforeLn::PostAdd {
                adapter_residual = Some(sum.clone());
            }
            apply_norm(layer_norm, sum)
        } else {
            hidden
        };
        // `After`, or `PostAdd` without the original LayerNorm: the residual is the adapter input.
        let residual = adapter_residual.unwrap_or_else(|| hidden.clone());
        BottleneckInput { hidden, residual }
    }

    /// The scaled up projection `s·up(act(down(x)))`, before dropout and gate: what
    /// AdapterFusion attends over (AdapterHub's `up`). `shared` holds what the adapter's PHM
    /// layers share across layers ([`SharedPhm`]), if anything.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, hidden]`, output: `[batch, seq, hidden]`
    pub fn up_projection(&self, x: &Tensor<3>, shared: Option<&SharedPhm>) -> Tensor<3> {
        let w = &self.wiring;
        let normed = match &self.norm_before {
            Some(norm) => norm.forward(x.clone()),
            None => x.clone(),
        };
        let down = w.activation.forward(self.down.forward(normed, shared));
        // A fixed scaling multiplies the bottleneck-wide intermediate and the bias, not the
        // hidden-wide output: s·(zW + b) = (s·z)W + s·b, one pass over a tensor reduction_factor
        // times smaller.
        let up = if w.fixed_scaling == 1.0 {
            self.up.forward(down, shared)
        } else {
            let s = w.fixed_scaling;
            let (weight, bias) = self.up.weight_and_bias(shared);
            linear(down.mul_scalar(s), weight, bias.map(|b| b.mul_scalar(s)))
        };
        let mut up = self.stochastic_depth(up);
        if let Some(scaling) = &self.scaling {
            up = up * scaling.val().unsqueeze::<3>();
        }
        up
    }

    /// Dropout and gate applied to an up projection of `x`.
    pub(crate) fn gate_and_drop(&self, up: Tensor<3>, x: &Tensor<3>) -> Tensor<3> {
        let out = dropout(&self.dropout, up);
        match &self.gate {
            // mean over the sequence of sigmoid(gate(x)): one gate value per example
            Some(gate) => out * sigmoid(gate.forward(x.clone())).mean_dim(1),
            None => out,
        }
    }

    /// The scaled, gated and dropped-out up projection: the adapter's contribution before any
    /// residual or output LayerNorm (`shared` as for [`Bottleneck::up_projection`]).
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, hidden]`, output: `[batch, seq, hidden]`
    pub fn delta(&self, x: &Tensor<3>, shared: Option<&SharedPhm>) -> Tensor<3> {
        self.gate_and_drop(self.up_projection(x, shared), x)
    }

    /// The adapter output including its residual and optional output LayerNorm (AdapterHub's
    /// `forward`; `shared` as for [`Bottleneck::up_projection`]).
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq, hidden]` each, output: `[batch, seq, hidden]`
    pub fn forward(&self, input: &BottleneckInput, shared: Option<&SharedPhm>) -> Tensor<3> {
        let delta = self.delta(&input.hidden, shared);
        self.finish(delta, input.residual.clone())
    }

    /// Adds the adapter residual and applies the output LayerNorm in the configured order.
    pub(crate) fn finish(&self, delta: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let w = &self.wiring;
        if w.is_parallel {
            // The parallel adapter's residual is added in post_forward.
            return match &self.norm_after {
                Some(norm) => norm.forward(delta),
                None => delta,
            };
        }
        let (mut out, mut residual) = (delta, Some(residual));
        if w.adapter_residual_before_ln {
            out = out + residual.take().expect("residual is present");
        }
        if let Some(norm) = &self.norm_after {
            out = norm.forward(out);
        }
        if let Some(residual) = residual {
            out = out + residual;
        }
        out
    }

    /// Applies the sublayer's residual and LayerNorm after the adapter (AdapterHub's
    /// `post_forward`). `sublayer_output` is the `hidden` the site was called with.
    pub fn post_forward(
        &self,
        output: Tensor<3>,
        sublayer_output: Tensor<3>,
        residual: Tensor<3>,
        layer_norm: Option<&LayerNorm>,
    ) -> Tensor<3> {
        let w = &self.wiring;
        let output = if w.is_parallel {
            output + sublayer_output
        } else {
            output
        };
        if w.original_ln_after {
            apply_norm(layer_norm, output + residual)
        } else {
            output
        }
    }

    /// Row-wise stochastic depth: in training, drops whole examples with probability `p` and
    /// rescales the kept ones by `1/(1-p)` (torchvision's `StochasticDepth(mode="row")`).
    fn stochastic_depth(&self, up: Tensor<3>) -> Tensor<3> {
        let p = self.wiring.stochastic_depth;
        if p == 0.0 || !self.training.is_enabled() || !up.device().is_autodiff() {
            return up;
        }
        let [batch, _, _] = up.dims();
        let keep = Tensor::<3>::random(
            [batch, 1, 1],
            Distribution::Bernoulli(1.0 - p),
            &up.device(),
        );
        up * keep.div_scalar(1.0 - p)
    }
}

/// The down (`h → d`) and up (`d → h`) projections, initialised by `scheme`.
fn projections(
    scheme: InitWeights,
    h: usize,
    d: usize,
    rng: &mut InitRng,
    device: &Device,
) -> [Linear; 2] {
    let zeros = |n: usize| vec![0.0f32; n];
    let (down, up) = match scheme {
        InitWeights::Bert => (rng.normal(h * d, 0.0, 0.02), rng.normal(d * h, 0.0, 0.02)),
        // kaiming-uniform(a = √5) down, zero up: the adapter starts as an identity
        InitWeights::MamAdapter => (rng.uniform(h * d, 1.0 / (h as f64).sqrt()), zeros(d * h)),
        InitWeights::Houlsby => (
            rng.truncated_normal(h * d, 0.0, 0.01, -0.02, 0.02),
            rng.truncated_normal(d * h, 0.0, 0.01, -0.02, 0.02),
        ),
    };
    [
        dense(down, zeros(d), h, d, device),
        dense(up, zeros(h), d, h, device),
    ]
}

/// The gate `h → 1`: N(0, 0.02) weights and a zero bias, except under `houlsby`, which keeps
/// torch's default `nn.Linear` init (kaiming-uniform with a = √5 and the matching bias).
fn gate(scheme: InitWeights, h: usize, rng: &mut InitRng, device: &Device) -> Linear {
    match scheme {
        InitWeights::Bert | InitWeights::MamAdapter => {
            dense(rng.normal(h, 0.0, 0.02), vec![0.0], h, 1, device)
        }
        InitWeights::Houlsby => {
            let bound = 1.0 / (h as f64).sqrt();
            let weight = rng.uniform(h, bound);
            dense(weight, rng.uniform(1, bound), h, 1, device)
        }
    }
}

/// `layer_norm(x)`, or `x` for hosts without a LayerNorm at the site.
pub(crate) fn apply_norm(layer_norm: Option<&LayerNorm>, x: Tensor<3>) -> Tensor<3> {
    match layer_norm {
        Some(norm) => norm.forward(x),
        None => x,
    }
}
