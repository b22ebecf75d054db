//! AdapterFusion: attention over the outputs of several adapters (AdapterHub's `BertFusion`).

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use super::dropout;
use super::init::{InitRng, param};
use crate::config::FusionConfig;
use crate::error::Result;

/// One AdapterFusion layer at one site.
///
/// For a query `q` (the layer's hidden state) and the adapters' up-projections `u_i`:
/// `p = softmax_i((W_q q + b_q) · (W_k u_i + b_k))`, `o = Σ_i p_i W_v u_i + residual`
/// (`W_v` absent in the static variant).
#[derive(Module, Debug)]
pub struct Fusion {
    /// Query projection.
    pub query: Option<Linear>,
    /// Key projection.
    pub key: Option<Linear>,
    /// Value projection (no bias).
    pub value: Option<Linear>,
    /// Dropout on the attention scores.
    pub dropout: Dropout,
    /// Add the residual to the values (and keys) before attention.
    pub residual_before: bool,
    /// The query is the hidden state before the sublayer's LayerNorm.
    pub query_before_ln: bool,
    /// Project values before the attention average (else after).
    pub value_before_softmax: bool,
}

impl Fusion {
    /// A fusion layer for hidden size `hidden` with AdapterHub's initialisation (BERT's
    /// N(0, 0.02) weights and zero biases; the value projection at the identity when
    /// `value_initialized`). `default_dropout` is used when the config gives none.
    pub fn new(
        config: &FusionConfig,
        hidden: usize,
        default_dropout: f64,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let mut rng = InitRng::from_device(device);
        let mut linear = |bias: bool| Linear {
            weight: param(
                rng.normal(hidden * hidden, 0.0, 0.02),
                [hidden, hidden],
                device,
            ),
            bias: bias.then(|| param(vec![0.0; hidden], [hidden], device)),
        };
        let query = config.query.then(|| linear(true));
        let key = config.key.then(|| linear(true));
        let value = config.value.then(|| {
            let mut value = linear(false);
            if config.value_initialized {
                let identity: Vec<f32> = (0..hidden * hidden)
                    .map(|i| if i / hidden == i % hidden { 1.0 } else { 1e-6 })
                    .collect();
                value.weight = param(identity, [hidden, hidden], device);
            }
            value
        });
        Ok(Self {
            query,
            key,
            value,
            dropout: DropoutConfig::new(config.dropout_prob.unwrap_or(default_dropout)).init(),
            residual_before: config.residual_before,
            query_before_ln: config.query_before_ln,
            value_before_softmax: config.value_before_softmax,
        })
    }

    /// Fuses the adapters' outputs `ups` for `query`.
    ///
    /// # Shapes
    ///
    /// - query, residual, each of ups: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, query: Tensor<3>, ups: Vec<Tensor<3>>, residual: Tensor<3>) -> Tensor<3> {
        let [batch, seq, hidden] = query.dims();
        let n = ups.len();
        // [batch, seq, adapters, hidden]
        let mut values = Tensor::stack::<4>(ups, 2);
        if self.residual_before {
            values = values + residual.clone().unsqueeze_dim::<4>(2);
        }
        let project = |linear: &Option<Linear>, x: Tensor<4>| match linear {
            Some(linear) => linear.forward(x),
            None => x,
        };
        let query = match &self.query {
            Some(linear) => linear.forward(query),
            None => query,
        };
        let keys = project(&self.key, values.clone());
        let values = if self.value_before_softmax {
            project(&self.value, values)
        } else {
            values
        };
        let scores = query
            .unsqueeze_dim::<4>(2)
            .matmul(keys.swap_dims(2, 3))
            .reshape([batch, seq, n]);
        let probs = softmax(dropout(&self.dropout, scores), 2);
        let mut context = probs
            .unsqueeze_dim::<4>(2)
            .matmul(values)
            .reshape([batch, seq, hidden]);
        if !self.value_before_softmax
            && let Some(value) = &self.value
        {
            context = value.forward(context);
        }
        if self.residual_before {
            context
        } else {
            context + residual
        }
    }

    /// AdapterHub's value regularisation `0.01·‖I − W_v‖²` (`None` without a value projection).
    pub fn regularization_loss(&self) -> Option<Tensor<1>> {
        let weight = self.value.as_ref()?.weight.val();
        let [n, _] = weight.dims();
        let identity = Tensor::<2>::eye(n, &weight.device());
        Some((identity - weight).powi_scalar(2).sum().mul_scalar(0.01))
    }
}
