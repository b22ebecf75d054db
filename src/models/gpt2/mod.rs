//! GPT-2 causal language models (Hugging Face `GPT2LMHeadModel`) with adapter sites, loadable
//! from a Hugging Face model directory.
//!
//! Learned positions, pre-norm blocks, the fused query/key/value projection `c_attn` (where
//! LoRA updates the `attn_matrices` blocks, as AdapterHub's `LoRAMergedLinear` does; a PEFT
//! LoRA on `c_attn` updates all of it), tied output embeddings and a [`KvCache`].
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use burn_adapters::prelude::*;
//! use burn_adapters::models::gpt2::{DecoderInput, Gpt2Config, KvCache};
//!
//! let device = Device::flex();
//! let mut model = Gpt2Config::tiny().init(&device)?;
//! model.add_adapter("lora", AdapterConfig::load("lora[r=4]")?)?;
//! model.set_active_adapters("lora")?;
//!
//! let prompt = Tensor::<2, Int>::from_ints([[1, 7, 9, 3]], &device);
//! let mut cache = KvCache::new();
//! let logits = model.try_forward_cached(DecoderInput::ids(prompt), &mut cache)?;
//! assert_eq!(logits.dims(), [1, 4, 61]);
//! # Ok::<(), burn_adapters::Error>(())
//! ```

mod config;
mod layers;
mod load;

pub use crate::models::decoder::{DecoderInput, KvCache};
pub use config::Gpt2Config;
pub use layers::*;

use burn::module::Module;
use burn::nn::{Dropout, Embedding, LayerNorm, Linear};
use burn::tensor::{Int, Tensor};

use crate::error::Result;
use crate::generation::CausalLm;
use crate::heads::PredictionHead;
use crate::methods::dropout;
use crate::model::{AdapterHost, AdapterRegistry, ModelInfo};
use crate::models::decoder::{
    AttentionBias, Step, check_prompt_fits, heads, intervention_positions, output_logits,
};
use crate::sites::{
    AttentionSite, EmbeddingSite, HiddenStateSite, LinearLocation, LinearPosition, LinearSite,
    NamedModules, PrefixPool, ResidualSite, SharedParameters, SiteLocation, SitePosition,
};

/// A GPT-2 decoder with a language-model head and adapter sites after each attention and
/// feed-forward block.
///
/// Parameter paths follow transformers' `GPT2Model` (`wte`, `wpe`, `h.{i}.attn.c_attn`,
/// `ln_f`); adapters are saved under `GPT2LMHeadModel`'s names
/// (`transformer.h.{i}.attention_adapters.adapters.{name}.*`), as AdapterHub saves them.
#[derive(Module, Debug)]
pub struct Gpt2Model {
    /// Token embeddings.
    pub wte: Embedding,
    /// Learned position embeddings.
    pub wpe: Embedding,
    /// Dropout on the embeddings.
    pub drop: Dropout,
    /// Decoder blocks.
    pub h: Vec<Gpt2Block>,
    /// The final LayerNorm.
    pub ln_f: LayerNorm,
    /// The output projection; `None` when it is the token embeddings (`tie_word_embeddings`).
    pub lm_head: Option<Linear>,
    /// Prediction heads (`heads.<name>`), see [`AdapterModel::add_head`](crate::AdapterModel::add_head).
    pub heads: NamedModules<PredictionHead>,
    /// The prefix-tuning modules.
    pub prefix_tuning: PrefixPool,
    /// What adapters share across layers (Compacter's PHM rules).
    pub shared_parameters: SharedParameters,
    /// The prompts (joined to the token embeddings, before the positions') and invertible
    /// adapters (on the embeddings' output, after their dropout).
    pub embedding_site: EmbeddingSite,
    #[module(skip)]
    config: Gpt2Config,
    #[module(skip)]
    registry: AdapterRegistry,
}

impl Gpt2Model {
    /// The config the model was built from.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Next-token logits of every position, with the active adapters.
    ///
    /// # Panics
    ///
    /// On an input [`DecoderInput::check`] refuses, burn may panic or compute garbage;
    /// [`Gpt2Model::try_forward`] checks first.
    ///
    /// # Shapes
    ///
    /// - input_ids, attention_mask, position_ids: `[batch, seq]`
    /// - output: `[batch, seq, vocab]` (with a `Parallel` setup of `n` branches, `n·batch` rows)
    pub fn forward(&self, input: DecoderInput) -> Tensor<3> {
        self.logits(self.decode(input, None))
    }

