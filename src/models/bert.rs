//! A BERT encoder (Hugging Face `BertModel`) with adapter sites, loadable from a Hugging Face
//! model directory.

use std::path::Path;

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, Int, Tensor, activation::softmax};
use serde::{Deserialize, Serialize};

use crate::config::{Activation, check_probability};
use crate::error::{Error, Result};
use crate::heads::{HeadConfig, PredictionHead};
use crate::methods::{dropout, dropout_active};
use crate::model::{AdapterHost, AdapterRegistry, ModelInfo};
use crate::sites::{
    LinearLocation, LinearPosition, LinearSite, NamedModules, ResidualSite, SiteLocation,
    SitePosition,
};

/// The fields of a Hugging Face `config.json` that define a BERT encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Feed-forward non-linearity (`"gelu"` is the exact erf form).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout on hidden states.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned positions.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Checkpoint name, recorded in saved adapter configs.
    #[serde(
        default,
        rename = "_name_or_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub name_or_path: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_positions() -> usize {
    512
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// A config with the given shape and BERT's defaults for everything else.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
        intermediate_size: usize,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size,
            hidden_act: default_act(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            name_or_path: None,
        }
    }

    /// A tiny config for tests and examples (hidden 32, 2 layers, 4 heads).
    pub fn tiny() -> Self {
        Self::new(99, 32, 2, 4, 64)
    }

    /// bert-base-uncased's shape (hidden 768, 12 layers, 12 heads, FFN 3072).
    pub fn bert_base() -> Self {
        Self::new(30522, 768, 12, 12, 3072)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: Self =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
                .map_err(|e| Error::Json {
                    path: path.into(),
                    field: e.path().to_string(),
                    reason: e.into_inner().to_string(),
                })?;
        config.validate().map_err(|e| match e {
            Error::InvalidConfig {
                field,
                value,
                reason,
            } => Error::Json {
                path: path.into(),
                field,
                reason: format!("{value}: {reason}"),
            },
            other => other,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        Activation::from_name(&self.hidden_act).map_err(|_| {
            Error::invalid("hidden_act", &self.hidden_act, "unsupported activation")
        })?;
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::invalid(
                "num_attention_heads",
                self.num_attention_heads,
                format!("must divide hidden_size {}", self.hidden_size),
            ));
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, size)| *size == 0) {
            return Err(Error::invalid(*field, 0, "must be at least 1"));
        }
        check_probability("hidden_dropout_prob", self.hidden_dropout_prob)?;
        check_probability(
            "attention_probs_dropout_prob",
            self.attention_probs_dropout_prob,
        )?;
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(Error::invalid(
                "layer_norm_eps",
                self.layer_norm_eps,
                "must be positive and finite",
            ));
        }
        Ok(())
    }
}

/// Token ids and masks for one batch.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding, `[batch, seq]` (all ones if absent).
    pub attention_mask: Option<Tensor<2, Int>>,
    /// Segment ids, `[batch, seq]` (zeros if absent).
    pub token_type_ids: Option<Tensor<2, Int>>,
}

impl BertInput {
    /// Input ids with a padding mask and no token types.
    pub fn new(input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask: Some(attention_mask),
            token_type_ids: None,
        }
    }
}

/// Outputs of [`BertModel::forward`].
#[derive(Debug, Clone)]
pub struct BertModelOutput {
    /// Hidden states of the last layer, `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// `tanh(dense(h[CLS]))` if the model has a pooler, `[batch, hidden]`.
    pub pooler_output: Option<Tensor<2>>,
}

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
    fn forward(
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
}

impl BertSelfAttention {
    /// # Shapes
    ///
    /// - x: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    fn forward(&self, x: Tensor<3>, padding: Option<&Padding>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let split = |t: Tensor<3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let context = if dropout_active(&self.dropout, &x.device()) {
            // Spelled out, so that dropout can act on the probabilities.
            let mut scores = q
                .matmul(k.swap_dims(2, 3))
                .div_scalar((head_dim as f64).sqrt());
            if let Some(padding) = padding {
                let mask = padding.mask.clone().expand([batch, heads, seq, seq]);
                scores = scores.mask_fill(mask, padding.lowest);
            }
            dropout(&self.dropout, softmax(scores, 3)).matmul(v)
        } else {
            // The backend's fused kernel where it has one (libtorch's
            // scaled_dot_product_attention, CubeCL's flash attention without a bias).
            let bias = padding.map(|padding| padding.bias.clone());
            attention(q, k, v, None, bias, AttentionModuleOptions::default())
        };
        context.swap_dims(1, 2).reshape([batch, seq, hidden])
    }
}

