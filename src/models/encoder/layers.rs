//! The layers of the adapter-ready encoder: burn's attention, feed-forward block and encoder
//! layer with the same sub-modules (and parameter paths), re-implemented forwards, and sites.

use burn::module::Module;
use burn::nn::activation::Activation;
use burn::nn::attention::MultiHeadAttention;
use burn::nn::transformer::{PositionWiseFeedForward, TransformerEncoderLayer};
use burn::nn::{Dropout, Gelu, LayerNorm, Linear};
use burn::tensor::activation::{quiet_softmax, softmax};
use burn::tensor::{Bool, Tensor};

use crate::methods::dropout;
use crate::sites::{
    AttentionSite, HiddenStateSite, LinearLocation, LinearPosition, LinearSite, PrefixStates,
    ResidualSite, SharedParameters, SiteLocation, SitePosition,
};

/// burn's [`MultiHeadAttention`] with its query, key and value projections as LoRA sites.
#[derive(Module, Debug)]
pub struct AdapterAttention {
    /// Query projection.
    pub query: LinearSite,
    /// Key projection.
    pub key: LinearSite,
    /// Value projection.
    pub value: LinearSite,
    /// Output projection.
    pub output: Linear,
    /// Dropout on attention weights.
    pub dropout: Dropout,
    /// burn's (unused) activation field, kept for the round trip.
    pub activation: Gelu,
    /// Model width.
    pub d_model: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Width of one head.
    pub d_k: usize,
    /// Score given to masked positions.
    pub min_float: f64,
    /// Softmax with an extra zero logit.
    pub quiet_softmax: bool,
    /// Key/value prefixes (prefix tuning).
    pub prefix_tuning: AttentionSite,
}

impl AdapterAttention {
    pub(super) fn from_mha(mha: MultiHeadAttention, layer: usize) -> Self {
        let site = |linear, position| LinearSite::new(linear, LinearLocation { layer, position });
        Self {
            query: site(mha.query, LinearPosition::Query),
            key: site(mha.key, LinearPosition::Key),
            value: site(mha.value, LinearPosition::Value),
            output: mha.output,
            dropout: mha.dropout,
            activation: mha.activation,
            d_model: mha.d_model,
            n_heads: mha.n_heads,
            d_k: mha.d_k,
            min_float: mha.min_float,
            quiet_softmax: mha.quiet_softmax,
            prefix_tuning: AttentionSite::new(layer),
        }
    }

    pub(super) fn into_mha(self) -> MultiHeadAttention {
        MultiHeadAttention {
            query: self.query.into_linear(),
            key: self.key.into_linear(),
            value: self.value.into_linear(),
            output: self.output,
            dropout: self.dropout,
            activation: self.activation,
            d_model: self.d_model,
            n_heads: self.n_heads,
            d_k: self.d_k,
            min_float: self.min_float,
            quiet_softmax: self.quiet_softmax,
        }
    }

    /// Self-attention, as burn's `MultiHeadAttention::forward` computes it.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, d_model]`, mask_pad: `[batch, seq]`, mask_attn: `[batch, seq, seq]`
    /// - output: `[batch, seq, d_model]`
    fn forward(
        &self,
        x: Tensor<3>,
        mask_pad: Option<Tensor<2, Bool>>,
        mask_attn: Option<Tensor<3, Bool>>,
        prefixes: &PrefixStates,
    ) -> Tensor<3> {
        let [batch, seq, d_model] = x.dims();
        let heads = |site: &LinearSite| {
            site.forward(x.clone())
                .reshape([batch, seq, self.n_heads, self.d_k])
                .swap_dims(1, 2)
        };
        let (query, key, value) = (heads(&self.query), heads(&self.key), heads(&self.value));
        let prefixed = self.prefix_tuning.forward(key, value, &x, prefixes);
        let keys = prefixed.keys.dims()[2];
        let mut scores = query
            .matmul(prefixed.keys.clone().transpose())
            .div_scalar((self.d_k as f32).sqrt());
        if let Some(mask) = mask_pad {
            let mask = prefixed.extend_key_mask(mask);
            scores = scores.mask_fill(mask.reshape([batch, 1, 1, keys]), self.min_float);
        }
        if let Some(mask) = mask_attn {
            let mask = prefixed.extend_attention_mask(mask);
            scores = scores.mask_fill(mask.reshape([batch, 1, seq, keys]), self.min_float);
        }
        let scores = prefixed.mask_missing(scores);
        let value = prefixed.values;
        let weights = if self.quiet_softmax {
            quiet_softmax(scores, 3)
        } else {
            softmax(scores, 3)
        };
        let context = dropout(&self.dropout, weights)
            .matmul(value)
            .swap_dims(1, 2)
            .reshape([batch, seq, d_model]);
        self.output.forward(context)
    }
}