    /// [`Gpt2Model::forward`] after checking the input ([`DecoderInput::check`]).
    pub fn try_forward(&self, input: DecoderInput) -> Result<Tensor<3>> {
        self.checked_hidden(input).map(|hidden| self.logits(hidden))
    }

    /// The logits of `input`'s positions after those in `cache`, adding them to the cache.
    /// Equal to running the whole sequence at once (up to float rounding).
    ///
    /// # Panics
    ///
    /// As [`Gpt2Model::forward`]; [`Gpt2Model::try_forward_cached`] checks first.
    ///
    /// # Shapes
    ///
    /// - input_ids: `[batch, seq]` (the cached batch's rows), output: `[batch, seq, vocab]`
    pub fn forward_cached(&self, input: DecoderInput, cache: &mut KvCache) -> Tensor<3> {
        self.logits(self.decode(input, Some(cache)))
    }

    /// [`Gpt2Model::forward_cached`] after checking the input against the model and the cache;
    /// a refused input leaves the cache as it was.
    pub fn try_forward_cached(
        &self,
        input: DecoderInput,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let channels = self.registry.parallel_channels();
        let (vocab, context) = (self.config.vocab_size, self.config.n_positions);
        input.check(vocab, context, cache.len(), cache.batch / channels.max(1))?;
        let seq = input.input_ids.dims()[1];
        check_prompt_fits(&self.embedding_site, Some(cache), seq, context)?;
        Ok(self.forward_cached(input, cache))
    }

    /// The hidden states after the final LayerNorm, without the language-model head.
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
        let layers = self.h.len();
        let step = Step::new(
            input,
            channels,
            cache.as_deref_mut(),
            layers,
            &self.embedding_site,
        );
        let tokens = self.wte.forward(step.input_ids);
        let tokens = match &step.prompt {
            Some(prompt) => self.embedding_site.forward(tokens, prompt),
            None => tokens,
        };
        let sites = self.h.iter().map(|block| &block.reft_layer);
        let positions = intervention_positions(sites, &step.key_mask, step.past, &tokens);
        let x = dropout(&self.drop, tokens + self.wpe.forward(step.positions));
        let mut x = self.embedding_site.transform(x);
        let [batch, seq, _] = x.dims();
        let bias = AttentionBias::new(step.key_mask, step.past, seq, [None], x.dtype(), true);
        let prefixes = self.prefix_tuning.states(batch);
        for (i, block) in self.h.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|cache| &mut cache.layers[i]);
            x = block.forward(
                x,
                bias.for_window(None),
                layer_cache,
                &prefixes,
                &self.shared_parameters,
            );
            if let Some(positions) = &positions {
                x = block.reft_layer.forward(x, positions);
            }
        }
        let x = self.ln_f.forward(x);
        match &step.prompt {
            Some(prompt) => prompt.strip(x),
            None => x,
        }
    }

    /// Logits of classification head `head` for `input`, from each row's last real token (or
    /// mean-pooled, as the head says). The input is checked as [`Gpt2Model::try_forward`] does.
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
    /// [`Gpt2Model::try_forward`] does.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq]`, output: `[batch, seq, num_labels or vocab_size]`
    pub fn tag(&self, head: &str, input: DecoderInput) -> Result<Tensor<3>> {
        let head = heads::head(&self.heads, head)?;
        let hidden = self.checked_hidden(input)?;
        Ok(head.forward_tokens_inverting(hidden, self.embedding_site.invertible()))
    }

    /// [`Gpt2Model::last_hidden_state`] after checking the input.
    fn checked_hidden(&self, input: DecoderInput) -> Result<Tensor<3>> {
        let context = self.config.n_positions;
        input.check(self.config.vocab_size, context, 0, 0)?;
        let seq = input.input_ids.dims()[1];
        check_prompt_fits(&self.embedding_site, None, seq, context)?;
        Ok(self.decode(input, None))
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        // AdapterHub inverts the invertible adapter before the output embeddings.
        let hidden = self.embedding_site.invert(hidden);
        output_logits(hidden, self.lm_head.as_ref(), &self.wte)
    }
}

