//! Building a Llama-family model from its config, and loading a Hugging Face directory.

use std::path::Path;

use burn::nn::{DropoutConfig, EmbeddingConfig, LinearConfig, RmsNormConfig};
use burn::store::{KeyRemapper, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{DType, Device};

use super::{LlamaAttention, LlamaConfig, LlamaDecoderLayer, LlamaMlp, LlamaModel, Rope};
use crate::backend::cast_params;
use crate::error::Result;
use crate::model::AdapterRegistry;
use crate::models::decoder::{load_weights, weight_files};
use crate::sites::{
    AttentionSite, EmbeddingSite, HiddenStateSite, LinearLocation, LinearPosition, LinearSite,
    NamedModules, PrefixPool, ResidualSite, SharedParameters, SiteLocation, SitePosition,
};

impl LlamaModel {
    /// A randomly initialised model for a validated config.
    pub(crate) fn build(config: &LlamaConfig, device: &Device) -> Self {
        let norm = || {
            RmsNormConfig::new(config.hidden_size)
                .with_epsilon(config.rms_norm_eps)
                .init(device)
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| build_layer(config, i, device))
            .collect();
        Self {
            embed_tokens: EmbeddingConfig::new(config.vocab_size, config.hidden_size).init(device),
            layers,
            norm: norm(),
            lm_head: (!config.tie_word_embeddings).then(|| {
                LinearConfig::new(config.hidden_size, config.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
            rope: Rope::new(
                config.head_width(),
                config.rope_theta,
                config.rope_scaling.as_ref(),
            ),
            heads: NamedModules::default(),
            prefix_tuning: PrefixPool::new(config.kv_heads(), config.head_width()),
            shared_parameters: SharedParameters::new(),
            embedding_site: EmbeddingSite::new(),
            config: config.clone(),
            registry: AdapterRegistry::default(),
        }
    }

    /// Loads a Hugging Face Llama, Mistral or Qwen2 directory: `config.json` with
    /// `model.safetensors`, or with the shards a `model.safetensors.index.json` lists.
    ///
    /// Weights are read in f32 whatever the file's dtype (f32, f16, bf16; `backend::cast_params`
    /// casts the model afterwards); tensors the model does not use (rotary caches of old
    /// checkpoints) are ignored, missing ones are an error naming the tensor.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = LlamaConfig::from_file(dir.join("config.json"))?;
        let mut model = config.init(device)?;
        let remap = KeyRemapper::new()
            .add_pattern(r"^model\.", "")
            .expect("a constant pattern is a valid regex");
        let store = |file: &Path| {
            SafetensorsStore::from_file(file)
                .remap(remap.clone())
                .with_from_adapter(PyTorchToBurnAdapter)
        };
        load_weights(&mut model, &weight_files(dir)?, store)?;
        // f16/bf16 checkpoints keep their file's dtype through the store.
        Ok(cast_params(model, DType::F32))
    }

    /// Writes the model as a Hugging Face causal-LM directory (`config.json` +
    /// `model.safetensors` under the `*ForCausalLM` names, f32): the base weights only, with the
    /// merged adapter, if any, folded in, as [`BertModel::save_pretrained`] does.
    ///
    /// [`BertModel::save_pretrained`]: crate::models::bert::BertModel::save_pretrained
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let family = self.config.model_type;
        let config = crate::models::export::hf_config(
            &self.config,
            family.model_type(),
            family.model_class(),
        );
        crate::models::export::write_pretrained(
            self,
            dir.as_ref(),
            config,
            &[(r"^", "model."), (r"^model\.lm_head\.", "lm_head.")],
            burn::store::BurnToPyTorchAdapter,
        )
    }
}

fn build_layer(config: &LlamaConfig, layer: usize, device: &Device) -> LlamaDecoderLayer {
    let (h, d) = (config.hidden_size, config.head_width());
    let (heads, kv_heads) = (config.num_attention_heads, config.kv_heads());
    let linear =
        |i: usize, o: usize, bias: bool| LinearConfig::new(i, o).with_bias(bias).init(device);
    let site = |i: usize, o: usize, bias: bool, position| {
        LinearSite::new(linear(i, o, bias), LinearLocation { layer, position })
    };
    let residual = |position| ResidualSite::new(SiteLocation { layer, position });
    let norm = || {
        RmsNormConfig::new(h)
            .with_epsilon(config.rms_norm_eps)
            .init(device)
    };
    let (qkv_bias, mlp_bias, ffn) = (config.qkv_bias(), config.mlp_bias, config.intermediate_size);
    LlamaDecoderLayer {
        input_layernorm: norm(),
        self_attn: LlamaAttention {
            q_proj: site(h, heads * d, qkv_bias, LinearPosition::Query),
            k_proj: site(h, kv_heads * d, qkv_bias, LinearPosition::Key),
            v_proj: site(h, kv_heads * d, qkv_bias, LinearPosition::Value),
            o_proj: site(
                heads * d,
                h,
                config.attention_bias,
                LinearPosition::AttentionOutput,
            ),
            dropout: DropoutConfig::new(config.attention_dropout).init(),
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: d,
            window: config.window_of(layer),
            prefix_tuning: AttentionSite::new(layer),
        },
        post_attention_layernorm: norm(),
        mlp: LlamaMlp {
            gate_proj: site(h, ffn, mlp_bias, LinearPosition::Gate),
            up_proj: site(h, ffn, mlp_bias, LinearPosition::Output),
            down_proj: site(ffn, h, mlp_bias, LinearPosition::Intermediate),
            activation: config.hidden_act,
        },
        attention_adapters: residual(SitePosition::Attention),
        output_adapters: residual(SitePosition::Output),
        reft_layer: HiddenStateSite::new(layer),
    }
}
