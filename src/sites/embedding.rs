//! The embedding site: where the embedded input takes a prompt (prompt tuning) and an
//! invertible adapter, whose inverse a language-model head applies before its output embeddings.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::kind::Basic;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::NamedModules;
use crate::composition::ActivePlan;
use crate::methods::{InvertibleAdapter, PromptTuning};

/// The modules of a host's embeddings: prompts (AdapterHub's `PromptTuningLayer`) and
/// invertible adapters (its `InvertibleAdapterLayer`).
///
/// As in AdapterHub, both belong to the active setup's first adapter: its invertible adapter
/// transforms the embedded input, then its prompt joins it (the model API refuses setups where
/// another adapter would prompt). A host calls [`EmbeddingSite::prompt`] before its layers to
/// learn where the prompt goes, [`EmbeddingSite::transform`] (the invertible adapter) then
/// [`EmbeddingSite::forward`] (the prompt) on the embedded input, extends its
/// mask and positions with the [`PromptPlacement`], drops the prompt's positions from its
/// outputs ([`PromptPlacement::strip`]), and inverts the adapter before its own output
/// embeddings ([`EmbeddingSite::invert`]) and its language-model heads'
/// ([`EmbeddingSite::invertible`]).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingSite {
    modules: EmbeddingModules,
    plan: Option<Arc<ActivePlan>>,
    /// The prompt the active setup runs.
    active_prompt: Option<usize>,
    /// The invertible adapter the active setup runs.
    active_invertible: Option<usize>,
}

/// The site's parameters, under AdapterHub's attribute names.
#[derive(Module, Debug, Default)]
struct EmbeddingModules {
    prompt_tunings: NamedModules<PromptTuning>,
    invertible_adapters: NamedModules<InvertibleAdapter>,
}

/// Where an active prompt sits in each row of the combined sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptPlacement {
    /// Prompt positions.
    pub len: usize,
    /// Per row, the position of the prompt's first one.
    offsets: Vec<usize>,
}

impl EmbeddingSite {
    /// An empty site.
    pub fn new() -> Self {
        Self::default()
    }

    /// The prompts held here, by adapter name.
    pub fn prompts(&self) -> &NamedModules<PromptTuning> {
        &self.modules.prompt_tunings
    }

    /// The invertible adapters held here, by adapter name.
    pub fn invertibles(&self) -> &NamedModules<InvertibleAdapter> {
        &self.modules.invertible_adapters
    }

    /// Stores `prompt` under `name`.
    pub(crate) fn insert(&mut self, name: &str, prompt: PromptTuning) {
        self.modules.prompt_tunings.insert(name.to_string(), prompt);
        self.compile();
    }

    /// Stores `invertible` under `name`.
    pub(crate) fn insert_invertible(&mut self, name: &str, invertible: InvertibleAdapter) {
        let invertibles = &mut self.modules.invertible_adapters;
        invertibles.insert(name.to_string(), invertible);
        self.compile();
    }

    /// Removes the prompt and the invertible adapter of `name`, if present.
    pub(crate) fn remove(&mut self, name: &str) {
        let prompt = self.modules.prompt_tunings.remove(name);
        let invertible = self.modules.invertible_adapters.remove(name);
        if prompt.is_some() || invertible.is_some() {
            self.compile();
        }
    }

    /// Activates `plan` (`None` deactivates).
    pub(crate) fn set_plan(&mut self, plan: Option<Arc<ActivePlan>>) {
        self.plan = plan;
        self.compile();
    }

    /// Replaces every prompt by `f(name, prompt)`.
    pub(crate) fn map_prompts(&mut self, f: impl FnMut(&String, PromptTuning) -> PromptTuning) {
        let prompts = std::mem::take(&mut self.modules.prompt_tunings);
        self.modules.prompt_tunings = prompts.map_entries(f);
    }

    /// Replaces every invertible adapter by `f(name, adapter)`.
    pub(crate) fn map_invertibles(
        &mut self,
        f: impl FnMut(&String, InvertibleAdapter) -> InvertibleAdapter,
    ) {
        let invertibles = std::mem::take(&mut self.modules.invertible_adapters);
        self.modules.invertible_adapters = invertibles.map_entries(f);
    }

    fn compile(&mut self) {
        let first = self.plan.as_ref().and_then(|plan| plan.setup().first());
        self.active_prompt = first.and_then(|name| self.modules.prompt_tunings.position(name));
        self.active_invertible =
            first.and_then(|name| self.modules.invertible_adapters.position(name));
    }

    /// The active prompt's length, if one is active.
    pub fn active_len(&self) -> Option<usize> {
        self.active_prompt
            .map(|index| self.modules.prompt_tunings.at(index).len())
    }

