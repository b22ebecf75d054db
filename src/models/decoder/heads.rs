//! Prediction heads on decoders: sequence heads read each row's last real token, as AdapterHub's
//! decoder models do; tagging and causal-LM heads read every token.

use burn::tensor::{Int, Tensor};

use super::DecoderInput;
use crate::error::{Error, Result};
use crate::heads::{HeadConfig, Pooling, PredictionHead};
use crate::sites::NamedModules;

/// Head `name` of `heads`.
pub(crate) fn head<'a>(
    heads: &'a NamedModules<PredictionHead>,
    name: &str,
) -> Result<&'a PredictionHead> {
    heads
        .get(name)
        .ok_or_else(|| Error::UnknownHead(name.to_string()))
}

/// The logits of classification head `head` for `input`, whose final hidden states `hidden`
/// computes (with `channels` copies of the batch for a `Parallel` setup).
pub(crate) fn classify_input(
    head: &PredictionHead,
    input: DecoderInput,
    channels: usize,
    hidden: impl FnOnce(DecoderInput) -> Result<Tensor<3>>,
) -> Result<Tensor<2>> {
    let [batch, seq] = input.input_ids.dims();
    let device = input.input_ids.device();
    let mask = (input.attention_mask.clone())
        .unwrap_or_else(|| Tensor::ones([batch, seq], &device))
        .repeat_dim(0, channels.max(1));
    classify(head, hidden(input)?, mask)
}

/// The logits of classification head `head` for a decoder's final hidden states: from the last
/// position each row's mask marks (AdapterHub counts the tokens that are not `pad_token_id`
/// instead, which picks the wrong token of a left-padded row), or mean-pooled.
///
/// # Shapes
///
/// - hidden: `[batch, seq, hidden]`, mask: `[batch, seq]`, output: `[batch, num_labels]`
fn classify(head: &PredictionHead, hidden: Tensor<3>, mask: Tensor<2, Int>) -> Result<Tensor<2>> {
    match head.config {
        HeadConfig::Classification {
            pooling: Pooling::Cls,
            ..
        } => Ok(head.forward_pooled(last_token(hidden, mask))),
        HeadConfig::Classification { .. } => Ok(head.forward_sequence(hidden, Some(mask))),
        _ => Err(Error::InvalidSetup(
            "`classify` needs a classification head; use `tag`".into(),
        )),
    }
}

/// The hidden state at the last position each row's mask marks.
///
/// # Shapes
///
/// - hidden: `[batch, seq, hidden]`, mask: `[batch, seq]`, output: `[batch, hidden]`
fn last_token(hidden: Tensor<3>, mask: Tensor<2, Int>) -> Tensor<2> {
    let [batch, seq, width] = hidden.dims();
    let positions = Tensor::<1, Int>::arange(0..seq as i64, &hidden.device()).reshape([1, seq]);
    let last = (mask * positions).argmax(1).reshape([batch, 1, 1]);
    hidden
        .gather(1, last.expand([batch, 1, width]))
        .reshape([batch, width])
}
