//! A BERT encoder (Hugging Face `BertModel`) with adapter sites, loadable from a Hugging Face
//! model directory.

mod config;
mod input;
mod layers;

pub use config::*;
pub use input::*;
pub use layers::*;

use std::path::Path;

use burn::module::Module;
use burn::nn::{DropoutConfig, EmbeddingConfig, LayerNormConfig, LinearConfig};
use burn::store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Device, Int, Tensor};

use crate::error::{Error, Result};
use crate::heads::{HeadConfig, PredictionHead};
use crate::model::{AdapterHost, AdapterRegistry, ModelInfo};
use crate::sites::{
    AttentionSite, EmbeddingSite, HiddenStateSite, InterventionPositions, LinearLocation,
    LinearPosition, LinearSite, NamedModules, PrefixPool, ResidualSite, SharedParameters,
    SiteLocation, SitePosition,
};
use layers::Padding;

/// A BERT encoder with adapter sites after each attention and FFN block.
///
/// Parameter paths follow transformers' `BertModel` (with `LayerNorm` spelled `layer_norm` and
/// `attention.self` spelled `attention.self_attention`), so adapter parameters sit at
/// AdapterHub's paths: `encoder.layer.{i}.output.adapters.{name}.*`.
#[derive(Module, Debug)]
pub struct BertModel {
    /// Embeddings.
    pub embeddings: BertEmbeddings,
    /// Transformer layers.
    pub encoder: BertEncoder,
    /// Pooler (absent in checkpoints saved without one).
    pub pooler: Option<BertPooler>,
    /// Prediction heads (`heads.<name>`), see [`AdapterModel::add_head`](crate::AdapterModel::add_head).
    pub heads: NamedModules<PredictionHead>,
    /// The prefix-tuning modules.
    pub prefix_tuning: PrefixPool,
    /// What adapters share across layers (Compacter's PHM rules).
    pub shared_parameters: SharedParameters,
    /// The prompts and invertible adapters on the embeddings' output.
    pub embedding_site: EmbeddingSite,
    #[module(skip)]
    config: BertConfig,
    #[module(skip)]
    registry: AdapterRegistry,
}