/// The padding of a batch as the attention layers use it, built once per forward.
#[derive(Debug, Clone)]
struct Padding {
    /// `true` at padded keys, `[batch, 1, 1, seq]`.
    mask: Tensor<4, Bool>,
    /// `0` at tokens and `lowest` at padded keys, `[batch, 1, 1, seq]`: what transformers adds
    /// to the scores.
    bias: Tensor<4>,
    /// The score given to padded keys: the dtype's lowest finite value, as in transformers
    /// (after the softmax the same as -inf, except in a row with no token at all, which
    /// becomes a uniform average as there).
    lowest: f64,
}

impl Padding {
    /// The padding of `attention_mask` (`[batch, seq]`, 0 = padding) for scores of `dtype`, or
    /// `None` when nothing is padded (as transformers drops an all-ones mask).
    fn new(attention_mask: Tensor<2, Int>, dtype: DType) -> Option<Self> {
        let [batch, seq] = attention_mask.dims();
        let padded = attention_mask.equal_elem(0);
        if !padded.clone().any().into_scalar::<bool>() {
            return None;
        }
        let lowest = match dtype {
            DType::F16 => half::f16::MIN.to_f64(),
            DType::BF16 => half::bf16::MIN.to_f64(),
            _ => f32::MIN as f64,
        };
        let mask = padded.reshape([batch, 1, 1, seq]);
        let bias = Tensor::<4>::zeros([batch, 1, 1, seq], &mask.device())
            .cast(dtype)
            .mask_fill(mask.clone(), lowest);
        Some(Self { mask, bias, lowest })
    }
}

/// Output projection of the attention block, with its residual site.
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    /// Output projection.
    pub dense: Linear,
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
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, padding: Option<&Padding>) -> Tensor<3> {
        let attn = &self.attention.output;
        let h = dropout(
            &attn.dropout,
            attn.dense
                .forward(self.attention.self_attention.forward(x.clone(), padding)),
        );
        let x = attn.adapters.forward(h, x, Some(&attn.layer_norm));
        let inner = self
            .intermediate
            .activation
            .forward(self.intermediate.dense.forward(x.clone()));
        let out = &self.output;
        let h = dropout(&out.dropout, out.dense.forward(inner));
        out.adapters.forward(h, x, Some(&out.layer_norm))
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
    #[module(skip)]
    config: BertConfig,
    #[module(skip)]
    registry: AdapterRegistry,
}

impl BertModel {
    /// A randomly initialised model (with a pooler).
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        let dropout = |p: f64| DropoutConfig::new(p).init();
        let activation = Activation::from_name(&config.hidden_act).unwrap_or(Activation::Gelu);
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
                        },
                        output: BertSelfOutput {
                            dense: linear(h, h),
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
        let mut model = Self::new(&config, device);
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

    /// Logits of head `head` for `input` (`[batch, num_labels]` for sequence heads).
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
        Ok(head.forward_sequence(self.forward(input).last_hidden_state, mask))
    }

    /// Per-token logits of tagging head `head` for `input`.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq]`, output: `[batch, seq, num_labels]`
    pub fn tag(&self, head: &str, input: BertInput) -> Result<Tensor<3>> {
        let head = self
            .heads
            .get(head)
            .ok_or_else(|| Error::UnknownHead(head.to_string()))?;
        Ok(head.forward_tokens(self.forward(input).last_hidden_state))
    }

    /// The config the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Runs the encoder with the active adapters.
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
        let mut x = self
            .embeddings
            .forward(input.input_ids, input.token_type_ids);
        let padding = input
            .attention_mask
            .and_then(|mask| Padding::new(mask, x.dtype()));
        for layer in &self.encoder.layer {
            x = layer.forward(x, padding.as_ref());
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

impl AdapterHost for BertModel {
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    fn visit_sites(&self, f: &mut dyn FnMut(&ResidualSite)) {
        for layer in &self.encoder.layer {
            f(&layer.attention.output.adapters);
            f(&layer.output.adapters);
        }
    }

    fn visit_sites_mut(&mut self, f: &mut dyn FnMut(&mut ResidualSite)) {
        for layer in &mut self.encoder.layer {
            f(&mut layer.attention.output.adapters);
            f(&mut layer.output.adapters);
        }
    }

    fn visit_linear_sites(&self, f: &mut dyn FnMut(&LinearSite)) {
        for layer in &self.encoder.layer {
            let attention = &layer.attention.self_attention;
            f(&attention.query);
            f(&attention.key);
            f(&attention.value);
            f(&layer.intermediate.dense);
            f(&layer.output.dense);
        }
    }

    fn visit_linear_sites_mut(&mut self, f: &mut dyn FnMut(&mut LinearSite)) {
        for layer in &mut self.encoder.layer {
            let attention = &mut layer.attention.self_attention;
            f(&mut attention.query);
            f(&mut attention.key);
            f(&mut attention.value);
            f(&mut layer.intermediate.dense);
            f(&mut layer.output.dense);
        }
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
            model_type: "bert".into(),
            model_class: "BertModel".into(),
            model_name: self.config.name_or_path.clone(),
        }
    }
}
