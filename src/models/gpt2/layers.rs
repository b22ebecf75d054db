//! The building blocks of a GPT-2 block, at transformers' parameter paths.

use burn::module::Module;
use burn::nn::{Dropout, LayerNorm};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, activation::softmax};

use crate::config::Activation;
use crate::methods::{dropout, dropout_active};
use crate::models::decoder::LayerCache;
use crate::sites::{
    AttentionSite, HiddenStateSite, LinearSite, PrefixStates, ResidualSite, SharedParameters,
};

/// Causal self-attention with one fused query/key/value projection (`attn`).
#[derive(Module, Debug)]
pub struct Gpt2Attention {
    /// The fused query, key and value projection (a LoRA site whose modules update the
    /// `attn_matrices` blocks, AdapterHub's `LoRAMergedLinear`).
    pub c_attn: LinearSite,
    /// Output projection (a LoRA site, `o`; an extension of AdapterHub's placements).
    pub c_proj: LinearSite,
    /// Dropout on attention probabilities.
    pub attn_dropout: Dropout,
    /// Dropout on the output.
    pub resid_dropout: Dropout,
    /// Attention heads.
    pub num_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// The factor scores are multiplied by.
    pub scale: f64,
    /// Key/value prefixes (prefix tuning).
    pub prefix_tuning: AttentionSite,
}

impl Gpt2Attention {
    /// Attends from `x` to the cached positions and `x`'s own, appending `x`'s keys and values
    /// to `cache` when one is given.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, hidden]`
    /// - bias: `[batch, 1, seq, past + seq]`
    /// - output: `[batch, seq, hidden]`
    pub(super) fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        cache: Option<&mut LayerCache>,
        prefixes: &PrefixStates,
    ) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let qkv = self.c_attn.forward(x.clone());
        let heads = |i: usize| {
            qkv.clone()
                .narrow(2, i * hidden, hidden)
                .reshape([batch, seq, self.num_heads, self.head_dim])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (heads(0), heads(1), heads(2));
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        // As in AdapterHub: the prefixes come after the cache (they are not cached).
        let prefixed = self.prefix_tuning.forward(k, v, &x, prefixes);
        let bias = prefixed.extend_bias(Some(bias));
        let bias = bias.expect("a present bias stays present");
        let (k, v) = (prefixed.keys, prefixed.values);
        let context = if dropout_active(&self.attn_dropout, &x.device()) {
            // Spelled out, so that dropout can act on the probabilities.
            let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale) + bias;
            dropout(&self.attn_dropout, softmax(scores, 3)).matmul(v)
        } else {
            let options = AttentionModuleOptions {
                scale: Some(self.scale),
                ..Default::default()
            };
            attention(q, k, v, None, Some(bias), options)
        };
        let context = context.swap_dims(1, 2).reshape([batch, seq, hidden]);
        dropout(&self.resid_dropout, self.c_proj.forward(context))
    }
}

/// The feed-forward block (`mlp`): `c_proj(act(c_fc(x)))`.
///
/// AdapterHub wraps `c_fc` as its `intermediate` LoRA location and `c_proj` as `output`.
#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    /// First projection (a LoRA site, AdapterHub's `intermediate_lora`).
    pub c_fc: LinearSite,
    /// Second projection (a LoRA site, AdapterHub's `output_lora`).
    pub c_proj: LinearSite,
    /// Dropout on the output.
    pub dropout: Dropout,
    /// The non-linearity.
    #[module(skip)]
    pub activation: Activation,
}

impl Gpt2Mlp {
    /// # Shapes
    ///
    /// - x, output: `[batch, seq, hidden]`
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.activation.forward(self.c_fc.forward(x));
        dropout(&self.dropout, self.c_proj.forward(h))
    }
}

/// One pre-norm GPT-2 block, with a residual site after attention and one after the
/// feed-forward block (AdapterHub's `attention_adapters` and `output_adapters`).
#[derive(Module, Debug)]
pub struct Gpt2Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Self-attention.
    pub attn: Gpt2Attention,
    /// LayerNorm before the feed-forward block.
    pub ln_2: LayerNorm,
    /// Feed-forward block.
    pub mlp: Gpt2Mlp,
    /// Adapters after attention (`mh_adapter`).
    pub attention_adapters: ResidualSite,
    /// Adapters after the feed-forward block (`output_adapter`).
    pub output_adapters: ResidualSite,
    /// ReFT interventions on the block's output (AdapterHub's `reft_layer`).
    pub reft_layer: HiddenStateSite,
}

impl Gpt2Block {
    pub(super) fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        cache: Option<&mut LayerCache>,
        prefixes: &PrefixStates,
        shared: &SharedParameters,
    ) -> Tensor<3> {
        let normed = self.ln_1.forward(x.clone());
        let h = self.attn.forward(normed, bias, cache, prefixes);
        let x = self.attention_adapters.forward(h, x, None, shared);
        let h = self.mlp.forward(self.ln_2.forward(x.clone()));
        self.output_adapters.forward(h, x, None, shared)
    }
}
