//! Text generation for any causal language model: greedy decoding or seeded sampling
//! (temperature, top-k, top-p), stop tokens, batched left-padded prompts and a per-token
//! callback for streaming.

use burn::config::Config;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::distr::{Distribution, weighted::WeightedIndex};
use rand::rngs::StdRng;

use crate::error::{Error, Result};

/// A causal language model that decodes incrementally through a cache.
pub trait CausalLm {
    /// The key/value cache of one batch.
    type Cache: Default;

    /// Vocabulary size (the width of the logits).
    fn vocab_size(&self) -> usize;

    /// The most positions (prompt and generated tokens) one sequence may have.
    fn context_length(&self) -> usize;

    /// Logits of the new positions `ids` after those in `cache`, adding them to the cache.
    /// `mask` marks their padding (1 = token) and `positions` their positions; an input the
    /// model cannot run is an error that leaves the cache unchanged.
    ///
    /// # Shapes
    ///
    /// - ids, mask, positions: `[batch, seq]`
    /// - output: `[batch, seq, vocab]`
    fn step(
        &self,
        ids: Tensor<2, Int>,
        mask: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        cache: &mut Self::Cache,
    ) -> Result<Tensor<3>>;
}

/// How the next token is chosen.
#[derive(Config, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (the first of equally likely ones), as transformers' greedy search.
    Greedy,
    /// A token drawn from the softmax of `logits / temperature`, restricted to the `top_k` most
    /// likely tokens and then to the smallest set whose probability reaches `top_p`, as
    /// transformers' logits warpers apply them.
    Sample {
        /// Divisor of the logits (> 0).
        temperature: f64,
        /// Keep only this many most likely tokens.
        top_k: Option<usize>,
        /// Keep the most likely tokens whose probabilities sum to at least this (in `(0, 1]`).
        top_p: Option<f64>,
    },
}

/// How [`generate`] runs.
#[derive(Config, Debug)]
pub struct GenerationConfig {
    /// The most tokens generated per row.
    pub max_new_tokens: usize,
    /// How each token is chosen.
    #[config(default = "Sampling::Greedy")]
    pub sampling: Sampling,
    /// Tokens that end a row (the stop token is part of its output).
    #[config(default = "Vec::new()")]
    pub stop_tokens: Vec<usize>,
    /// The token fed to finished rows while others go on.
    #[config(default = 0)]
    pub pad_token_id: usize,
    /// Seed of the sampler: the same seed, model and prompts give the same tokens.
    #[config(default = 0)]
    pub seed: u64,
}

impl GenerationConfig {
    fn validate(&self) -> Result<()> {
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } = &self.sampling
        {
            if !(temperature.is_finite() && *temperature > 0.0) {
                return Err(Error::invalid(
                    "temperature",
                    temperature,
                    "must be positive",
                ));
            }
            if *top_k == Some(0) {
                return Err(Error::invalid("top_k", 0, "must be at least 1"));
            }
            if let Some(p) = top_p
                && !(*p > 0.0 && *p <= 1.0)
            {
                return Err(Error::invalid("top_p", p, "must be in (0, 1]"));
            }
        }
        Ok(())
    }
}

/// Generates up to `config.max_new_tokens` tokens after each row of `prompt`, calling
/// `on_token(row, token)` as each is chosen, and returns each row's new tokens (without the
/// prompt, up to and including a stop token).
///
/// Prompts of different lengths are padded on the left (`mask` 0 at padding); positions count
/// from each row's first token, as transformers' `generate` does.
///
/// # Shapes
///
/// - prompt, mask: `[batch, seq]`
pub fn generate<M: CausalLm>(
    model: &M,
    prompt: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    config: &GenerationConfig,
    mut on_token: impl FnMut(usize, usize),
) -> Result<Vec<Vec<usize>>> {
    check_request(model, &prompt, &mask, config)?;
    let [batch, _] = prompt.dims();
    let device = prompt.device();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut cache = M::Cache::default();
    let positions = mask.clone().cumsum(1) - 1;
    let positions = positions.clone().mask_fill(mask.clone().equal_elem(0), 1);
    let mut next_positions = last_column(&positions) + 1;
    let mut logits = model.step(prompt, mask, positions, &mut cache)?;
    let mut outputs = vec![Vec::new(); batch];
    let mut done = vec![false; batch];
    for step in 0..config.max_new_tokens {
        if logits.dims()[0] != batch {
            return Err(Error::InvalidSetup(
                "generation runs one output per prompt; a `Parallel` setup gives several".into(),
            ));
        }
        let rows = last_logits(logits, model.vocab_size())?;
        let mut next = Vec::with_capacity(batch);
        for (row, scores) in rows.iter().enumerate() {
            if done[row] {
                next.push(config.pad_token_id as i64);
                continue;
            }
            let token = choose(scores, &config.sampling, &mut rng);
            outputs[row].push(token);
            on_token(row, token);
            done[row] = config.stop_tokens.contains(&token);
            next.push(token as i64);
        }
        if done.iter().all(|d| *d) || step + 1 == config.max_new_tokens {
            break;
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(next, [batch, 1]), &device);
        let ones = Tensor::<2, Int>::ones([batch, 1], &device);
        logits = model.step(ids, ones, next_positions.clone(), &mut cache)?;
        next_positions = next_positions + 1;
    }
    Ok(outputs)
}

