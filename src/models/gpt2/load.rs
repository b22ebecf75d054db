//! Building a GPT-2 model from its config, and loading a Hugging Face directory.

use std::path::Path;

use burn::nn::{DropoutConfig, EmbeddingConfig, LayerNormConfig, LinearConfig};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleAdapter, ModuleContext, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::{DType, Device};

use super::{Gpt2Attention, Gpt2Block, Gpt2Config, Gpt2Mlp, Gpt2Model};
use crate::backend::cast_params;
use crate::error::Result;
use crate::model::AdapterRegistry;
use crate::models::decoder::{load_weights, weight_files};
use crate::sites::{
    AttentionSite, EmbeddingSite, HiddenStateSite, LinearLocation, LinearPosition, LinearSite,
    NamedModules, PrefixPool, ResidualSite, SharedParameters, SiteLocation, SitePosition,
};

impl Gpt2Model {
    /// A randomly initialised model for a validated config.
    pub(crate) fn build(config: &Gpt2Config, device: &Device) -> Self {
        let h = config.n_embd;
        Self {
            wte: EmbeddingConfig::new(config.vocab_size, h).init(device),
            wpe: EmbeddingConfig::new(config.n_positions, h).init(device),
            drop: DropoutConfig::new(config.embd_pdrop).init(),
            h: (0..config.n_layer)
                .map(|i| build_block(config, i, device))
                .collect(),
            ln_f: layer_norm(config, device),
            lm_head: (!config.tie_word_embeddings).then(|| {
                LinearConfig::new(h, config.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
            heads: NamedModules::default(),
            prefix_tuning: PrefixPool::new(config.n_head, config.head_width()),
            shared_parameters: SharedParameters::new(),
            embedding_site: EmbeddingSite::new(),
            config: config.clone(),
            registry: AdapterRegistry::default(),
        }
    }

    /// Loads a Hugging Face GPT-2 directory: `config.json` with `model.safetensors`, or with
    /// the shards a `model.safetensors.index.json` lists; keys with or without the
    /// `transformer.` prefix.
    ///
    /// Weights are read in f32 whatever the file's dtype (f32, f16, bf16). GPT-2's projections
    /// are `Conv1D`s, stored `[in, out]` as burn stores a `Linear`, so they load untransposed;
    /// an untied `lm_head` is a torch `Linear` and is transposed. Tensors the model does not
    /// use (the causal-mask buffers of old checkpoints) are ignored, missing ones are an error
    /// naming the tensor.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = Gpt2Config::from_file(dir.join("config.json"))?;
        let mut model = config.init(device)?;
        let remap = KeyRemapper::new()
            .add_pattern(r"^transformer\.", "")
            .expect("a constant pattern is a valid regex");
        let store = |file: &Path| {
            SafetensorsStore::from_file(file)
                .remap(remap.clone())
                .with_from_adapter(Conv1dAdapter(Direction::FromTorch))
        };
        load_weights(&mut model, &weight_files(dir)?, store)?;
        Ok(cast_params(model, DType::F32))
    }

    /// Writes the model as a Hugging Face `GPT2LMHeadModel` directory (`config.json` +
    /// `model.safetensors`, f32): the base weights only, with the merged adapter, if any, folded
    /// in, as [`BertModel::save_pretrained`] does.
    ///
    /// [`BertModel::save_pretrained`]: crate::models::bert::BertModel::save_pretrained
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let config = crate::models::export::hf_config(&self.config, "gpt2", "GPT2LMHeadModel");
        crate::models::export::write_pretrained(
            self,
            dir.as_ref(),
            config,
            &[
                (r"^", "transformer."),
                (r"^transformer\.lm_head\.", "lm_head."),
            ],
            Conv1dAdapter(Direction::ToTorch),
        )
    }
}

/// Which way [`Conv1dAdapter`] converts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    FromTorch,
    ToTorch,
}

/// Reads (or writes) transformers' `Conv1D` weights as they are (`[in, out]`, burn's
/// orientation), the untied `lm_head` (a torch `Linear`) transposed, and LayerNorm's
/// `weight`/`bias` as burn's `gamma`/`beta`.
#[derive(Debug, Clone)]
struct Conv1dAdapter(Direction);

impl ModuleAdapter for Conv1dAdapter {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        match (tensor.name.starts_with("lm_head."), self.0) {
            (true, Direction::FromTorch) => PyTorchToBurnAdapter.adapt(tensor, ctx),
            (true, Direction::ToTorch) => BurnToPyTorchAdapter.adapt(tensor, ctx),
            // LayerNorm's gamma/beta become weight/bias; Conv1D weights stay `[in, out]`.
            (false, Direction::ToTorch) if tensor.shape.len() == 1 => {
                BurnToPyTorchAdapter.adapt(tensor, ctx)
            }
            (false, _) => tensor,
        }
    }

    fn get_alternative_param_name(&self, param_name: &str, container_type: &str) -> Option<String> {
        match self.0 {
            Direction::FromTorch => {
                PyTorchToBurnAdapter.get_alternative_param_name(param_name, container_type)
            }
            Direction::ToTorch => {
                BurnToPyTorchAdapter.get_alternative_param_name(param_name, container_type)
            }
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

fn layer_norm(config: &Gpt2Config, device: &Device) -> burn::nn::LayerNorm {
    LayerNormConfig::new(config.n_embd)
        .with_epsilon(config.layer_norm_epsilon)
        .init(device)
}

fn build_block(config: &Gpt2Config, layer: usize, device: &Device) -> Gpt2Block {
    let (h, inner) = (config.n_embd, config.inner_size());
    let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
    let site = |i: usize, o: usize, position| {
        LinearSite::new(linear(i, o), LinearLocation { layer, position })
    };
    let residual = |position| ResidualSite::new(SiteLocation { layer, position });
    let dropout = |p: f64| DropoutConfig::new(p).init();
    Gpt2Block {
        ln_1: layer_norm(config, device),
        attn: Gpt2Attention {
            c_attn: site(h, 3 * h, LinearPosition::QueryKeyValue),
            c_proj: site(h, h, LinearPosition::AttentionOutput),
            attn_dropout: dropout(config.attn_pdrop),
            resid_dropout: dropout(config.resid_pdrop),
            num_heads: config.n_head,
            head_dim: config.head_width(),
            scale: config.attention_scale(layer),
            prefix_tuning: AttentionSite::new(layer),
        },
        ln_2: layer_norm(config, device),
        mlp: Gpt2Mlp {
            c_fc: site(h, inner, LinearPosition::Intermediate),
            c_proj: site(inner, h, LinearPosition::Output),
            dropout: dropout(config.resid_pdrop),
            activation: config.activation_function,
        },
        attention_adapters: residual(SitePosition::Attention),
        output_adapters: residual(SitePosition::Output),
        reft_layer: HiddenStateSite::new(layer),
    }
}
