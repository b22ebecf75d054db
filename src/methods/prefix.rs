//! Prefix tuning: the key/value prefixes of every attention layer, from one module per adapter
//! (AdapterHub's `PrefixTuning` / `FlatPrefixTuning`), and the per-layer gate.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, Tensor, activation::sigmoid};

use super::dropout;
use super::init::{InitRng, dense, param, torch_linear};
use crate::config::{Activation, PrefixTuningConfig};
use crate::error::Result;

/// The attention geometry a prefix module serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixShape {
    /// Prefix positions.
    pub length: usize,
    /// Attention layers that hold the prefix (those not left out).
    pub layers: usize,
    /// Key/value heads of each layer.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl PrefixShape {
    /// Values per prefix position: keys and values of every head of every layer.
    pub fn width(&self) -> usize {
        self.layers * 2 * self.heads * self.head_dim
    }
}

/// Where a prefix module's values come from.
#[derive(Module, Debug)]
// One module per adapter: boxing the MLP would only add noise to matches.
#[allow(clippy::large_enum_variant)]
pub enum PrefixParams {
    /// Reparameterised (AdapterHub's `PrefixTuning`): `mlp_out(act(mlp_in(embeddings)))`.
    Mlp(PrefixMlp),
    /// Trained directly (`FlatPrefixTuning`): `[length · width]`, position-major.
    Flat(Param<Tensor<1>>),
}

/// The MLP of the reparameterised form: AdapterHub's `wte` and `control_trans.{0,2}`.
#[derive(Module, Debug)]
pub struct PrefixMlp {
    /// One embedding per prefix position, `[length, hidden]` (`wte`).
    pub embeddings: Param<Tensor<2>>,
    /// `hidden → bottleneck_size` (`control_trans.0`).
    pub mlp_in: Linear,
    /// `bottleneck_size → width` (`control_trans.2`).
    pub mlp_out: Linear,
    /// The non-linearity between them.
    #[module(skip)]
    pub activation: Activation,
}

/// The prefixes of one adapter for every attention layer it reaches.
#[derive(Module, Debug)]
pub struct PrefixTuning {
    /// The values.
    pub params: PrefixParams,
    /// Dropout on the prefixes.
    pub dropout: Dropout,
    /// The geometry.
    #[module(skip)]
    pub shape: PrefixShape,
}

impl PrefixTuning {
    /// Builds the module for `shape` in a model of width `hidden_size`, initialised as
    /// AdapterHub's (embeddings and the flat values from N(0, 1), the MLP as torch's
    /// `nn.Linear`).
    pub fn new(
        config: &PrefixTuningConfig,
        hidden_size: usize,
        shape: PrefixShape,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let mut rng = InitRng::new(config.init_weights_seed, device);
        let params = if config.flat {
            let n = shape.length * shape.width();
            PrefixParams::Flat(param(rng.normal(n, 0.0, 1.0), [n], device))
        } else {
            let embeddings = rng.normal(shape.length * hidden_size, 0.0, 1.0);
            PrefixParams::Mlp(PrefixMlp {
                embeddings: param(embeddings, [shape.length, hidden_size], device),
                mlp_in: torch_linear(&mut rng, hidden_size, config.bottleneck_size, device),
                mlp_out: torch_linear(&mut rng, config.bottleneck_size, shape.width(), device),
                activation: config.non_linearity,
            })
        };
        Ok(Self {
            params,
            dropout: DropoutConfig::new(config.dropout).init(),
            shape,
        })
    }

    /// The prefix values without dropout, one row per position.
    ///
    /// # Shapes
    ///
    /// - output: `[length, layers · 2 · heads · head_dim]`
    pub fn values(&self) -> Tensor<2> {
        match &self.params {
            PrefixParams::Mlp(mlp) => {
                let hidden = mlp
                    .activation
                    .forward(mlp.mlp_in.forward(mlp.embeddings.val()));
                mlp.mlp_out.forward(hidden)
            }
            PrefixParams::Flat(values) => values
                .val()
                .reshape([self.shape.length, self.shape.width()]),
        }
    }

    /// The keys and values of every layer, with dropout drawn per row of a batch of `batch`
    /// when it is active (else one row that broadcasts).
    ///
    /// # Shapes
    ///
    /// - output: `[layers · 2, batch or 1, heads, length, head_dim]`; entry `2i` holds the keys
    ///   of the `i`-th layer holding the prefix, `2i + 1` its values
    pub fn key_values(&self, batch: usize) -> Tensor<5> {
        let PrefixShape {
            length,
            layers,
            heads,
            head_dim,
        } = self.shape;
        let values = self
            .values()
            .reshape([1, length, layers * 2, heads, head_dim]);
        let values = if super::dropout_active(&self.dropout, &values.device()) {
            dropout(
                &self.dropout,
                values.expand([batch, length, layers * 2, heads, head_dim]),
            )
        } else {
            values
        };
        values.permute([2, 0, 3, 1, 4])
    }

    /// The same prefixes in the flat form (AdapterHub's `eject`): what an MLP-form module
    /// computes, as trainable values.
    pub fn ejected(&self) -> Self {
        let values = self
            .values()
            .reshape([self.shape.length * self.shape.width()]);
        Self {
            params: PrefixParams::Flat(Param::from_tensor(values.detach())),
            dropout: self.dropout.clone(),
            shape: self.shape,
        }
    }

    /// Whether the prefixes come from the MLP.
    pub fn is_reparameterised(&self) -> bool {
        matches!(self.params, PrefixParams::Mlp(_))
    }
}

/// The gate of one layer's prefixes (`use_gating`): `Linear(hidden, 1)` with `shared_gating`,
/// else `Linear(hidden, 2)` (keys, values).
#[derive(Module, Debug)]
pub struct PrefixGate {
    /// The gate's projection.
    pub linear: Linear,
}

impl PrefixGate {
    /// A gate with N(0, 0.02) weights and torch's default bias init, as AdapterHub's.
    pub fn new(config: &PrefixTuningConfig, hidden_size: usize, device: &Device) -> Self {
        let mut rng = InitRng::new(config.init_weights_seed, device);
        let outputs = if config.shared_gating { 1 } else { 2 };
        let weight = rng.normal(hidden_size * outputs, 0.0, 0.02);
        let bias = rng.uniform(outputs, 1.0 / (hidden_size as f64).sqrt());
        Self {
            linear: dense(weight, bias, hidden_size, outputs, device),
        }
    }

    /// The scales of a batch's key and value prefixes: the mean over the sequence of
    /// `sigmoid(linear(x))` (padding included, as in AdapterHub).
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, hidden]`
    /// - output: keys and values, `[batch, 1, 1, 1]` each
    pub fn scales(&self, x: Tensor<3>) -> [Tensor<4>; 2] {
        let gate = sigmoid(self.linear.forward(x)).mean_dim(1);
        let [batch, _, outputs] = gate.dims();
        let scale = |i: usize| gate.clone().narrow(2, i, 1).reshape([batch, 1, 1, 1]);
        [scale(0), scale(outputs - 1)]
    }
}