/// burn's [`PositionWiseFeedForward`] with both projections as LoRA sites.
#[derive(Module, Debug)]
pub struct AdapterFeedForward {
    /// `d_model → d_ff` (AdapterHub's `intermediate` position).
    pub linear_inner: LinearSite,
    /// `d_ff → d_model` (AdapterHub's `output` position).
    pub linear_outer: LinearSite,
    /// Dropout after the activation.
    pub dropout: Dropout,
    /// The non-linearity.
    #[module(skip)]
    pub activation: Activation,
}

impl AdapterFeedForward {
    fn from_pwff(pwff: PositionWiseFeedForward, layer: usize) -> Self {
        let site = |linear, position| LinearSite::new(linear, LinearLocation { layer, position });
        Self {
            linear_inner: site(pwff.linear_inner, LinearPosition::Intermediate),
            linear_outer: site(pwff.linear_outer, LinearPosition::Output),
            dropout: pwff.dropout,
            activation: pwff.activation,
        }
    }

    fn into_pwff(self) -> PositionWiseFeedForward {
        PositionWiseFeedForward {
            linear_inner: self.linear_inner.into_linear(),
            linear_outer: self.linear_outer.into_linear(),
            dropout: self.dropout,
            activation: self.activation,
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.linear_inner.forward(x);
        let x = dropout(&self.dropout, self.activation.forward(x));
        self.linear_outer.forward(x)
    }
}

/// A [`TransformerEncoderLayer`] with a residual site after attention and after the FFN.
#[derive(Module, Debug)]
pub struct AdapterEncoderLayer {
    /// Self-attention (burn's, with LoRA sites).
    pub mha: AdapterAttention,
    /// Feed-forward block (burn's, with LoRA sites).
    pub pwff: AdapterFeedForward,
    /// burn's `norm_1` (after attention in post-norm layers, before the FFN in pre-norm ones).
    pub norm_1: LayerNorm,
    /// burn's `norm_2` (after the FFN in post-norm layers, before attention in pre-norm ones).
    pub norm_2: LayerNorm,
    /// Dropout on both residual branches.
    pub dropout: Dropout,
    /// Pre-norm (`true`) or post-norm layer.
    pub norm_first: bool,
    /// Adapters after attention (`mh_adapter`).
    pub attention_adapters: ResidualSite,
    /// Adapters after the FFN (`output_adapter`).
    pub output_adapters: ResidualSite,
    /// ReFT interventions on the layer's output.
    pub reft_layer: HiddenStateSite,
}

impl AdapterEncoderLayer {
    pub(super) fn from_layer(layer: TransformerEncoderLayer, index: usize) -> Self {
        let site = |position| {
            ResidualSite::new(SiteLocation {
                layer: index,
                position,
            })
        };
        Self {
            mha: AdapterAttention::from_mha(layer.mha, index),
            pwff: AdapterFeedForward::from_pwff(layer.pwff, index),
            norm_1: layer.norm_1,
            norm_2: layer.norm_2,
            dropout: layer.dropout,
            norm_first: layer.norm_first,
            attention_adapters: site(SitePosition::Attention),
            output_adapters: site(SitePosition::Output),
            reft_layer: HiddenStateSite::new(index),
        }
    }

    pub(super) fn into_layer(self) -> TransformerEncoderLayer {
        TransformerEncoderLayer {
            mha: self.mha.into_mha(),
            pwff: self.pwff.into_pwff(),
            norm_1: self.norm_1,
            norm_2: self.norm_2,
            dropout: self.dropout,
            norm_first: self.norm_first,
        }
    }

    /// # Shapes
    ///
    /// - x: `[batch, seq, d_model]`, mask_pad: `[batch, seq]` (true = padding), mask_attn:
    ///   `[batch, seq, seq]` (true = masked)
    /// - output: `[batch, seq, d_model]`
    pub(super) fn forward(
        &self,
        x: Tensor<3>,
        mask_pad: Option<Tensor<2, Bool>>,
        mask_attn: Option<Tensor<3, Bool>>,
        prefixes: &PrefixStates,
        shared: &SharedParameters,
    ) -> Tensor<3> {
        // Post-norm: the sites apply the block's LayerNorm themselves (norm_1 after attention,
        // norm_2 after the FFN). Pre-norm: the LayerNorm comes first and the block ends in a sum.
        let attention_input = if self.norm_first {
            self.norm_2.forward(x.clone())
        } else {
            x.clone()
        };
        let h = dropout(
            &self.dropout,
            self.mha
                .forward(attention_input, mask_pad, mask_attn, prefixes),
        );
        let x = self.attention_adapters.forward(
            h,
            x,
            (!self.norm_first).then_some(&self.norm_1),
            shared,
        );

        let ffn_input = if self.norm_first {
            self.norm_1.forward(x.clone())
        } else {
            x.clone()
        };
        let h = dropout(&self.dropout, self.pwff.forward(ffn_input));
        self.output_adapters
            .forward(h, x, (!self.norm_first).then_some(&self.norm_2), shared)
    }
}
