//! The host trait: what a transformer exposes so the model API can work on it.

use burn::module::Module;

use super::AdapterRegistry;
use crate::heads::PredictionHead;
use crate::io::ModelInfo;
use burn::tensor::Tensor;

use crate::sites::{
    AttentionSite, EmbeddingSite, HiddenStateSite, LinearLocation, LinearPosition, LinearSite,
    NamedModules, PrefixPool, ResidualSite, SharedParameters, SiteLocation, SitePosition,
};

/// A transformer that carries adapter sites.
///
/// Implement this for your own burn model to get the whole [`AdapterModel`](super::AdapterModel)
/// API (`add_adapter`, `train_adapter`, `set_active_adapters`, `save_adapter`, ...). A host:
/// - holds one [`ResidualSite`] per residual block it wants adapted, each created with its
///   [`SiteLocation`] and called in place of `layer_norm(hidden + residual)`, and lists them in
///   [`AdapterHost::residual_sites`]; it passes them its [`SharedParameters`] (or an empty set),
///   and holding them (see [`AdapterHost::shared_parameters`]) makes Compacter's shared PHM
///   rule available;
/// - optionally wraps its attention and feed-forward projections in [`LinearSite`]s (drop-ins
///   for burn's `Linear`) and lists them in [`AdapterHost::linear_sites`], which makes LoRA and
///   IA3 available;
/// - optionally holds a [`PrefixPool`] and one [`AttentionSite`] per attention layer, which
///   makes prefix tuning available: the forward computes the pool's
///   [`states`](PrefixPool::states) once and each attention layer prepends its site's prefixes
///   to its keys and values;
/// - optionally holds an [`EmbeddingSite`] that its forward applies to the embedded input, which
///   makes prompt tuning and invertible adapters available (language-model heads invert the
///   latter before their output embeddings);
/// - optionally holds a [`HiddenStateSite`] after each layer, called on the layer's output with
///   the forward's [`InterventionPositions`](crate::sites::InterventionPositions), which makes
///   ReFT available;
/// - holds an [`AdapterRegistry`] in a `#[module(skip)]` field;
/// - lists its sites in a fixed order, the same for the `_mut` variants.
///
/// The model API finds adapters through the sites, never through parameter paths, so the
/// fields may be called anything. See `docs/guide.md` and `examples/custom_host.rs` for a
/// complete small host.
pub trait AdapterHost: Module + Sized {
    /// Width of the hidden states at the sites.
    fn hidden_size(&self) -> usize;

    /// Number of transformer layers (the range of `leave_out` and per-layer reduction factors).
    fn num_layers(&self) -> usize;

    /// Every residual site, in a fixed order.
    fn residual_sites(&self) -> impl Iterator<Item = &ResidualSite>;

    /// Every residual site mutably, in the order of [`AdapterHost::residual_sites`].
    fn residual_sites_mut(&mut self) -> impl Iterator<Item = &mut ResidualSite>;

    /// Every linear site (the layers LoRA and IA3 wrap), in a fixed order. Hosts without linear
    /// sites keep the default and cannot take LoRA/IA3 adapters.
    fn linear_sites(&self) -> impl Iterator<Item = &LinearSite> {
        std::iter::empty()
    }

    /// Every linear site mutably, in the order of [`AdapterHost::linear_sites`].
    fn linear_sites_mut(&mut self) -> impl Iterator<Item = &mut LinearSite> {
        std::iter::empty()
    }

    /// The prefix pool (prefix tuning), for hosts with attention sites.
    fn prefix_pool(&self) -> Option<&PrefixPool> {
        None
    }

    /// The prefix pool, mutably.
    fn prefix_pool_mut(&mut self) -> Option<&mut PrefixPool> {
        None
    }

    /// What adapters share across layers (Compacter's shared PHM rule), for hosts that hand it
    /// to their residual sites' forwards.
    fn shared_parameters(&self) -> Option<&SharedParameters> {
        None
    }

    /// The shared parameters, mutably.
    fn shared_parameters_mut(&mut self) -> Option<&mut SharedParameters> {
        None
    }

    /// Every attention site, one per attention layer in layer order. Hosts without them keep
    /// the default and cannot take prefix tuning.
    fn attention_sites(&self) -> impl Iterator<Item = &AttentionSite> {
        std::iter::empty()
    }

    /// Every attention site mutably, in the order of [`AdapterHost::attention_sites`].
    fn attention_sites_mut(&mut self) -> impl Iterator<Item = &mut AttentionSite> {
        std::iter::empty()
    }

    /// The embedding site (prompt tuning), for hosts that have one.
    fn embedding_site(&self) -> Option<&EmbeddingSite> {
        None
    }

    /// The embedding site, mutably.
    fn embedding_site_mut(&mut self) -> Option<&mut EmbeddingSite> {
        None
    }

    /// Every hidden-state site (ReFT), one per layer in layer order. Hosts without them keep
    /// the default and cannot take ReFT.
    fn hidden_sites(&self) -> impl Iterator<Item = &HiddenStateSite> {
        std::iter::empty()
    }

