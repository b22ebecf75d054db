//! The building blocks of a BERT layer, at transformers' parameter paths.

use burn::module::Module;
use burn::nn::{Dropout, Embedding, LayerNorm, Linear};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Int, Tensor, activation::softmax};

use crate::backend::is_flex;
use crate::config::Activation;
use crate::methods::{dropout, dropout_active};
use crate::models::input_checks::masked_score;
use crate::sites::{
    AttentionSite, HiddenStateSite, LinearSite, PrefixStates, ResidualSite, SharedParameters,
};

/// Word, position and token-type embeddings.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// Token embeddings.
    pub word_embeddings: Embedding,
    /// Absolute position embeddings.
    pub position_embeddings: Embedding,
    /// Segment embeddings.
    pub token_type_embeddings: Embedding,
    /// LayerNorm over the summed embeddings.
    pub layer_norm: LayerNorm,
    /// Dropout after the LayerNorm.
    pub dropout: Dropout,
}

impl BertEmbeddings {
    pub(super) fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .unsqueeze::<2>()
            .expand([batch, seq]);
        let token_types = token_type_ids.unwrap_or_else(|| Tensor::zeros([batch, seq], &device));
        let x = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_types)
            + self.position_embeddings.forward(positions);
        dropout(&self.dropout, self.layer_norm.forward(x))
    }
}

/// Multi-head self-attention (`attention.self`).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// Query projection (a LoRA site).
    pub query: LinearSite,
    /// Key projection (a LoRA site).
    pub key: LinearSite,
    /// Value projection (a LoRA site).
    pub value: LinearSite,
    /// Dropout on attention probabilities.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
    /// Key/value prefixes (prefix tuning).
    pub prefix_tuning: AttentionSite,
}

impl BertSelfAttention {
    /// # Shapes
    ///
    /// - x: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    fn forward(
        &self,
        x: Tensor<3>,
        padding: Option<&Padding>,
        prefixes: &PrefixStates,
    ) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let split = |t: Tensor<3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let prefixed = self.prefix_tuning.forward(k, v, &x, prefixes);
        let bias = prefixed.extend_bias(padding.map(|padding| padding.bias.clone()));
        let (k, v) = (prefixed.keys, prefixed.values);
        let context = if dropout_active(&self.dropout, &x.device()) {
            // Spelled out, so that dropout can act on the probabilities.
            let mut scores = q
                .matmul(k.swap_dims(2, 3))
                .div_scalar((head_dim as f64).sqrt());
            if let Some(bias) = bias {
                scores = scores + bias;
            }
            dropout(&self.dropout, softmax(scores, 3)).matmul(v)
        } else {
            // The backend's fused kernel where it has one (libtorch's
            // scaled_dot_product_attention, CubeCL's flash attention without a bias).
            attention(q, k, v, None, bias, AttentionModuleOptions::default())
        };
        context.swap_dims(1, 2).reshape([batch, seq, hidden])
    }
}

/// The padding of a batch as the attention layers use it, built once per forward.
#[derive(Debug, Clone)]
pub(super) struct Padding {
    /// `0` at tokens and the dtype's `masked_score` at padded keys, `[batch, 1, 1, seq]`: what
    /// transformers adds to the scores.
    bias: Tensor<4>,
}

impl Padding {
    /// The padding of `attention_mask` (`[batch, seq]`, 0 = padding) for scores of `dtype`, or
    /// `None` for a batch without padding where that is known for free.
    ///
    /// The mask is not read back from a device (that would make the forward wait for it): a
    /// batch without padding then adds a bias of zeros. On flex the mask already is host memory,
    /// so an all-ones mask is dropped as transformers drops it, which spares the attention its
    /// bias (docs/PERFORMANCE.md).
    pub(super) fn new(attention_mask: Tensor<2, Int>, dtype: DType) -> Option<Self> {
        let [batch, seq] = attention_mask.dims();
        let padded = attention_mask.equal_elem(0);
        if is_flex(&padded.device()) && !padded.clone().any().into_scalar::<bool>() {
            return None;
        }
        let lowest = masked_score(dtype);
        let mask = padded.reshape([batch, 1, 1, seq]);
        let bias = Tensor::<4>::zeros([batch, 1, 1, seq], &mask.device())
            .cast(dtype)
            .mask_fill(mask, lowest);
        Some(Self { bias })
    }
}

/// Output projection of the attention block, with its residual site.
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    /// Output projection (a LoRA site: PEFT's `attention.output.dense`).
    pub dense: LinearSite,
    /// The block's LayerNorm.
    pub layer_norm: LayerNorm,
    /// Dropout on the projection.
    pub dropout: Dropout,
    /// Adapters after attention (`mh_adapter`).
    pub adapters: ResidualSite,
}

/// Attention block (`attention`).
#[derive(Module, Debug)]
pub struct BertAttention {
    /// Self-attention (`attention.self` in transformers).
    pub self_attention: BertSelfAttention,
    /// Output projection and residual site.
    pub output: BertSelfOutput,
}

/// First FFN projection and activation (`intermediate`).
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// Projection to the FFN width (a LoRA site).
    pub dense: LinearSite,
    /// The FFN non-linearity.
    #[module(skip)]
    pub activation: Activation,
}

/// Second FFN projection, with its residual site (`output`).
#[derive(Module, Debug)]
pub struct BertOutput {
    /// Projection back to the hidden width (a LoRA site).
    pub dense: LinearSite,
    /// The block's LayerNorm.
    pub layer_norm: LayerNorm,
    /// Dropout on the projection.
    pub dropout: Dropout,
    /// Adapters after the FFN (`output_adapter`).
    pub adapters: ResidualSite,
}

/// One transformer layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Attention block.
    pub attention: BertAttention,
    /// FFN first half.
    pub intermediate: BertIntermediate,
    /// FFN second half.
    pub output: BertOutput,
    /// ReFT interventions on the layer's output (AdapterHub's `reft_layer`).
    pub reft_layer: HiddenStateSite,
}

impl BertLayer {
    pub(super) fn forward(
        &self,
        x: Tensor<3>,
        padding: Option<&Padding>,
        prefixes: &PrefixStates,
        shared: &SharedParameters,
    ) -> Tensor<3> {
        let attn = &self.attention.output;
        let context = self
            .attention
            .self_attention
            .forward(x.clone(), padding, prefixes);
        let h = dropout(&attn.dropout, attn.dense.forward(context));
        let x = attn.adapters.forward(h, x, Some(&attn.layer_norm), shared);
        let inner = self
            .intermediate
            .activation
            .forward(self.intermediate.dense.forward(x.clone()));
        let out = &self.output;
        let h = dropout(&out.dropout, out.dense.forward(inner));
        out.adapters.forward(h, x, Some(&out.layer_norm), shared)
    }
}

/// The stack of layers (`encoder`).
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// Layers (`encoder.layer.{i}`).
    pub layer: Vec<BertLayer>,
}

/// `tanh(dense(h[CLS]))` (`pooler`).
#[derive(Module, Debug)]
pub struct BertPooler {
    /// Pooler projection.
    pub dense: Linear,
}