impl BertModel {
    /// A randomly initialised model (with a pooler) for a validated config.
    pub(crate) fn build(config: &BertConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        let dropout = |p: f64| DropoutConfig::new(p).init();
        let activation = config.hidden_act;
        let layer = (0..config.num_hidden_layers)
            .map(|i| {
                let site = |i_dim: usize, o_dim: usize, position| {
                    LinearSite::new(linear(i_dim, o_dim), LinearLocation { layer: i, position })
                };
                BertLayer {
                    attention: BertAttention {
                        self_attention: BertSelfAttention {
                            query: site(h, h, LinearPosition::Query),
                            key: site(h, h, LinearPosition::Key),
                            value: site(h, h, LinearPosition::Value),
                            dropout: dropout(config.attention_probs_dropout_prob),
                            num_heads: config.num_attention_heads,
                            prefix_tuning: AttentionSite::new(i),
                        },
                        output: BertSelfOutput {
                            dense: site(h, h, LinearPosition::AttentionOutput),
                            layer_norm: norm(),
                            dropout: dropout(config.hidden_dropout_prob),
                            adapters: ResidualSite::new(SiteLocation {
                                layer: i,
                                position: SitePosition::Attention,
                            }),
                        },
                    },
                    intermediate: BertIntermediate {
                        dense: site(h, config.intermediate_size, LinearPosition::Intermediate),
                        activation,
                    },
                    output: BertOutput {
                        dense: site(config.intermediate_size, h, LinearPosition::Output),
                        layer_norm: norm(),
                        dropout: dropout(config.hidden_dropout_prob),
                        adapters: ResidualSite::new(SiteLocation {
                            layer: i,
                            position: SitePosition::Output,
                        }),
                    },
                    reft_layer: HiddenStateSite::new(i),
                }
            })
            .collect();
        Self {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(config.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(config.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(config.type_vocab_size, h).init(device),
                layer_norm: norm(),
                dropout: dropout(config.hidden_dropout_prob),
            },
            encoder: BertEncoder { layer },
            pooler: Some(BertPooler {
                dense: linear(h, h),
            }),
            heads: NamedModules::default(),
            prefix_tuning: PrefixPool::new(
                config.num_attention_heads,
                h / config.num_attention_heads,
            ),
            shared_parameters: SharedParameters::new(),
            embedding_site: EmbeddingSite::new(),
            config: config.clone(),
            registry: AdapterRegistry::default(),
        }
    }

    /// Loads a Hugging Face BERT directory (`config.json` + `model.safetensors`).
    ///
    /// Accepts checkpoints with or without a `bert.` prefix (as saved from task models) and with
    /// or without a pooler; `position_ids` buffers and task heads in the file are ignored.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(Error::io(
                &weights,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let mut model = config.init(device)?;
        let remap = KeyRemapper::new()
            .add_pattern(r"^bert\.", "")
            .and_then(|r| r.add_pattern(r"\.LayerNorm\.", ".layer_norm."))
            .and_then(|r| r.add_pattern(r"\.attention\.self\.", ".attention.self_attention."))
            .expect("constant patterns are valid regexes");
        let mut store = SafetensorsStore::from_file(&weights)
            .remap(remap)
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true);
        let result = model
            .load_from(&mut store)
            .map_err(|e| Error::format(&weights, e.to_string()))?;
        if let Some(error) = result.errors.first() {
            return Err(Error::format(&weights, format!("{error:?}")));
        }
        let missing: Vec<&str> = result
            .missing
            .iter()
            .map(|(path, _)| path.as_str())
            .collect();
        if missing.iter().all(|p| p.starts_with("pooler.")) && !missing.is_empty() {
            model.pooler = None;
        } else if let Some(path) = missing.first() {
            return Err(Error::MissingTensor {
                path: weights,
                key: path.to_string(),
            });
        }
        Ok(model)
    }

    /// Writes the model as a Hugging Face BERT directory (`config.json` + `model.safetensors`,
    /// transformers' `BertModel` names and layouts): the base weights only, with the merged
    /// adapter, if any, folded in. Adapters, heads and fusion layers are left out, so with a
    /// LoRA-family adapter merged ([`merge_adapter`](crate::AdapterModel::merge_adapter))
    /// transformers runs the adapted model without this library. Atomic.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let config = crate::models::export::hf_config(&self.config, "bert", "BertModel");
        crate::models::export::write_pretrained(
            self,
            dir.as_ref(),
            config,
            &[
                (r"\.layer_norm\.", ".LayerNorm."),
                (r"\.attention\.self_attention\.", ".attention.self."),
            ],
            burn::store::BurnToPyTorchAdapter,
        )
    }

    /// Logits of head `head` for `input` (`[batch, num_labels]` for sequence heads). The input
    /// is checked as [`BertModel::try_forward`] does.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq]`, output: `[batch, num_labels]`
    pub fn classify(&self, head: &str, input: BertInput) -> Result<Tensor<2>> {
        let head = self
            .heads
            .get(head)
            .ok_or_else(|| Error::UnknownHead(head.to_string()))?;
        if !matches!(head.config, HeadConfig::Classification { .. }) {
            return Err(Error::InvalidSetup(
                "`classify` needs a classification head; use `tag`".into(),
            ));
        }
        let mask = input.attention_mask.clone();
        let hidden = self.try_forward(input)?.last_hidden_state;
        Ok(head.forward_sequence(hidden, mask))
    }

    /// Per-token logits of tagging head `head` for `input`, checked as
    /// [`BertModel::try_forward`] does.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq]`, output: `[batch, seq, num_labels]`
    pub fn tag(&self, head: &str, input: BertInput) -> Result<Tensor<3>> {
        let head = self
            .heads
            .get(head)
            .ok_or_else(|| Error::UnknownHead(head.to_string()))?;
        let hidden = self.try_forward(input)?.last_hidden_state;
        Ok(head.forward_tokens_inverting(hidden, self.embedding_site.invertible()))
    }

    /// [`BertModel::forward`] after checking `input` against the model ([`BertInput::check`]):
    /// an input it cannot run is an [`Error::InvalidInput`] instead of a panic. The check reads
    /// the smallest and largest ids back from the device.
    pub fn try_forward(&self, input: BertInput) -> Result<BertModelOutput> {
        input.check(&self.config)?;
        Ok(self.forward(input))
    }

    /// The config the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Runs the encoder with the active adapters.
    ///
    /// # Panics
    ///
    /// On an input [`BertInput::check`] refuses (a mask or token types of another shape, a
    /// sequence longer than `max_position_embeddings`, ids outside the vocabulary), burn may panic
    /// (on flex, out-of-range ids index out of bounds) or compute garbage.
    /// [`BertModel::try_forward`] checks first.
    ///
    /// # Shapes
    ///
    /// - input_ids, attention_mask, token_type_ids: `[batch, seq]`
    /// - last_hidden_state: `[batch, seq, hidden]`, pooler_output: `[batch, hidden]` (with a
    ///   `Parallel` setup of `n` branches, `n·batch` rows; see
    ///   [`AdapterModel::split_parallel`](crate::AdapterModel::split_parallel))
    pub fn forward(&self, input: BertInput) -> BertModelOutput {
        // A Parallel setup runs the batch once per branch: repeat it (branch i is rows
        // i·batch..(i+1)·batch of every output).
        let channels = self.registry.parallel_channels();
        let input = if channels > 1 {
            BertInput {
                input_ids: input.input_ids.repeat_dim(0, channels),
                attention_mask: input.attention_mask.map(|m| m.repeat_dim(0, channels)),
                token_type_ids: input.token_type_ids.map(|t| t.repeat_dim(0, channels)),
            }
        } else {
            input
        };
        let [batch, _] = input.input_ids.dims();
        let embedded = self
            .embeddings
            .forward(input.input_ids, input.token_type_ids);
        // As in AdapterHub, the invertible adapter transforms the embeddings' output (after their
        // LayerNorm), then a prompt joins it.
        let embedded = self.embedding_site.transform(embedded);
        let prompt = self.embedding_site.prompt(batch, None);
        let mut x = match &prompt {
            Some(prompt) => self.embedding_site.forward(embedded, prompt),
            None => embedded,
        };
        let mask = input.attention_mask.map(|mask| match &prompt {
            Some(prompt) => prompt.extend_mask(mask),
            None => mask,
        });
        let positions = self.intervention_positions(mask.as_ref(), &x);
        let padding = mask.and_then(|mask| Padding::new(mask, x.dtype()));
        let prefixes = self.prefix_tuning.states(batch);
        for layer in &self.encoder.layer {
            x = layer.forward(x, padding.as_ref(), &prefixes, &self.shared_parameters);
            if let Some(positions) = &positions {
                x = layer.reft_layer.forward(x, positions);
            }
        }
        if let Some(prompt) = prompt {
            x = prompt.strip(x);
        }
        let pooler_output = self.pooler.as_ref().map(|pooler| {
            let cls = x
                .clone()
                .narrow(1, 0, 1)
                .reshape([batch, self.config.hidden_size]);
            pooler.dense.forward(cls).tanh()
        });
        BertModelOutput {
            last_hidden_state: x,
            pooler_output,
        }
    }
}