    /// The active invertible adapter, if the active setup's first adapter has one: what a
    /// language-model head inverts before its output embeddings.
    pub fn invertible(&self) -> Option<&InvertibleAdapter> {
        self.active_invertible
            .map(|index| self.modules.invertible_adapters.at(index))
    }

    /// `embedded` through the active invertible adapter, if any.
    ///
    /// # Shapes
    ///
    /// - embedded: `[batch, seq, hidden]`, output: the same shape.
    pub fn transform(&self, embedded: Tensor<3>) -> Tensor<3> {
        match self.invertible() {
            Some(invertible) => invertible.forward(embedded),
            None => embedded,
        }
    }

    /// `hidden` through the active invertible adapter's inverse, if any: what a host's own
    /// output embeddings read.
    ///
    /// # Shapes
    ///
    /// - hidden: `[batch, seq, hidden]`, output: the same shape.
    pub fn invert(&self, hidden: Tensor<3>) -> Tensor<3> {
        match self.invertible() {
            Some(invertible) => invertible.inverse(hidden),
            None => hidden,
        }
    }

    /// Where the active prompt goes in a batch of `batch` rows, if one is active: before every
    /// token, or after each row's first token (`prefix_after_bos`; the first real token by
    /// `attention_mask` when given, so that left-padded rows take it after their own first
    /// token; AdapterHub's encoders put it at position 1).
    pub fn prompt(
        &self,
        batch: usize,
        attention_mask: Option<&Tensor<2, Int>>,
    ) -> Option<PromptPlacement> {
        let prompt = self.modules.prompt_tunings.at(self.active_prompt?);
        let offsets = match (prompt.offset(), attention_mask) {
            (0, _) | (_, None) => vec![prompt.offset(); batch],
            (after, Some(mask)) => first_tokens(mask)
                .into_iter()
                .map(|first| first + after)
                .collect(),
        };
        Some(PromptPlacement {
            len: prompt.len(),
            offsets,
        })
    }

    /// `embedded` with the active prompt inserted where `placement` says.
    ///
    /// # Shapes
    ///
    /// - embedded: `[batch, seq, hidden]`
    /// - output: `[batch, prompt + seq, hidden]`
    pub fn forward(&self, embedded: Tensor<3>, placement: &PromptPlacement) -> Tensor<3> {
        let Some(index) = self.active_prompt else {
            return embedded;
        };
        let [batch, _, hidden] = embedded.dims();
        let prompt = self.modules.prompt_tunings.at(index).embedding.val();
        let prompt = prompt
            .unsqueeze::<3>()
            .expand([batch, placement.len, hidden]);
        placement.insert(embedded, prompt)
    }
}

/// Each row's first position whose mask is 1 (the sequence's length for an all-padding row),
/// read on the host.
fn first_tokens(mask: &Tensor<2, Int>) -> Vec<usize> {
    let [_, seq] = mask.dims();
    let values = mask
        .to_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap_or_default();
    values
        .chunks(seq.max(1))
        .map(|row| row.iter().position(|v| *v != 0).unwrap_or(seq))
        .collect()
}

impl PromptPlacement {
    /// The offset every row shares, if they do.
    fn uniform(&self) -> Option<usize> {
        let first = *self.offsets.first()?;
        self.offsets.iter().all(|o| *o == first).then_some(first)
    }

    /// `tokens` (`[batch, seq, ...]`) with `prompt` (`[batch, len, ...]`) inserted at each
    /// row's offset.
    fn insert<const D: usize, K: Basic>(
        &self,
        tokens: Tensor<D, K>,
        prompt: Tensor<D, K>,
    ) -> Tensor<D, K> {
        let seq = tokens.dims()[1];
        if let Some(at) = self.uniform() {
            let [head, tail] = split_at(tokens, at.min(seq));
            return concat(vec![head, Some(prompt), tail]);
        }
        // Per row: token j before the offset, prompt j - offset, then token j - len.
        let source = Tensor::cat(vec![tokens, prompt], 1);
        let index: Vec<i64> = self
            .offsets
            .iter()
            .flat_map(|&at| {
                let at = at.min(seq);
                (0..seq + self.len).map(move |j| match j {
                    _ if j < at => j,
                    _ if j < at + self.len => seq + j - at,
                    _ => j - self.len,
                } as i64)
            })
            .collect();
        gather_rows(source, index, seq + self.len)
    }

    /// An attention mask (`[batch, seq]`, 1 = token) with ones at the prompt's positions.
    pub fn extend_mask(&self, mask: Tensor<2, Int>) -> Tensor<2, Int> {
        let [batch, _] = mask.dims();
        let ones = Tensor::<2, Int>::ones([batch, self.len], &mask.device());
        self.insert(mask, ones)
    }