impl CausalLm for Gpt2Model {
    type Cache = KvCache;

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn context_length(&self) -> usize {
        self.config.n_positions
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

impl AdapterHost for Gpt2Model {
    fn hidden_size(&self) -> usize {
        self.config.n_embd
    }

    fn num_layers(&self) -> usize {
        self.h.len()
    }

    fn residual_sites(&self) -> impl Iterator<Item = &ResidualSite> {
        self.h
            .iter()
            .flat_map(|block| [&block.attention_adapters, &block.output_adapters])
    }

    fn residual_sites_mut(&mut self) -> impl Iterator<Item = &mut ResidualSite> {
        self.h
            .iter_mut()
            .flat_map(|block| [&mut block.attention_adapters, &mut block.output_adapters])
    }

    fn linear_sites(&self) -> impl Iterator<Item = &LinearSite> {
        self.h.iter().flat_map(|block| {
            [
                &block.attn.c_attn,
                &block.attn.c_proj,
                &block.mlp.c_fc,
                &block.mlp.c_proj,
            ]
        })
    }

    fn linear_sites_mut(&mut self) -> impl Iterator<Item = &mut LinearSite> {
        self.h.iter_mut().flat_map(|block| {
            [
                &mut block.attn.c_attn,
                &mut block.attn.c_proj,
                &mut block.mlp.c_fc,
                &mut block.mlp.c_proj,
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
        self.h.iter().map(|block| &block.reft_layer)
    }

    fn hidden_sites_mut(&mut self) -> impl Iterator<Item = &mut HiddenStateSite> {
        self.h.iter_mut().map(|block| &mut block.reft_layer)
    }

    fn hidden_site_path(&self, layer: usize) -> String {
        format!("transformer.h.{layer}.reft_layer")
    }

    fn embedding_site_mut(&mut self) -> Option<&mut EmbeddingSite> {
        Some(&mut self.embedding_site)
    }

    fn word_embeddings(&self) -> Option<Tensor<2>> {
        Some(self.wte.weight.val())
    }

    fn embedding_site_path(&self) -> String {
        "transformer.prompt_tuning".into()
    }

    fn shared_parameters_path(&self) -> String {
        "transformer.shared_parameters".into()
    }

    fn invertible_adapters_path(&self) -> String {
        "transformer.invertible_adapters".into()
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
        self.h.iter().map(|block| &block.attn.prefix_tuning)
    }

    fn attention_sites_mut(&mut self) -> impl Iterator<Item = &mut AttentionSite> {
        self.h.iter_mut().map(|block| &mut block.attn.prefix_tuning)
    }

    fn attention_site_path(&self, layer: usize) -> String {
        format!("transformer.h.{layer}.attn.prefix_tuning")
    }

    fn prefix_pool_path(&self) -> String {
        "transformer.prefix_tuning".into()
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
        self.config.attn_pdrop
    }

    fn model_info(&self) -> ModelInfo {
        ModelInfo {
            model_type: Some("gpt2".into()),
            model_class: Some("GPT2LMHeadModel".into()),
            model_name: self.config.name_or_path.clone(),
        }
    }

    fn fan_in_fan_out(&self) -> bool {
        true
    }

    fn site_path(&self, location: SiteLocation) -> String {
        let block = match location.position {
            SitePosition::Attention => "attention_adapters",
            SitePosition::Output => "output_adapters",
        };
        format!("transformer.h.{}.{block}.adapters", location.layer)
    }

    fn linear_site_path(&self, location: LinearLocation) -> String {
        let module = match location.position {
            LinearPosition::QueryKeyValue => "attn.c_attn",
            LinearPosition::Intermediate => "mlp.c_fc",
            LinearPosition::Output => "mlp.c_proj",
            LinearPosition::AttentionOutput => "attn.c_proj",
            // GPT-2's feed-forward block has no gate.
            LinearPosition::Gate => "mlp.gate",
            // GPT-2 fuses the query, key and value projections into `c_attn`.
            LinearPosition::Query | LinearPosition::Key | LinearPosition::Value => "attn.c_attn",
        };
        format!("transformer.h.{}.{module}.loras", location.layer)
    }
}