/// Checks the config, the mask's shape and that the prompt and the new tokens fit the context.
fn check_request<M: CausalLm>(
    model: &M,
    prompt: &Tensor<2, Int>,
    mask: &Tensor<2, Int>,
    config: &GenerationConfig,
) -> Result<()> {
    config.validate()?;
    let [batch, seq] = prompt.dims();
    if batch == 0 || seq == 0 {
        return Err(Error::input(
            "prompt",
            format!("shape [{batch}, {seq}] is empty"),
        ));
    }
    if mask.dims() != [batch, seq] {
        return Err(Error::input(
            "mask",
            format!(
                "shape {:?}, but the prompt has [{batch}, {seq}]",
                mask.dims()
            ),
        ));
    }
    // The last token is chosen but never run.
    let needed = seq + config.max_new_tokens.saturating_sub(1);
    if needed > model.context_length() {
        return Err(Error::input(
            "max_new_tokens",
            format!(
                "{} after a prompt of {seq} exceed the context of {}",
                config.max_new_tokens,
                model.context_length()
            ),
        ));
    }
    Ok(())
}

fn last_column(t: &Tensor<2, Int>) -> Tensor<2, Int> {
    let seq = t.dims()[1];
    t.clone().narrow(1, seq - 1, 1)
}

/// The logits of each row's last position, on the host.
fn last_logits(logits: Tensor<3>, vocab: usize) -> Result<Vec<Vec<f32>>> {
    let [batch, seq, width] = logits.dims();
    let last = logits.narrow(1, seq - 1, 1).reshape([batch, width]);
    let values = last
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Unsupported(format!("reading the logits back: {e:?}")))?;
    debug_assert_eq!(width, vocab);
    Ok(values.chunks(width).map(<[f32]>::to_vec).collect())
}

/// The token `sampling` picks from one row's logits.
fn choose(logits: &[f32], sampling: &Sampling, rng: &mut StdRng) -> usize {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } => {
            let scaled: Vec<f64> = logits.iter().map(|l| *l as f64 / temperature).collect();
            let probs = warped_probabilities(&scaled, *top_k, *top_p);
            match WeightedIndex::new(&probs) {
                Ok(dist) => dist.sample(rng),
                Err(_) => argmax(logits),
            }
        }
    }
}

fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// Softmax probabilities of `logits` with everything outside the top `top_k` and outside the
/// nucleus `top_p` set to zero (transformers' `TopKLogitsWarper` then `TopPLogitsWarper`:
/// tokens are dropped, in ascending order, while the probability mass of the dropped ones
/// stays at most `1 - top_p`; the most likely token always stays).
pub(crate) fn warped_probabilities(
    logits: &[f64],
    top_k: Option<usize>,
    top_p: Option<f64>,
) -> Vec<f64> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    let mut keep = vec![true; logits.len()];
    if let Some(k) = top_k {
        let threshold = logits[order[k.min(order.len()) - 1]];
        for (i, l) in logits.iter().enumerate() {
            keep[i] = *l >= threshold;
        }
    }
    let softmax = |keep: &[bool]| {
        let max = logits
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(l, _)| *l)
            .fold(f64::MIN, f64::max);
        let exp: Vec<f64> = logits
            .iter()
            .zip(keep)
            .map(|(l, k)| if *k { (l - max).exp() } else { 0.0 })
            .collect();
        let sum: f64 = exp.iter().sum();
        exp.into_iter().map(|e| e / sum).collect::<Vec<f64>>()
    };
    if let Some(p) = top_p {
        let probs = softmax(&keep);
        let mut dropped = 0.0;
        for &i in order.iter().rev().take(order.len() - 1) {
            if !keep[i] {
                continue;
            }
            if dropped + probs[i] > 1.0 - p {
                break;
            }
            dropped += probs[i];
            keep[i] = false;
        }
    }
    softmax(&keep)
}

#[cfg(test)]
mod tests {
    use super::warped_probabilities;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn top_k_keeps_the_k_most_likely_and_renormalises() {
        let logits = [0.0f64.ln(), 1.0f64.ln(), 2.0f64.ln(), 3.0f64.ln()];
        let probs = warped_probabilities(&logits, Some(2), None);
        assert!(close(&probs, &[0.0, 0.0, 0.4, 0.6]), "{probs:?}");
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.1, 0.2, 0.3, 0.4: p = 0.65 keeps 0.4 + 0.3 (0.7 ≥ 0.65); dropping
        // 0.3 too would leave 0.4 < 0.65.
        let logits: Vec<f64> = [0.1f64, 0.2, 0.3, 0.4].iter().map(|p| p.ln()).collect();
        let probs = warped_probabilities(&logits, None, Some(0.65));
        assert!(
            close(&probs, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0]),
            "{probs:?}"
        );
        let all = warped_probabilities(&logits, None, Some(1.0));
        assert!(close(&all, &[0.1, 0.2, 0.3, 0.4]), "{all:?}");
        let one = warped_probabilities(&logits, None, Some(0.01));
        assert!(close(&one, &[0.0, 0.0, 0.0, 1.0]), "{one:?}");
    }
}
