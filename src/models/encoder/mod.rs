//! burn's [`TransformerEncoder`] with adapter sites.
//!
//! burn's encoder layer has a closed forward but public fields, so the adapter-ready layer keeps
//! the very same sub-modules (and parameter paths: `layers.{i}.mha.query.weight`,
//! `layers.{i}.norm_1...`) and re-implements the forward, calling a
//! [`ResidualSite`] where each residual block adds its residual and
//! [`LinearSite`]s for the attention and feed-forward projections
//! (LoRA/IA3). With no active adapter the result equals burn's own forward.

mod layers;

pub use layers::*;

use burn::config::Config;
use burn::module::Module;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::tensor::{Bool, Device, Tensor};

use crate::config::{check_positive, check_probability, check_sizes};
use crate::error::{Error, Result};
use crate::model::{AdapterHost, AdapterRegistry};
use crate::sites::{
    AttentionSite, EmbeddingSite, HiddenStateSite, InterventionPositions, LinearSite, PrefixPool,
    PromptPlacement, ResidualSite, SharedParameters,
};

/// The configuration of an [`AdapterTransformerEncoder`]: burn's encoder config, checked before
/// the encoder is built.
///
/// ```
/// use burn::nn::transformer::TransformerEncoderConfig;
/// use burn::tensor::{Device, Tensor};
/// use burn_adapters::models::encoder::{AdapterTransformerEncoderConfig, TransformerEncoderInput};
/// use burn_adapters::prelude::*;
///
/// let device = Device::flex();
/// let config = AdapterTransformerEncoderConfig::new(TransformerEncoderConfig::new(32, 64, 4, 2));
/// let mut model = config.init(&device)?;
/// model.add_adapter("task", AdapterConfig::load("houlsby[reduction_factor=8]")?)?;
/// model.set_active_adapters("task")?;
/// let y = model.forward(TransformerEncoderInput::new(Tensor::zeros([2, 5, 32], &device)));
/// assert_eq!(y.dims(), [2, 5, 32]);
/// # Ok::<(), burn_adapters::Error>(())
/// ```
#[derive(Config, Debug)]
pub struct AdapterTransformerEncoderConfig {
    /// burn's encoder config.
    pub encoder: TransformerEncoderConfig,
}

impl AdapterTransformerEncoderConfig {
    /// Checks the fields burn would panic on or misuse: `d_model`, `d_ff` and `n_heads` at
    /// least 1, `n_heads` dividing `d_model`, `dropout` in `[0, 1)`, a positive finite
    /// `layer_norm_eps`. The error names the field.
    pub fn validate(&self) -> Result<()> {
        let c = &self.encoder;
        check_sizes(&[
            ("d_model", c.d_model),
            ("d_ff", c.d_ff),
            ("n_heads", c.n_heads),
        ])?;
        if !c.d_model.is_multiple_of(c.n_heads) {
            return Err(Error::invalid(
                "n_heads",
                c.n_heads,
                format!("must divide d_model {}", c.d_model),
            ));
        }
        check_probability("dropout", c.dropout)?;
        check_positive("layer_norm_eps", c.layer_norm_eps)
    }

    /// Builds the encoder (burn's initialisation) after [`validate`](Self::validate).
    pub fn init(&self, device: &Device) -> Result<AdapterTransformerEncoder> {
        self.validate()?;
        Ok(AdapterTransformerEncoder::from_encoder(
            self.encoder.init(device),
        ))
    }
}

/// The input of [`AdapterTransformerEncoder::forward`]: the same builder as burn's
/// `TransformerEncoderInput` (whose fields burn keeps private, so it cannot be read here):
/// `TransformerEncoderInput::new(x).mask_pad(pad).mask_attn(causal)`.
#[derive(Debug, Clone)]
pub struct TransformerEncoderInput {
    tensor: Tensor<3>,
    mask_pad: Option<Tensor<2, Bool>>,
    mask_attn: Option<Tensor<3, Bool>>,
}

impl TransformerEncoderInput {
    /// The hidden states, `[batch, seq, d_model]`.
    pub fn new(tensor: Tensor<3>) -> Self {
        Self {
            tensor,
            mask_pad: None,
            mask_attn: None,
        }
    }

    /// A padding mask, `[batch, seq]`, `true` at padded positions.
    pub fn mask_pad(mut self, mask_pad: Tensor<2, Bool>) -> Self {
        self.mask_pad = Some(mask_pad);
        self
    }

