//! Llama-family causal language models (Hugging Face `LlamaForCausalLM`, `MistralForCausalLM`,
//! `Qwen2ForCausalLM`) with adapter sites, loadable from a Hugging Face model directory.
//!
//! RMSNorm, rotary positions (`rope_scaling` `"linear"` and `"llama3"`), grouped-query
//! attention, Mistral's sliding window, Qwen2's q/k/v biases, tied or separate output
//! embeddings, causal and padding masks, and a [`KvCache`] for incremental decoding.
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use burn_adapters::prelude::*;
//! use burn_adapters::models::llama::{KvCache, LlamaConfig, DecoderInput};
//!
//! let device = Device::flex();
//! let mut model = LlamaConfig::tiny().init(&device)?;
//! model.add_adapter("lora", AdapterConfig::load("lora[r=4]")?)?;
//! model.set_active_adapters("lora")?;
//!
//! let prompt = Tensor::<2, Int>::from_ints([[1, 7, 9, 3]], &device);
//! let mut cache = KvCache::new();
//! let logits = model.try_forward_cached(DecoderInput::ids(prompt), &mut cache)?;
//! assert_eq!(logits.dims(), [1, 4, 61]);
//! let next = Tensor::<2, Int>::from_ints([[5]], &device);
//! let logits = model.try_forward_cached(DecoderInput::ids(next), &mut cache)?;
//! assert_eq!((logits.dims(), cache.len()), ([1, 1, 61], 5));
//! # Ok::<(), burn_adapters::Error>(())
//! ```

mod config;
mod layers;
mod load;
mod rope;

pub use crate::models::decoder::{DecoderInput, KvCache};
pub use config::*;
pub use layers::*;
pub use rope::RopeScaling;

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{Int, Tensor};

use crate::error::Result;
use crate::generation::CausalLm;
use crate::heads::PredictionHead;
use crate::model::{AdapterHost, AdapterRegistry, ModelInfo};
use crate::models::decoder::{
    AttentionBias, Step, check_prompt_fits, heads, intervention_positions, output_logits,
};
use crate::sites::{
    AttentionSite, EmbeddingSite, HiddenStateSite, LinearLocation, LinearPosition, LinearSite,
    NamedModules, PrefixPool, ResidualSite, SharedParameters, SiteLocation, SitePosition,
};
use rope::Rope;

/// A Llama-family decoder with a language-model head and adapter sites after each attention
/// and feed-forward block.
///
/// Parameter paths follow transformers' `LlamaModel` (`embed_tokens`, `layers.{i}.self_attn.q_proj`,
/// `norm`, with `lm_head` beside them); adapters are saved under the causal LM's names
/// (`model.layers.{i}.attention_adapters.adapters.{name}.*`), as AdapterHub saves them.
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// Token embeddings.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<LlamaDecoderLayer>,
    /// The final RMSNorm.
    pub norm: RmsNorm,
    /// The output projection; `None` when it is the token embeddings (`tie_word_embeddings`).
    pub lm_head: Option<Linear>,
    /// Prediction heads (`heads.<name>`), see [`AdapterModel::add_head`](crate::AdapterModel::add_head).
    pub heads: NamedModules<PredictionHead>,
    /// The prefix-tuning modules.
    pub prefix_tuning: PrefixPool,
    /// What adapters share across layers (Compacter's PHM rules).
    pub shared_parameters: SharedParameters,
    /// The invertible adapters and prompts on the token embeddings.
    pub embedding_site: EmbeddingSite,
    #[module(skip)]
    config: LlamaConfig,
    #[module(skip)]
    rope: Rope,
    #[module(skip)]
    registry: AdapterRegistry,
}

impl LlamaModel {
    /// The config the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Next-token logits of every position, with the active adapters.
    ///
    /// # Panics
    ///
    /// On an input [`DecoderInput::check`] refuses, burn may panic or compute garbage;
    /// [`LlamaModel::try_forward`] checks first.
    ///
    /// # Shapes
    ///
    /// - input_ids, attention_mask, position_ids: `[batch, seq]`
    /// - output: `[batch, seq, vocab]` (with a `Parallel` setup of `n` branches, `n·batch` rows)
    pub fn forward(&self, input: DecoderInput) -> Tensor<3> {
        self.logits(self.decode(input, None))
    }

    /// [`LlamaModel::forward`] after checking the input ([`DecoderInput::check`]).
    pub fn try_forward(&self, input: DecoderInput) -> Result<Tensor<3>> {
        self.checked_hidden(input).map(|hidden| self.logits(hidden))
    }