    /// Every hidden-state site mutably, in the order of [`AdapterHost::hidden_sites`].
    fn hidden_sites_mut(&mut self) -> impl Iterator<Item = &mut HiddenStateSite> {
        std::iter::empty()
    }

    /// The token embedding matrix, `[vocab, hidden]` (what `init_prompt_from_tokens` reads), for
    /// hosts that embed token ids.
    fn word_embeddings(&self) -> Option<Tensor<2>> {
        None
    }

    /// The adapter registry stored in the host.
    fn registry(&self) -> &AdapterRegistry;

    /// The adapter registry stored in the host, mutably.
    fn registry_mut(&mut self) -> &mut AdapterRegistry;

    /// The prediction heads, for hosts that carry them.
    fn heads(&self) -> Option<&NamedModules<PredictionHead>> {
        None
    }

    /// The prediction heads, mutably.
    fn heads_mut(&mut self) -> Option<&mut NamedModules<PredictionHead>> {
        None
    }

    /// Dropout of new heads whose config gives none (the model's hidden dropout).
    fn head_dropout(&self) -> f64 {
        0.1
    }

    /// Dropout of new AdapterFusion layers whose config gives none (the model's attention
    /// dropout).
    fn attention_dropout(&self) -> f64 {
        0.1
    }

    /// How saved adapters describe this model (transformers' `model_type` and class). The
    /// default names nothing (`null` in the files); hosts that mirror a transformers model say
    /// which.
    fn model_info(&self) -> ModelInfo {
        ModelInfo::default()
    }

    /// Whether the host's checkpoints store the wrapped projections `[in, out]` (transformers'
    /// `Conv1D`, as in GPT-2): PEFT's `fan_in_fan_out`.
    fn fan_in_fan_out(&self) -> bool {
        false
    }

    /// Where the adapters of a residual site sit in the tensor names of AdapterHub's files.
    /// The default is the layout of AdapterHub's encoders (`encoder.layer.{i}.output.adapters`,
    /// `encoder.layer.{i}.attention.output.adapters`), so adapters move between encoder hosts.
    fn site_path(&self, location: SiteLocation) -> String {
        let block = match location.position {
            SitePosition::Attention => "attention.output",
            SitePosition::Output => "output",
        };
        format!("encoder.layer.{}.{block}.adapters", location.layer)
    }

    /// Where the modules of a linear site sit in the tensor names of AdapterHub's files
    /// (`encoder.layer.{i}.attention.self.query.loras` by default); without the `.loras`, the
    /// wrapped module's path in PEFT's files.
    fn linear_site_path(&self, location: LinearLocation) -> String {
        let layer = match location.position {
            LinearPosition::Query => "attention.self.query",
            LinearPosition::Key => "attention.self.key",
            LinearPosition::Value => "attention.self.value",
            LinearPosition::Intermediate => "intermediate.dense",
            LinearPosition::Output => "output.dense",
            LinearPosition::AttentionOutput => "attention.output.dense",
            LinearPosition::Gate => "intermediate.gate",
            // Encoders have separate projections; a host with a fused one names it.
            LinearPosition::QueryKeyValue => "attention.self.qkv",
        };
        format!("encoder.layer.{}.{layer}.loras", location.layer)
    }

    /// Where the prefix module of AdapterHub's files sits in layer `layer`'s attention
    /// (`encoder.layer.{i}.attention.self.prefix_tuning` by default); its gates are under
    /// `.prefix_gates`.
    fn attention_site_path(&self, layer: usize) -> String {
        format!("encoder.layer.{layer}.attention.self.prefix_tuning")
    }

    /// Where the prefix pool sits in the tensor names of AdapterHub's files (`prefix_tuning`
    /// by default: the base model's attribute).
    fn prefix_pool_path(&self) -> String {
        "prefix_tuning".into()
    }

    /// Where layer `layer`'s ReFT interventions sit in the tensor names of AdapterHub's files
    /// (`encoder.layer.{i}.reft_layer` by default).
    fn hidden_site_path(&self, layer: usize) -> String {
        format!("encoder.layer.{layer}.reft_layer")
    }

    /// Where the prompts sit in the tensor names of AdapterHub's files (`prompt_tuning` by
    /// default: the base model's attribute).
    fn embedding_site_path(&self) -> String {
        "prompt_tuning".into()
    }

    /// The position of the feed-forward projection back to the hidden width (`output_lora`'s
    /// by default; AdapterHub's Llama puts `down_proj` at `intermediate_lora`'s): with
    /// [`LoRAConfig::ia3_input_scaling`](crate::config::LoRAConfig::ia3_input_scaling), IA3
    /// scales its input there.
    fn ffn_down_position(&self) -> LinearPosition {
        LinearPosition::Output
    }

    /// Where the parameters an adapter shares across layers (VeRA's random matrices) sit in the
    /// tensor names of AdapterHub's files (`shared_parameters` by default: the base model's
    /// attribute).
    fn shared_parameters_path(&self) -> String {
        "shared_parameters".into()
    }

    /// Where the invertible adapters sit in the tensor names of AdapterHub's files
    /// (`invertible_adapters` by default: the base model's attribute).
    fn invertible_adapters_path(&self) -> String {
        "invertible_adapters".into()
    }
}