    /// An attention mask, `[batch, seq, seq]`, `true` where a query must not see a key (e.g.
    /// burn's `generate_autoregressive_mask` for causal attention).
    pub fn mask_attn(mut self, mask_attn: Tensor<3, Bool>) -> Self {
        self.mask_attn = Some(mask_attn);
        self
    }
}

/// burn's [`TransformerEncoder`] made adapter-ready, keeping its weights and parameter paths.
#[derive(Module, Debug)]
pub struct AdapterTransformerEncoder {
    /// The layers, at burn's paths `layers.{i}`.
    pub layers: Vec<AdapterEncoderLayer>,
    /// Model width.
    pub d_model: usize,
    /// Width of the feed-forward blocks.
    pub d_ff: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// burn's dropout setting.
    pub dropout: f64,
    /// Pre-norm (`true`) or post-norm layers.
    pub norm_first: bool,
    /// burn's quiet-softmax setting.
    pub quiet_softmax: bool,
    /// The prefix-tuning modules.
    pub prefix_tuning: PrefixPool,
    /// What adapters share across layers (Compacter's PHM rules).
    pub shared_parameters: SharedParameters,
    /// The invertible adapters and prompts on the input (the embedded sequence).
    pub embedding_site: EmbeddingSite,
    #[module(skip)]
    registry: AdapterRegistry,
}

impl AdapterTransformerEncoder {
    /// Wraps `encoder`, moving its sub-modules (no copy of the weights).
    pub fn from_encoder(encoder: TransformerEncoder) -> Self {
        Self {
            layers: encoder
                .layers
                .into_iter()
                .enumerate()
                .map(|(i, layer)| AdapterEncoderLayer::from_layer(layer, i))
                .collect(),
            d_model: encoder.d_model,
            d_ff: encoder.d_ff,
            n_heads: encoder.n_heads,
            dropout: encoder.dropout,
            norm_first: encoder.norm_first,
            quiet_softmax: encoder.quiet_softmax,
            prefix_tuning: PrefixPool::new(encoder.n_heads, encoder.d_model / encoder.n_heads),
            shared_parameters: SharedParameters::new(),
            embedding_site: EmbeddingSite::new(),
            registry: AdapterRegistry::default(),
        }
    }

    /// Drops the adapters (undoing a merge) and gives back burn's encoder.
    pub fn into_encoder(self) -> TransformerEncoder {
        TransformerEncoder {
            n_layers: self.layers.len(),
            layers: self
                .layers
                .into_iter()
                .map(AdapterEncoderLayer::into_layer)
                .collect(),
            d_model: self.d_model,
            d_ff: self.d_ff,
            n_heads: self.n_heads,
            dropout: self.dropout,
            norm_first: self.norm_first,
            quiet_softmax: self.quiet_softmax,
        }
    }

    /// Runs the encoder with the active adapters, as burn's `TransformerEncoder::forward` does.
    ///
    /// # Panics
    ///
    /// When the input's width is not `d_model` or a mask's shape does not fit it (burn panics
    /// inside the matmul or the mask fill). [`AdapterTransformerEncoder::try_forward`] checks
    /// first.
    ///
    /// # Shapes
    ///
    /// - tensor: `[batch, seq, d_model]`, mask_pad: `[batch, seq]`, mask_attn:
    ///   `[batch, seq, seq]`
    /// - output: `[batch, seq, d_model]` (`n·batch` rows under a `Parallel` setup of `n`
    ///   branches; see [`AdapterModel::split_parallel`](crate::AdapterModel::split_parallel))
    pub fn forward(&self, input: TransformerEncoderInput) -> Tensor<3> {
        // A Parallel setup runs the batch once per branch.
        let channels = self.registry.parallel_channels();
        let TransformerEncoderInput {
            tensor,
            mask_pad,
            mask_attn,
        } = input;
        let (x, mask_pad, mask_attn) = if channels > 1 {
            (
                tensor.repeat_dim(0, channels),
                mask_pad.map(|m| m.repeat_dim(0, channels)),
                mask_attn.map(|m| m.repeat_dim(0, channels)),
            )
        } else {
            (tensor, mask_pad, mask_attn)
        };
        let x = self.embedding_site.transform(x);
        let [batch, _, _] = x.dims();
        let tokens = mask_pad.clone().map(|pad| pad.bool_not().int());
        let prompt = self.embedding_site.prompt(batch, tokens.as_ref());
        let (x, mask_pad, mask_attn) = match &prompt {
            Some(prompt) => with_prompt(&self.embedding_site, prompt, x, mask_pad, mask_attn),
            None => (x, mask_pad, mask_attn),
        };
        let seq = x.dims()[1];
        let prefixes = self.prefix_tuning.states(batch);
        let positions = self
            .layers
            .iter()
            .any(|layer| layer.reft_layer.is_active())
            .then(|| {
                let tokens = mask_pad.clone().map(|pad| pad.bool_not().int());
                InterventionPositions::new(tokens.as_ref(), batch, 0, seq, &x.device())
            });
        let x = self.layers.iter().fold(x, |x, layer| {
            let x = layer.forward(
                x,
                mask_pad.clone(),
                mask_attn.clone(),
                &prefixes,
                &self.shared_parameters,
            );
            match &positions {
                Some(positions) => layer.reft_layer.forward(x, positions),
                None => x,
            }
        });
        match prompt {
            Some(prompt) => prompt.strip(x),
            None => x,
        }
    }