    /// The logits of `input`'s positions after those in `cache`, adding them to the cache.
    /// Equal to running the whole sequence at once (up to float rounding).
    ///
    /// # Panics
    ///
    /// As [`LlamaModel::forward`]; [`LlamaModel::try_forward_cached`] checks first.
    ///
    /// # Shapes
    ///
    /// - input_ids: `[batch, seq]` (the cached batch's rows), output: `[batch, seq, vocab]`
    pub fn forward_cached(&self, input: DecoderInput, cache: &mut KvCache) -> Tensor<3> {
        self.logits(self.decode(input, Some(cache)))
    }

    /// [`LlamaModel::forward_cached`] after checking the input against the model and the
    /// cache; a refused input leaves the cache as it was.
    pub fn try_forward_cached(
        &self,
        input: DecoderInput,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let channels = self.registry.parallel_channels();
        let config = &self.config;
        let (vocab, context) = (config.vocab_size, config.max_position_embeddings);
        input.check(vocab, context, cache.len(), cache.batch / channels.max(1))?;
        let seq = input.input_ids.dims()[1];
        check_prompt_fits(&self.embedding_site, Some(cache), seq, context)?;
        Ok(self.forward_cached(input, cache))
    }

    /// The hidden states after the final norm, without the language-model head.
    ///
    /// # Shapes
    ///
    /// - input_ids: `[batch, seq]`, output: `[batch, seq, hidden]`
    pub fn last_hidden_state(&self, input: DecoderInput) -> Tensor<3> {
        self.decode(input, None)
    }

    /// Runs the decoder over `input`'s positions after the cached ones.
    fn decode(&self, input: DecoderInput, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let channels = self.registry.parallel_channels();
        let layers = self.layers.len();
        let step = Step::new(
            input,
            channels,
            cache.as_deref_mut(),
            layers,
            &self.embedding_site,
        );
        let embedded = self.embed_tokens.forward(step.input_ids);
        let embedded = self.embedding_site.transform(embedded);
        let mut x = match &step.prompt {
            Some(prompt) => self.embedding_site.forward(embedded, prompt),
            None => embedded,
        };
        let [batch, seq, _] = x.dims();
        let sites = self.layers.iter().map(|layer| &layer.reft_layer);
        let positions = intervention_positions(sites, &step.key_mask, step.past, &x);
        let rope = self.rope.tables(step.positions, x.dtype());
        let windows = self.layers.iter().map(|layer| layer.self_attn.window);
        let bias = AttentionBias::new(step.key_mask, step.past, seq, windows, x.dtype(), false);
        let prefixes = self.prefix_tuning.states(batch);
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|cache| &mut cache.layers[i]);
            x = layer.forward(
                x,
                &rope,
                &bias,
                layer_cache,
                &prefixes,
                &self.shared_parameters,
            );
            if let Some(positions) = &positions {
                x = layer.reft_layer.forward(x, positions);
            }
        }
        let x = self.norm.forward(x);
        match &step.prompt {
            Some(prompt) => prompt.strip(x),
            None => x,
        }
    }

    /// Logits of classification head `head` for `input`, from each row's last real token (or
    /// mean-pooled, as the head says). The input is checked as [`LlamaModel::try_forward`] does.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq]`, output: `[batch, num_labels]`
    pub fn classify(&self, head: &str, input: DecoderInput) -> Result<Tensor<2>> {
        let head = heads::head(&self.heads, head)?;
        let channels = self.registry.parallel_channels();
        heads::classify_input(head, input, channels, |input| self.checked_hidden(input))
    }

    /// Per-token logits of tagging or causal-LM head `head` for `input`, checked as
    /// [`LlamaModel::try_forward`] does.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq]`, output: `[batch, seq, num_labels or vocab_size]`
    pub fn tag(&self, head: &str, input: DecoderInput) -> Result<Tensor<3>> {
        let head = heads::head(&self.heads, head)?;
        let hidden = self.checked_hidden(input)?;
        Ok(head.forward_tokens_inverting(hidden, self.embedding_site.invertible()))
    }

    /// [`LlamaModel::last_hidden_state`] after checking the input.
    fn checked_hidden(&self, input: DecoderInput) -> Result<Tensor<3>> {
        let config = &self.config;
        input.check(config.vocab_size, config.max_position_embeddings, 0, 0)?;
        let seq = input.input_ids.dims()[1];
        check_prompt_fits(
            &self.embedding_site,
            None,
            seq,
            config.max_position_embeddings,
        )?;
        Ok(self.decode(input, None))
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        // AdapterHub inverts the invertible adapter before the output embeddings.
        let hidden = self.embedding_site.invert(hidden);
        output_logits(hidden, self.lm_head.as_ref(), &self.embed_tokens)
    }
}