    /// An attention mask (`[batch, seq, seq]`, `true` = a query must not see a key) of the
    /// combined sequence: every query sees the prompt, and the prompt's queries see only the
    /// prompt (so a causal mask stays causal).
    pub fn extend_attention_mask(&self, mask: Tensor<3, Bool>) -> Tensor<3, Bool> {
        let [batch, _, seq] = mask.dims();
        let device = mask.device();
        let blind = Tensor::<3, Bool>::full([batch, self.len, seq], true, &device);
        let rows = self.insert(mask, blind).swap_dims(1, 2);
        let seen = Tensor::<3, Bool>::full([batch, self.len, seq + self.len], false, &device);
        self.insert(rows, seen).swap_dims(1, 2)
    }

    /// Position ids (`[batch, seq]`) of the combined sequence: the prompt takes the positions
    /// after the token before it (from 0 at the start), and the tokens after it move up by its
    /// length.
    pub fn extend_positions(&self, positions: Tensor<2, Int>) -> Tensor<2, Int> {
        let [batch, seq] = positions.dims();
        let device = positions.device();
        let values = positions
            .to_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap_or_default();
        let len = self.len as i64;
        let combined: Vec<i64> = values
            .chunks(seq.max(1))
            .zip(&self.offsets)
            .flat_map(|(row, &at)| {
                let at = at.min(seq);
                let start = if at == 0 { 0 } else { row[at - 1] + 1 };
                let head = row[..at].iter().copied();
                let prompt = (0..len).map(move |i| start + i);
                let tail = row[at..].iter().map(move |p| p + len);
                head.chain(prompt).chain(tail).collect::<Vec<_>>()
            })
            .collect();
        let data = TensorData::new(combined, [batch, seq + self.len]);
        Tensor::from_data(data, &device)
    }

    /// `hidden` without the prompt's positions.
    ///
    /// # Shapes
    ///
    /// - hidden: `[batch, prompt + seq, width]`, output: `[batch, seq, width]`
    pub fn strip(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [_, total, _] = hidden.dims();
        let seq = total - self.len;
        if let Some(at) = self.uniform() {
            let [head, rest] = split_at(hidden, at.min(seq));
            let rest = rest.expect("the prompt's positions follow");
            let [_, tail] = split_at(rest, self.len);
            return concat(vec![head, tail]);
        }
        let index: Vec<i64> = self
            .offsets
            .iter()
            .flat_map(|&at| {
                let at = at.min(seq);
                (0..seq).map(move |j| if j < at { j } else { j + self.len } as i64)
            })
            .collect();
        gather_rows(hidden, index, seq)
    }
}

/// `source`'s positions `index` (`batch · width` row-major entries) along dimension 1.
fn gather_rows<const D: usize, K: Basic>(
    source: Tensor<D, K>,
    index: Vec<i64>,
    width: usize,
) -> Tensor<D, K> {
    let dims = source.dims();
    let batch = dims[0];
    let device = source.device();
    let index = Tensor::<2, Int>::from_data(TensorData::new(index, [batch, width]), &device);
    let mut shape = dims;
    shape[1] = width;
    let index: Tensor<D, Int> = index
        .reshape(expanded_shape::<D>(batch, width))
        .expand(shape);
    source.gather(1, index)
}

/// `[batch, width, 1, ...]` of rank `D`.
fn expanded_shape<const D: usize>(batch: usize, width: usize) -> [usize; D] {
    let mut shape = [1; D];
    shape[0] = batch;
    shape[1] = width;
    shape
}

/// `t` split along dimension 1 before position `at`; an empty part is `None` (burn has no
/// empty narrows).
fn split_at<const D: usize, K: Basic>(t: Tensor<D, K>, at: usize) -> [Option<Tensor<D, K>>; 2] {
    let len = t.dims()[1];
    match at {
        0 => [None, Some(t)],
        _ if at >= len => [Some(t), None],
        _ => [
            Some(t.clone().narrow(1, 0, at)),
            Some(t.narrow(1, at, len - at)),
        ],
    }
}

/// The present parts concatenated along dimension 1.
fn concat<const D: usize, K: Basic>(parts: Vec<Option<Tensor<D, K>>>) -> Tensor<D, K> {
    let parts: Vec<Tensor<D, K>> = parts.into_iter().flatten().collect();
    match parts.len() {
        1 => parts.into_iter().next().expect("one part"),
        _ => Tensor::cat(parts, 1),
    }
}

container_site_module!(EmbeddingSite, modules);
