//! Building a Llama-family model from its config, and loading a Hugging Face directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::nn::{DropoutConfig, EmbeddingConfig, LinearConfig, RmsNormConfig};
use burn::store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{DType, Device};
use serde::Deserialize;

use super::{LlamaAttention, LlamaConfig, LlamaDecoderLayer, LlamaMlp, LlamaModel, Rope};
use crate::backend::cast_params;
use crate::error::{Error, Result};
use crate::model::AdapterRegistry;
use crate::sites::{
    LinearLocation, LinearPosition, LinearSite, ResidualSite, SiteLocation, SitePosition,
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
        let files = weight_files(dir)?;
        let mut model = config.init(device)?;
        let mut missing: Option<BTreeSet<String>> = None;
        for file in &files {
            let remap = KeyRemapper::new()
                .add_pattern(r"^model\.", "")
                .expect("a constant pattern is a valid regex");
            let mut store = SafetensorsStore::from_file(file)
                .remap(remap)
                .with_from_adapter(PyTorchToBurnAdapter)
                .allow_partial(true);
            let result = model
                .load_from(&mut store)
                .map_err(|e| Error::format(file, e.to_string()))?;
            if let Some(error) = result.errors.first() {
                return Err(Error::format(file, format!("{error:?}")));
            }
            let here: BTreeSet<String> = result.missing.into_iter().map(|(path, _)| path).collect();
            missing = Some(match missing {
                Some(before) => before.intersection(&here).cloned().collect(),
                None => here,
            });
        }
        if let Some(key) = missing.and_then(|m| m.into_iter().next()) {
            return Err(Error::MissingTensor {
                path: files[0].clone(),
                key,
            });
        }
        // f16/bf16 checkpoints keep their file's dtype through the store.
        Ok(cast_params(model, DType::F32))
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
            o_proj: linear(heads * d, h, config.attention_bias),
            dropout: DropoutConfig::new(config.attention_dropout).init(),
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: d,
            window: config.window_of(layer),
        },
        post_attention_layernorm: norm(),
        mlp: LlamaMlp {
            gate_proj: linear(h, ffn, mlp_bias),
            up_proj: site(h, ffn, mlp_bias, LinearPosition::Output),
            down_proj: site(ffn, h, mlp_bias, LinearPosition::Intermediate),
            activation: config.hidden_act,
        },
        attention_adapters: residual(SitePosition::Attention),
        output_adapters: residual(SitePosition::Output),
    }
}

/// The safetensors files of a model directory: `model.safetensors`, or the shards of
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    if !index_path.is_file() {
        return Err(Error::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file (nor a model.safetensors.index.json)",
            ),
        ));
    }
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let index: Index = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: index_path.clone(),
        field: "weight_map".into(),
        reason: e.to_string(),
    })?;
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    shards
        .into_iter()
        .map(|shard| {
            let path = dir.join(shard);
            let inside = Path::new(shard).components().count() == 1;
            if inside && path.is_file() {
                Ok(path)
            } else {
                Err(Error::Json {
                    path: index_path.clone(),
                    field: format!("weight_map.{shard}"),
                    reason: "not a file in the model directory".into(),
                })
            }
        })
        .collect()
}
