//! burn's [`TransformerEncoder`] with adapter sites.
//!
//! burn's encoder layer has a closed forward but public fields, so the adapter-ready layer keeps
//! the very same sub-modules (and parameter paths: `layers.{i}.mha...`, `layers.{i}.norm_1...`)
//! and re-implements only the forward, calling a [`ResidualSite`] where each residual block adds
//! its residual. With no active adapter the result equals burn's own forward.

use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention};
use burn::nn::transformer::{PositionWiseFeedForward, TransformerEncoder, TransformerEncoderLayer};
use burn::nn::{Dropout, LayerNorm};
use burn::tensor::{Bool, Tensor};

use crate::model::{AdapterHost, AdapterRegistry};
use crate::sites::{ResidualSite, SiteLocation, SitePosition};

/// A [`TransformerEncoderLayer`] with a residual site after attention and after the FFN.
#[derive(Module, Debug)]
pub struct AdapterEncoderLayer {
    /// Self-attention (burn's).
    pub mha: MultiHeadAttention,
    /// Feed-forward block (burn's).
    pub pwff: PositionWiseFeedForward,
    /// burn's `norm_1` (after attention in post-norm layers, before the FFN in pre-norm ones).
    pub norm_1: LayerNorm,
    /// burn's `norm_2` (after the FFN in post-norm layers, before attention in pre-norm ones).
    pub norm_2: LayerNorm,
    /// Dropout on both residual branches.
    pub dropout: Dropout,
    /// Pre-norm (`true`) or post-norm layer.
    pub norm_first: bool,
    /// Adapters after attention (`mh_adapter`).
    pub attention_adapters: ResidualSite,
    /// Adapters after the FFN (`output_adapter`).
    pub output_adapters: ResidualSite,
}

impl AdapterEncoderLayer {
    fn from_layer(layer: TransformerEncoderLayer, index: usize) -> Self {
        let site = |position| {
            ResidualSite::new(SiteLocation {
                layer: index,
                position,
            })
        };
        Self {
            mha: layer.mha,
            pwff: layer.pwff,
            norm_1: layer.norm_1,
            norm_2: layer.norm_2,
            dropout: layer.dropout,
            norm_first: layer.norm_first,
            attention_adapters: site(SitePosition::Attention),
            output_adapters: site(SitePosition::Output),
        }
    }

    fn into_layer(self) -> TransformerEncoderLayer {
        TransformerEncoderLayer {
            mha: self.mha,
            pwff: self.pwff,
            norm_1: self.norm_1,
            norm_2: self.norm_2,
            dropout: self.dropout,
            norm_first: self.norm_first,
        }
    }

    /// # Shapes
    ///
    /// - x: `[batch, seq, d_model]`, mask_pad: `[batch, seq]` (true = padding)
    /// - output: `[batch, seq, d_model]`
    fn forward(
        &self,
        x: Tensor<3>,
        mask_pad: Option<Tensor<2, Bool>>,
        mask_attn: Option<Tensor<3, Bool>>,
    ) -> Tensor<3> {
        // Post-norm: the sites apply the block's LayerNorm themselves (norm_1 after attention,
        // norm_2 after the FFN). Pre-norm: the LayerNorm comes first and the block ends in a sum.
        let attention_input = if self.norm_first {
            self.norm_2.forward(x.clone())
        } else {
            x.clone()
        };
        let mut input = MhaInput::self_attn(attention_input);
        if let Some(mask) = mask_pad {
            input = input.mask_pad(mask);
        }
        if let Some(mask) = mask_attn {
            input = input.mask_attn(mask);
        }
        let h = self.dropout.forward(self.mha.forward(input).context);
        let x = self
            .attention_adapters
            .forward(h, x, (!self.norm_first).then_some(&self.norm_1));

        let ffn_input = if self.norm_first {
            self.norm_1.forward(x.clone())
        } else {
            x.clone()
        };
        let h = self.dropout.forward(self.pwff.forward(ffn_input));
        self.output_adapters
            .forward(h, x, (!self.norm_first).then_some(&self.norm_2))
    }
}

/// burn's [`TransformerEncoder`] made adapter-ready, keeping its weights and parameter paths.
///
/// ```
/// use burn::nn::transformer::TransformerEncoderConfig;
/// use burn::tensor::{Device, Tensor};
/// use burn_adapters::models::encoder::AdapterTransformerEncoder;
/// use burn_adapters::prelude::*;
///
/// let device = Device::flex();
/// let encoder = TransformerEncoderConfig::new(32, 64, 4, 2).init(&device);
/// let mut model = AdapterTransformerEncoder::from_encoder(encoder);
/// model.add_adapter("task", AdapterConfig::load("houlsby[reduction_factor=8]")?)?;
/// model.set_active_adapters("task")?;
/// let y = model.forward(Tensor::zeros([2, 5, 32], &device), None);
/// assert_eq!(y.dims(), [2, 5, 32]);
/// # Ok::<(), burn_adapters::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct AdapterTransformerEncoder {
    /// The layers, at burn's paths `layers.{i}`.
    pub layers: Vec<AdapterEncoderLayer>,
    /// Model width.
    pub d_model: usize,
    #[module(skip)]
    registry: AdapterRegistry,
}

impl AdapterTransformerEncoder {
    /// Wraps `encoder`, moving its sub-modules (no copy of the weights).
    pub fn from_encoder(encoder: TransformerEncoder) -> Self {
        Self {
            d_model: encoder.d_model,
            layers: encoder
                .layers
                .into_iter()
                .enumerate()
                .map(|(i, layer)| AdapterEncoderLayer::from_layer(layer, i))
                .collect(),
            registry: AdapterRegistry::default(),
        }
    }

    /// Drops the adapters and gives back burn's encoder, with `template`'s settings.
    pub fn into_encoder(self, template: TransformerEncoder) -> TransformerEncoder {
        TransformerEncoder {
            layers: self
                .layers
                .into_iter()
                .map(AdapterEncoderLayer::into_layer)
                .collect(),
            ..template
        }
    }

    /// Runs the encoder with the active adapters.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, d_model]`, mask_pad: `[batch, seq]` (true = padding)
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>, mask_pad: Option<Tensor<2, Bool>>) -> Tensor<3> {
        self.layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, mask_pad.clone(), None))
    }
}

impl AdapterHost for AdapterTransformerEncoder {
    fn hidden_size(&self) -> usize {
        self.d_model
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn visit_sites(&self, f: &mut dyn FnMut(&ResidualSite)) {
        for layer in &self.layers {
            f(&layer.attention_adapters);
            f(&layer.output_adapters);
        }
    }

    fn visit_sites_mut(&mut self, f: &mut dyn FnMut(&mut ResidualSite)) {
        for layer in &mut self.layers {
            f(&mut layer.attention_adapters);
            f(&mut layer.output_adapters);
        }
    }

    fn registry(&self) -> &AdapterRegistry {
        &self.registry
    }

    fn registry_mut(&mut self) -> &mut AdapterRegistry {
        &mut self.registry
    }
}