impl CausalLm for LlamaModel {
    type Cache = KvCache;

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn context_length(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn step(
        &self,
        ids: Tensor<2, Int>,
        mask: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        self.try_forward_cached(DecoderInput::step(ids, mask, positions), cache)
    }
}

impl AdapterHost for LlamaModel {
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn residual_sites(&self) -> impl Iterator<Item = &ResidualSite> {
        self.layers
            .iter()
            .flat_map(|layer| [&layer.attention_adapters, &layer.output_adapters])
    }

    fn residual_sites_mut(&mut self) -> impl Iterator<Item = &mut ResidualSite> {
        self.layers
            .iter_mut()
            .flat_map(|layer| [&mut layer.attention_adapters, &mut layer.output_adapters])
    }

    fn linear_sites(&self) -> impl Iterator<Item = &LinearSite> {
        self.layers.iter().flat_map(|layer| {
            let attention = &layer.self_attn;
            [
                &attention.q_proj,
                &attention.k_proj,
                &attention.v_proj,
                &attention.o_proj,
                &layer.mlp.gate_proj,
                &layer.mlp.down_proj,
                &layer.mlp.up_proj,
            ]
        })
    }

    fn linear_sites_mut(&mut self) -> impl Iterator<Item = &mut LinearSite> {
        self.layers.iter_mut().flat_map(|layer| {
            let attention = &mut layer.self_attn;
            [
                &mut attention.q_proj,
                &mut attention.k_proj,
                &mut attention.v_proj,
                &mut attention.o_proj,
                &mut layer.mlp.gate_proj,
                &mut layer.mlp.down_proj,
                &mut layer.mlp.up_proj,
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
        self.layers.iter().map(|layer| &layer.reft_layer)
    }

    fn hidden_sites_mut(&mut self) -> impl Iterator<Item = &mut HiddenStateSite> {
        self.layers.iter_mut().map(|layer| &mut layer.reft_layer)
    }

    fn hidden_site_path(&self, layer: usize) -> String {
        format!("model.layers.{layer}.reft_layer")
    }

    fn embedding_site_mut(&mut self) -> Option<&mut EmbeddingSite> {
        Some(&mut self.embedding_site)
    }

    fn word_embeddings(&self) -> Option<Tensor<2>> {
        Some(self.embed_tokens.weight.val())
    }

    fn embedding_site_path(&self) -> String {
        "model.prompt_tuning".into()
    }

    fn shared_parameters_path(&self) -> String {
        "model.shared_parameters".into()
    }

    fn invertible_adapters_path(&self) -> String {
        "model.invertible_adapters".into()
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
        self.layers
            .iter()
            .map(|layer| &layer.self_attn.prefix_tuning)
    }

    fn attention_sites_mut(&mut self) -> impl Iterator<Item = &mut AttentionSite> {
        self.layers
            .iter_mut()
            .map(|layer| &mut layer.self_attn.prefix_tuning)
    }

    fn attention_site_path(&self, layer: usize) -> String {
        format!("model.layers.{layer}.self_attn.prefix_tuning")
    }

    fn prefix_pool_path(&self) -> String {
        "model.prefix_tuning".into()
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
        0.0
    }

    fn attention_dropout(&self) -> f64 {
        self.config.attention_dropout
    }

    fn model_info(&self) -> ModelInfo {
        ModelInfo {
            model_type: Some(self.config.model_type.model_type().into()),
            model_class: Some(self.config.model_type.model_class().into()),
            model_name: self.config.name_or_path.clone(),
        }
    }

    fn site_path(&self, location: SiteLocation) -> String {
        let block = match location.position {
            SitePosition::Attention => "attention_adapters",
            SitePosition::Output => "output_adapters",
        };
        format!("model.layers.{}.{block}.adapters", location.layer)
    }

    fn ffn_down_position(&self) -> LinearPosition {
        LinearPosition::Intermediate
    }

    fn linear_site_path(&self, location: LinearLocation) -> String {
        let layer = match location.position {
            LinearPosition::Query => "self_attn.q_proj",
            LinearPosition::Key => "self_attn.k_proj",
            LinearPosition::Value => "self_attn.v_proj",
            LinearPosition::Intermediate => "mlp.down_proj",
            LinearPosition::Output => "mlp.up_proj",
            LinearPosition::AttentionOutput => "self_attn.o_proj",
            LinearPosition::Gate => "mlp.gate_proj",
            // Llama-family layers have separate projections.
            LinearPosition::QueryKeyValue => "self_attn.qkv_proj",
        };
        format!("model.layers.{}.{layer}.loras", location.layer)
    }
}
