//! `init_prompt_from_tokens`: a prompt started from token embeddings (AdapterHub's
//! `prompt_init = "from_string"`, with the tokenizing left to the caller).

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};

use super::AdapterHost;
use crate::error::{Error, Result};

/// Sets adapter `name`'s prompt to the word embeddings of `tokens`, repeated to the prompt's
/// length and cut there (AdapterHub's `from_string`). The prompt keeps its trainability.
pub(crate) fn init_from_tokens<M: AdapterHost>(
    model: &mut M,
    name: &str,
    tokens: &[usize],
) -> Result<()> {
    if !model.registry().names().any(|n| n == name) {
        return Err(Error::UnknownAdapter(name.to_string()));
    }
    let no_prompt = || Error::InvalidSetup(format!("`{name}` has no prompt tuning"));
    let site = model.embedding_site().ok_or_else(no_prompt)?;
    let prompt = site.prompts().get(name).ok_or_else(no_prompt)?;
    let embeddings = model.word_embeddings().ok_or_else(|| {
        Error::Unsupported("prompts from tokens on a host without word embeddings".into())
    })?;
    let [vocab, _] = embeddings.dims();
    if tokens.is_empty() {
        return Err(Error::input("tokens", "empty: a prompt needs at least one"));
    }
    if let Some(bad) = tokens.iter().find(|t| **t >= vocab) {
        return Err(Error::input(
            "tokens",
            format!("token {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    let ids: Vec<i64> = tokens
        .iter()
        .cycle()
        .take(prompt.len())
        .map(|t| *t as i64)
        .collect();
    let device = embeddings.device();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [prompt.len()]), &device);
    let values = embeddings.select(0, ids).detach();
    let require_grad = prompt.embedding.is_require_grad();
    let site = model.embedding_site_mut().ok_or_else(no_prompt)?;
    site.map_prompts(|key, mut prompt| {
        if key == name {
            prompt.embedding = Param::from_tensor(values.clone()).set_require_grad(require_grad);
        }
        prompt
    });
    Ok(())
}
