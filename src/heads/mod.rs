//! Prediction heads, saved with their adapter in AdapterHub's `head_config.json` +
//! `model_head.safetensors`.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::Activation;
use crate::error::{Error, Result};
use crate::methods::init::{InitRng, param};
use crate::methods::{InvertibleAdapter, dropout};

/// How a sequence head reduces the token states to one vector per example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The host's summary token, as AdapterHub's classification head reads it: the first
    /// (`[CLS]`) in encoders, the last real token in decoders.
    #[default]
    Cls,
    /// The mean over non-padding tokens (an extension; AdapterHub cannot load such heads).
    Mean,
}

fn is_cls(pooling: &Pooling) -> bool {
    *pooling == Pooling::Cls
}

/// A head's configuration, field for field AdapterHub's `config` of `head_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "head_type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum HeadConfig {
    /// One label per sequence (AdapterHub's `ClassificationHead`).
    Classification {
        /// Number of classes.
        num_labels: usize,
        /// Number of Linear layers (the hidden ones are `hidden → hidden`).
        layers: usize,
        /// Non-linearity after each hidden layer (`None` for none).
        activation_function: Option<Activation>,
        /// Label names to class ids.
        label2id: Option<BTreeMap<String, usize>>,
        /// Read the model's pooler output instead of the first token.
        use_pooler: bool,
        /// Bias on the output layer.
        bias: bool,
        /// Dropout before each layer (`None`: the model's hidden dropout).
        dropout_prob: Option<f64>,
        /// Pooling of token states (written only when not AdapterHub's `[CLS]`).
        #[serde(default, skip_serializing_if = "is_cls")]
        pooling: Pooling,
    },
    /// One label per token (AdapterHub's `TaggingHead`).
    Tagging {
        /// Number of classes.
        num_labels: usize,
        /// Number of Linear layers.
        layers: usize,
        /// Non-linearity after each hidden layer.
        activation_function: Option<Activation>,
        /// Label names to class ids.
        label2id: Option<BTreeMap<String, usize>>,
        /// Dropout before each layer (`None`: the model's hidden dropout).
        #[serde(default)]
        dropout_prob: Option<f64>,
    },
    /// Next-token logits over a vocabulary (AdapterHub's `CausalLMHead`).
    CausalLm(LmHeadConfig),
    /// Masked-token logits over a vocabulary (AdapterHub's `BertStyleMaskedLMHead`).
    MaskedLm(LmHeadConfig),
}

/// A language-model head's configuration (AdapterHub's `CausalLMHead` and
/// `BertStyleMaskedLMHead`): hidden layers, then an output layer to the vocabulary, before which
/// the model's active invertible adapter is inverted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmHeadConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden layers and of the output layer's input; the model's hidden size.
    pub embedding_size: usize,
    /// Number of Linear layers.
    pub layers: usize,
    /// Non-linearity after each hidden layer.
    pub activation_function: Option<Activation>,
    /// LayerNorm (epsilon 1e-12, as AdapterHub builds it) after each hidden layer's activation.
    pub layer_norm: bool,
    /// Bias on the output layer.
    pub bias: bool,
    /// Whether labels are shifted for the loss (informational; `train::causal_lm_loss` shifts).
    pub shift_labels: bool,
    /// Unused by the head; AdapterHub writes `null`.
    pub label2id: Option<BTreeMap<String, usize>>,
    /// Unused: AdapterHub's language-model heads have no dropout.
    #[serde(default)]
    pub dropout_prob: Option<f64>,
}

impl LmHeadConfig {
    /// AdapterHub's defaults: a hidden Linear, exact GELU and LayerNorm, then a Linear with bias
    /// to the vocabulary; labels shifted (`shift_labels`) as a causal LM's are.
    fn new(vocab_size: usize, hidden: usize, shift_labels: bool) -> Self {
        Self {
            vocab_size,
            embedding_size: hidden,
            layers: 2,
            activation_function: Some(Activation::Gelu),
            layer_norm: true,
            bias: true,
            shift_labels,
            label2id: None,
            dropout_prob: None,
        }
    }
}

impl HeadConfig {
    /// AdapterHub's `add_classification_head` defaults: 2 layers, tanh, `[CLS]` pooling.
    pub fn classification(num_labels: usize) -> Self {
        HeadConfig::Classification {
            num_labels,
            layers: 2,
            activation_function: Some(Activation::Tanh),
            label2id: None,
            use_pooler: false,
            bias: true,
            dropout_prob: None,
            pooling: Pooling::Cls,
        }
    }

    /// A single Linear layer, without dropout, over mean-pooled token states.
    pub fn mean_pooled_linear(num_labels: usize) -> Self {
        HeadConfig::Classification {
            num_labels,
            layers: 1,
            activation_function: None,
            label2id: None,
            use_pooler: false,
            bias: true,
            dropout_prob: Some(0.0),
            pooling: Pooling::Mean,
        }
    }