    /// [`AdapterTransformerEncoder::forward`] after checking the input's shapes: an input of
    /// another width, or masks of other shapes, are an [`Error::InvalidInput`].
    pub fn try_forward(&self, input: TransformerEncoderInput) -> Result<Tensor<3>> {
        let [batch, seq, width] = input.tensor.dims();
        if width != self.d_model {
            return Err(Error::input(
                "tensor",
                format!(
                    "width {width}, but the encoder has d_model {}",
                    self.d_model
                ),
            ));
        }
        if let Some(mask) = &input.mask_pad
            && mask.dims() != [batch, seq]
        {
            return Err(Error::input(
                "mask_pad",
                format!("shape {:?}, expected [{batch}, {seq}]", mask.dims()),
            ));
        }
        if let Some(mask) = &input.mask_attn
            && mask.dims() != [batch, seq, seq]
        {
            return Err(Error::input(
                "mask_attn",
                format!("shape {:?}, expected [{batch}, {seq}, {seq}]", mask.dims()),
            ));
        }
        Ok(self.forward(input))
    }
}

/// The input with the active prompt inserted, and its masks extended: the prompt is never
/// padding, and under an attention mask every query sees it while it sees only itself (so a
/// causal mask stays causal).
fn with_prompt(
    site: &EmbeddingSite,
    prompt: &PromptPlacement,
    x: Tensor<3>,
    mask_pad: Option<Tensor<2, Bool>>,
    mask_attn: Option<Tensor<3, Bool>>,
) -> (Tensor<3>, Option<Tensor<2, Bool>>, Option<Tensor<3, Bool>>) {
    let mask_pad = mask_pad.map(|pad| prompt.extend_mask(pad.bool_not().int()).equal_elem(0));
    let mask_attn = mask_attn.map(|mask| prompt.extend_attention_mask(mask));
    (site.forward(x, prompt), mask_pad, mask_attn)
}

impl AdapterHost for AdapterTransformerEncoder {
    fn hidden_size(&self) -> usize {
        self.d_model
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
            [
                &layer.mha.query,
                &layer.mha.key,
                &layer.mha.value,
                &layer.pwff.linear_inner,
                &layer.pwff.linear_outer,
            ]
        })
    }

    fn linear_sites_mut(&mut self) -> impl Iterator<Item = &mut LinearSite> {
        self.layers.iter_mut().flat_map(|layer| {
            [
                &mut layer.mha.query,
                &mut layer.mha.key,
                &mut layer.mha.value,
                &mut layer.pwff.linear_inner,
                &mut layer.pwff.linear_outer,
            ]
        })
    }

    fn prefix_pool(&self) -> Option<&PrefixPool> {
        Some(&self.prefix_tuning)
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
        self.layers.iter().map(|layer| &layer.mha.prefix_tuning)
    }

    fn attention_sites_mut(&mut self) -> impl Iterator<Item = &mut AttentionSite> {
        self.layers
            .iter_mut()
            .map(|layer| &mut layer.mha.prefix_tuning)
    }

    fn hidden_sites(&self) -> impl Iterator<Item = &HiddenStateSite> {
        self.layers.iter().map(|layer| &layer.reft_layer)
    }

    fn embedding_site(&self) -> Option<&EmbeddingSite> {
        Some(&self.embedding_site)
    }

    fn embedding_site_mut(&mut self) -> Option<&mut EmbeddingSite> {
        Some(&mut self.embedding_site)
    }

    fn hidden_sites_mut(&mut self) -> impl Iterator<Item = &mut HiddenStateSite> {
        self.layers.iter_mut().map(|layer| &mut layer.reft_layer)
    }

    fn registry(&self) -> &AdapterRegistry {
        &self.registry
    }

    fn registry_mut(&mut self) -> &mut AdapterRegistry {
        &mut self.registry
    }
}
