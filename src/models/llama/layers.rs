//! The building blocks of a Llama-family decoder layer, at transformers' parameter paths.

use burn::module::Module;
use burn::nn::{Dropout, RmsNorm};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, activation::softmax};

use super::rope::RopeTables;
use crate::config::Activation;
use crate::methods::{dropout, dropout_active};
use crate::models::decoder::{AttentionBias, LayerCache};
use crate::sites::{
    AttentionSite, HiddenStateSite, LinearSite, PrefixStates, ResidualSite, SharedParameters,
};

/// Grouped-query self-attention with rotary positions (`self_attn`).
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// Query projection (a LoRA site, `q`).
    pub q_proj: LinearSite,
    /// Key projection (a LoRA site, `k`).
    pub k_proj: LinearSite,
    /// Value projection (a LoRA site, `v`).
    pub v_proj: LinearSite,
    /// Output projection (a LoRA site, `o`; an extension of AdapterHub's placements).
    pub o_proj: LinearSite,
    /// Dropout on attention probabilities.
    pub dropout: Dropout,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; each serves `num_heads / num_kv_heads` query heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// The sliding window of this layer, if it has one.
    pub window: Option<usize>,
    /// Key/value prefixes (prefix tuning).
    pub prefix_tuning: AttentionSite,
}

impl LlamaAttention {
    /// Attends from `x` to the cached positions and `x`'s own, appending `x`'s keys and values
    /// to `cache` when one is given.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub(super) fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        bias: &AttentionBias,
        cache: Option<&mut LayerCache>,
        prefixes: &PrefixStates,
    ) -> Tensor<3> {
        let [batch, seq, _] = x.dims();
        let d = self.head_dim;
        let split = |t: Tensor<3>, heads: usize| t.reshape([batch, seq, heads, d]).swap_dims(1, 2);
        let q = rope.apply(split(self.q_proj.forward(x.clone()), self.num_heads));
        let k = rope.apply(split(self.k_proj.forward(x.clone()), self.num_kv_heads));
        let v = split(self.v_proj.forward(x.clone()), self.num_kv_heads);
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        // As in AdapterHub: the prefixes come after the cache (they are not cached) and before
        // the heads are repeated, without rotary positions.
        let prefixed = self.prefix_tuning.forward(k, v, &x, prefixes);
        let bias = prefixed.extend_bias(Some(bias.for_window(self.window)));
        let bias = bias.expect("a present bias stays present");
        let (k, v) = (
            self.repeat_kv(prefixed.keys),
            self.repeat_kv(prefixed.values),
        );
        let context = if dropout_active(&self.dropout, &x.device()) {
            // Spelled out, so that dropout can act on the probabilities.
            let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d as f64).sqrt()) + bias;
            dropout(&self.dropout, softmax(scores, 3)).matmul(v)
        } else {
            attention(q, k, v, None, Some(bias), AttentionModuleOptions::default())
        };
        let context = context
            .swap_dims(1, 2)
            .reshape([batch, seq, self.num_heads * d]);
        self.o_proj.forward(context)
    }

    /// Repeats each key/value head for the query heads it serves (transformers' `repeat_kv`:
    /// query head `h` reads key/value head `h / groups`).
    fn repeat_kv(&self, t: Tensor<4>) -> Tensor<4> {
        let groups = self.num_heads / self.num_kv_heads;
        if groups == 1 {
            return t;
        }
        let [batch, heads, seq, d] = t.dims();
        t.reshape([batch, heads, 1, seq, d])
            .expand([batch, heads, groups, seq, d])
            .reshape([batch, heads * groups, seq, d])
    }
}

/// The gated feed-forward block (`mlp`): `down(act(gate(x)) · up(x))`.
///
/// AdapterHub wraps `down_proj` as its `intermediate` LoRA location and `up_proj` as `output`;
/// the sites keep those locations so that configs and files mean the same.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// Gate projection (a LoRA site, `gate_lora`; an extension of AdapterHub's placements).
    pub gate_proj: LinearSite,
    /// Up projection (a LoRA site, AdapterHub's `output_lora`).
    pub up_proj: LinearSite,
    /// Down projection (a LoRA site, AdapterHub's `intermediate_lora`).
    pub down_proj: LinearSite,
    /// The gate's non-linearity.
    #[module(skip)]
    pub activation: Activation,
}

impl LlamaMlp {
    /// # Shapes
    ///
    /// - x, output: `[batch, seq, hidden]`
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.activation.forward(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

/// One pre-norm decoder layer, with a residual site after attention and one after the
/// feed-forward block (AdapterHub's `attention_adapters` and `output_adapters`).
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm,
    /// Self-attention.
    pub self_attn: LlamaAttention,
    /// RMSNorm before the feed-forward block.
    pub post_attention_layernorm: RmsNorm,
    /// Feed-forward block.
    pub mlp: LlamaMlp,
    /// Adapters after attention (`mh_adapter`).
    pub attention_adapters: ResidualSite,
    /// Adapters after the feed-forward block (`output_adapter`).
    pub output_adapters: ResidualSite,
    /// ReFT interventions on the layer's output (AdapterHub's `reft_layer`).
    pub reft_layer: HiddenStateSite,
}

impl LlamaDecoderLayer {
    pub(super) fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        bias: &AttentionBias,
        cache: Option<&mut LayerCache>,
        prefixes: &PrefixStates,
        shared: &SharedParameters,
    ) -> Tensor<3> {
        let normed = self.input_layernorm.forward(x.clone());
        let h = self.self_attn.forward(normed, rope, bias, cache, prefixes);
        let x = self.attention_adapters.forward(h, x, None, shared);
        let h = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        self.output_adapters.forward(h, x, None, shared)
    }
}