impl BertModel {
    /// The positions ReFT counts from, when an intervention is active.
    fn intervention_positions(
        &self,
        mask: Option<&Tensor<2, Int>>,
        x: &Tensor<3>,
    ) -> Option<InterventionPositions> {
        let active = self.encoder.layer.iter().any(|l| l.reft_layer.is_active());
        let [batch, seq, _] = x.dims();
        active.then(|| InterventionPositions::new(mask, batch, 0, seq, &x.device()))
    }
}

impl AdapterHost for BertModel {
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    fn residual_sites(&self) -> impl Iterator<Item = &ResidualSite> {
        self.encoder
            .layer
            .iter()
            .flat_map(|layer| [&layer.attention.output.adapters, &layer.output.adapters])
    }

    fn residual_sites_mut(&mut self) -> impl Iterator<Item = &mut ResidualSite> {
        self.encoder.layer.iter_mut().flat_map(|layer| {
            [
                &mut layer.attention.output.adapters,
                &mut layer.output.adapters,
            ]
        })
    }

    fn linear_sites(&self) -> impl Iterator<Item = &LinearSite> {
        self.encoder.layer.iter().flat_map(|layer| {
            let attention = &layer.attention.self_attention;
            [
                &attention.query,
                &attention.key,
                &attention.value,
                &layer.attention.output.dense,
                &layer.intermediate.dense,
                &layer.output.dense,
            ]
        })
    }