    /// AdapterHub's `add_causal_lm_head` defaults: a hidden Linear, exact GELU and LayerNorm,
    /// then a Linear with bias to the vocabulary.
    pub fn causal_lm(vocab_size: usize, hidden: usize) -> Self {
        HeadConfig::CausalLm(LmHeadConfig::new(vocab_size, hidden, true))
    }

    /// AdapterHub's `add_masked_lm_head` defaults: [`HeadConfig::causal_lm`]'s layers, labels
    /// not shifted.
    pub fn masked_lm(vocab_size: usize, hidden: usize) -> Self {
        HeadConfig::MaskedLm(LmHeadConfig::new(vocab_size, hidden, false))
    }

    /// The language-model fields of a causal- or masked-LM head.
    pub fn language_model(&self) -> Option<&LmHeadConfig> {
        match self {
            HeadConfig::CausalLm(lm) | HeadConfig::MaskedLm(lm) => Some(lm),
            _ => None,
        }
    }

    /// AdapterHub's `add_tagging_head` defaults: 1 layer, tanh.
    pub fn tagging(num_labels: usize) -> Self {
        HeadConfig::Tagging {
            num_labels,
            layers: 1,
            activation_function: Some(Activation::Tanh),
            label2id: None,
            dropout_prob: None,
        }
    }

    fn parts(&self) -> (usize, usize, Option<Activation>, Option<f64>) {
        match self {
            HeadConfig::Classification {
                num_labels,
                layers,
                activation_function,
                dropout_prob,
                ..
            }
            | HeadConfig::Tagging {
                num_labels,
                layers,
                activation_function,
                dropout_prob,
                ..
            } => (*num_labels, *layers, *activation_function, *dropout_prob),
            HeadConfig::CausalLm(lm) | HeadConfig::MaskedLm(lm) => {
                (lm.vocab_size, lm.layers, lm.activation_function, Some(0.0))
            }
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let (num_labels, layers, _, dropout) = self.parts();
        if num_labels == 0 {
            return Err(Error::invalid(
                "num_labels",
                0,
                "a head needs at least one label",
            ));
        }
        if layers == 0 {
            return Err(Error::invalid(
                "layers",
                0,
                "a head needs at least one layer",
            ));
        }
        if let Some(p) = dropout {
            crate::config::check_probability("dropout_prob", p)?;
        }
        match self {
            HeadConfig::Classification {
                use_pooler: true, ..
            } => Err(Error::Unsupported("use_pooler = true heads".into())),
            _ => Ok(()),
        }
    }

    /// Number of classes.
    pub fn num_labels(&self) -> usize {
        self.parts().0
    }
}

/// A prediction head: `layers` Linear layers, each preceded by dropout, with the activation after
/// each hidden one (AdapterHub's `PredictionHead` sequence).
#[derive(Module, Debug)]
pub struct PredictionHead {
    /// Hidden layers then the output layer.
    pub layers: Vec<Linear>,
    /// A LayerNorm after each hidden layer (language-model heads with `layer_norm`; else empty).
    pub norms: Vec<LayerNorm>,
    /// Dropout before each layer.
    pub dropout: Dropout,
    /// The head's configuration.
    #[module(skip)]
    pub config: HeadConfig,
}

impl PredictionHead {
    /// A new head for hidden size `hidden`, BERT-initialised (N(0, 0.02) weights, zero biases).
    pub fn new(
        config: HeadConfig,
        hidden: usize,
        default_dropout: f64,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (num_labels, layers, _, dropout) = config.parts();
        let output_bias = match &config {
            HeadConfig::Classification { bias, .. } => *bias,
            HeadConfig::CausalLm(lm) | HeadConfig::MaskedLm(lm) => lm.bias,
            HeadConfig::Tagging { .. } => true,
        };
        if let Some(lm) = config.language_model()
            && lm.embedding_size != hidden
        {
            return Err(Error::invalid(
                "embedding_size",
                lm.embedding_size,
                format!("must equal the model's hidden size {hidden}"),
            ));
        }
        let mut rng = InitRng::from_device(device);
        let layers = (0..layers)
            .map(|i| {
                let (d_out, bias) = if i + 1 == layers {
                    (num_labels, output_bias)
                } else {
                    (hidden, true)
                };
                Linear {
                    weight: param(
                        rng.normal(hidden * d_out, 0.0, 0.02),
                        [hidden, d_out],
                        device,
                    ),
                    bias: bias.then(|| param(vec![0.0; d_out], [d_out], device)),
                }
            })
            .collect();
        let norms = match config.language_model() {
            Some(lm) if lm.layer_norm => (1..lm.layers)
                .map(|_| {
                    LayerNormConfig::new(hidden)
                        .with_epsilon(1e-12)
                        .init(device)
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            layers,
            norms,
            dropout: DropoutConfig::new(dropout.unwrap_or(default_dropout)).init(),
            config,
        })
    }

    /// AdapterHub's index of layer `i` in its `nn.Sequential` (dropout, linear, activation, ...;
    /// a language-model head has no dropout modules).
    pub fn reference_index(&self, i: usize) -> usize {
        let activation = usize::from(self.config.parts().2.is_some());
        let norm = usize::from(!self.norms.is_empty());
        match self.config.language_model() {
            Some(_) => (1 + activation + norm) * i,
            None => (2 + activation) * i + 1,
        }
    }

    /// AdapterHub's index of the LayerNorm after hidden layer `i` (after its activation).
    pub fn norm_index(&self, i: usize) -> usize {
        self.reference_index(i) + 1 + usize::from(self.config.parts().2.is_some())
    }

    fn mlp<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.output_layer(self.hidden_layers(x))
    }