    fn linear_sites_mut(&mut self) -> impl Iterator<Item = &mut LinearSite> {
        self.encoder.layer.iter_mut().flat_map(|layer| {
            let attention = &mut layer.attention.self_attention;
            [
                &mut attention.query,
                &mut attention.key,
                &mut attention.value,
                &mut layer.attention.output.dense,
                &mut layer.intermediate.dense,
                &mut layer.output.dense,
            ]
        })
    }

    fn prefix_pool(&self) -> Option<&PrefixPool> {
        Some(&self.prefix_tuning)
    }

    fn embedding_site(&self) -> Option<&EmbeddingSite> {
        Some(&self.embedding_site)
    }

    fn hidden_sites(&self) -> impl Iterator<Item = &HiddenStateSite> {
        self.encoder.layer.iter().map(|layer| &layer.reft_layer)
    }

    fn hidden_sites_mut(&mut self) -> impl Iterator<Item = &mut HiddenStateSite> {
        self.encoder
            .layer
            .iter_mut()
            .map(|layer| &mut layer.reft_layer)
    }

    fn embedding_site_mut(&mut self) -> Option<&mut EmbeddingSite> {
        Some(&mut self.embedding_site)
    }

    fn word_embeddings(&self) -> Option<Tensor<2>> {
        Some(self.embeddings.word_embeddings.weight.val())
    }

    fn shared_parameters(&self) -> Option<&SharedParameters> {
        Some(&self.shared_parameters)
    }

    fn shared_parameters_mut(&mut self) -> Option<&mut SharedParameters> {
        Some(&mut self.shared_parameters)
    }

    fn prefix_pool_mut(&mut self) -> Option<&mut PrefixPool> {
        Some(&mut self.prefix_tuning)
    }

    fn attention_sites(&self) -> impl Iterator<Item = &AttentionSite> {
        let layers = self.encoder.layer.iter();
        layers.map(|layer| &layer.attention.self_attention.prefix_tuning)
    }

    fn attention_sites_mut(&mut self) -> impl Iterator<Item = &mut AttentionSite> {
        let layers = self.encoder.layer.iter_mut();
        layers.map(|layer| &mut layer.attention.self_attention.prefix_tuning)
    }

    fn registry(&self) -> &AdapterRegistry {
        &self.registry
    }

    fn registry_mut(&mut self) -> &mut AdapterRegistry {
        &mut self.registry
    }

    fn heads(&self) -> Option<&NamedModules<PredictionHead>> {
        Some(&self.heads)
    }

    fn heads_mut(&mut self) -> Option<&mut NamedModules<PredictionHead>> {
        Some(&mut self.heads)
    }

    fn head_dropout(&self) -> f64 {
        self.config.hidden_dropout_prob
    }

    fn attention_dropout(&self) -> f64 {
        self.config.attention_probs_dropout_prob
    }

    fn model_info(&self) -> ModelInfo {
        ModelInfo {
            model_type: Some("bert".into()),
            model_class: Some("BertModel".into()),
            model_name: self.config.name_or_path.clone(),
        }
    }
}