    /// Every layer but the output layer, with their activations and norms.
    fn hidden_layers<const D: usize>(&self, mut x: Tensor<D>) -> Tensor<D> {
        let activation = self.config.parts().2;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers[..last].iter().enumerate() {
            x = layer.forward(dropout(&self.dropout, x));
            if let Some(act) = activation {
                x = act.forward(x);
            }
            if let Some(norm) = self.norms.get(i) {
                x = norm.forward(x);
            }
        }
        x
    }

    /// The output layer (a language-model head's output embeddings).
    fn output_layer<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len() - 1;
        self.layers[last].forward(dropout(&self.dropout, x))
    }

    /// Logits of a sequence head from the encoder's last hidden state.
    ///
    /// # Shapes
    ///
    /// - hidden: `[batch, seq, d_model]`, mask: `[batch, seq]` (1 = token)
    /// - output: `[batch, num_labels]`
    pub fn forward_sequence(&self, hidden: Tensor<3>, mask: Option<Tensor<2, Int>>) -> Tensor<2> {
        self.mlp(self.pool(hidden, mask))
    }

    /// The head's pooling of token states into one vector per example (before its layers).
    ///
    /// # Shapes
    ///
    /// - hidden: `[batch, seq, d_model]`, mask: `[batch, seq]`, output: `[batch, d_model]`
    pub fn pool(&self, hidden: Tensor<3>, mask: Option<Tensor<2, Int>>) -> Tensor<2> {
        let [batch, seq, width] = hidden.dims();
        let pooling = match &self.config {
            HeadConfig::Classification { pooling, .. } => *pooling,
            HeadConfig::Tagging { .. } | HeadConfig::CausalLm(_) | HeadConfig::MaskedLm(_) => {
                Pooling::Mean
            }
        };
        match (pooling, mask) {
            (Pooling::Cls, _) => hidden.narrow(1, 0, 1).reshape([batch, width]),
            (Pooling::Mean, None) => hidden.mean_dim(1).reshape([batch, width]),
            (Pooling::Mean, Some(mask)) => {
                let mask = mask.float().reshape([batch, seq, 1]);
                let summed = (hidden * mask.clone()).sum_dim(1).reshape([batch, width]);
                let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1.0);
                summed / counts
            }
        }
    }

    /// Logits of a sequence head from an already pooled vector per example (a decoder's last
    /// real token).
    ///
    /// # Shapes
    ///
    /// - pooled: `[batch, d_model]`, output: `[batch, num_labels]`
    pub fn forward_pooled(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.mlp(pooled)
    }

    /// Logits of a tagging or language-model head, one row per token.
    ///
    /// # Shapes
    ///
    /// - hidden: `[batch, seq, d_model]`, output: `[batch, seq, num_labels]`
    pub fn forward_tokens(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.mlp(hidden)
    }

    /// [`PredictionHead::forward_tokens`] with the inverse of the model's active invertible
    /// adapter applied before a language-model head's output layer (AdapterHub's `rev=True`);
    /// other heads ignore it, as AdapterHub's do.
    ///
    /// # Shapes
    ///
    /// - hidden: `[batch, seq, d_model]`, output: `[batch, seq, num_labels]`
    pub fn forward_tokens_inverting(
        &self,
        hidden: Tensor<3>,
        invertible: Option<&InvertibleAdapter>,
    ) -> Tensor<3> {
        match invertible.filter(|_| self.config.language_model().is_some()) {
            Some(invertible) => self.output_layer(invertible.inverse(self.hidden_layers(hidden))),
            None => self.forward_tokens(hidden),
        }
    }
}
