//! The attention site: where an attention layer takes key/value prefixes (prefix tuning).

use std::sync::Arc;

use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::NamedModules;
use super::prefix::PrefixStates;
use crate::composition::{ActivePlan, AdapterSetup, Routing, Rows};
use crate::methods::PrefixGate;

/// The prefixes of one attention layer: which adapters reach it, their gates, and what the
/// active setup prepends here (AdapterHub's `PrefixTuningLayer`).
///
/// An attention layer calls [`AttentionSite::forward`] with its keys and values (after any
/// rotary embedding and after joining a key/value cache, before repeating heads for grouped
/// queries), attends over the keys and values it returns and extends its mask with
/// [`PrefixedKeyValues::extend_bias`] or [`PrefixedKeyValues::extend_key_mask`]. With no
/// active prefix it returns its input unchanged.
#[derive(Debug, Clone)]
pub struct AttentionSite {
    layer: usize,
    /// Adapters with a prefix here, and which of their prefix module's layers this is.
    prefixes: Vec<(String, usize)>,
    gates: NamedModules<PrefixGate>,
    plan: Option<Arc<ActivePlan>>,
    /// Per variant of the plan, the entries of `prefixes` it prepends, outermost first.
    programs: Option<Arc<[Vec<usize>]>>,
}

/// Keys and values with the active prefixes prepended, from [`AttentionSite::forward`].
#[derive(Debug, Clone)]
pub struct PrefixedKeyValues {
    /// `[batch, heads, prefix + keys, head_dim]`.
    pub keys: Tensor<4>,
    /// `[batch, heads, prefix + keys, head_dim]`.
    pub values: Tensor<4>,
    /// Prefix positions prepended (the longest, when rows have different prefixes).
    pub prefix_len: usize,
    /// `true` at the prefix positions a row does not have (rows of different adapters),
    /// `[batch, prefix_len]`; `None` when every row has all of them.
    pub padding: Option<Tensor<2, Bool>>,
}

impl AttentionSite {
    /// An empty site in layer `layer`.
    pub fn new(layer: usize) -> Self {
        Self {
            layer,
            prefixes: Vec::new(),
            gates: NamedModules::default(),
            plan: None,
            programs: None,
        }
    }

    /// The layer this site is in.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// The adapters with a prefix here.
    pub fn prefix_names(&self) -> impl Iterator<Item = &str> {
        self.prefixes.iter().map(|(name, _)| name.as_str())
    }

    /// The prefix gates held here (`use_gating`).
    pub fn gates(&self) -> &NamedModules<PrefixGate> {
        &self.gates
    }

    /// Records that adapter `name` prepends the `index`-th layer of its prefix module here.
    pub(crate) fn insert_prefix(&mut self, name: &str, index: usize, gate: Option<PrefixGate>) {
        self.prefixes.retain(|(n, _)| n != name);
        self.prefixes.push((name.to_string(), index));
        if let Some(gate) = gate {
            self.gates.insert(name.to_string(), gate);
        }
        self.compile();
    }

    /// Removes adapter `name`'s prefix, if present here.
    pub(crate) fn remove_prefix(&mut self, name: &str) {
        self.prefixes.retain(|(n, _)| n != name);
        self.gates.remove(name);
        self.compile();
    }

    /// Activates `plan` (`None` deactivates).
    pub(crate) fn set_plan(&mut self, plan: Option<Arc<ActivePlan>>) {
        self.plan = plan;
        self.compile();
    }

    /// Replaces every gate by `f(name, gate)`.
    pub(crate) fn map_gates(&mut self, f: impl FnMut(&String, PrefixGate) -> PrefixGate) {
        let gates = std::mem::take(&mut self.gates);
        self.gates = gates.map_entries(f);
    }

    fn compile(&mut self) {
        let plan = self.plan.as_ref().filter(|plan| !plan.skips(self.layer));
        self.programs = plan.and_then(|plan| {
            let programs: Arc<[Vec<usize>]> = plan
                .variants()
                .iter()
                .map(|variant| self.program(variant))
                .collect();
            programs.iter().any(|p| !p.is_empty()).then_some(programs)
        });
    }

    /// The prefixes a setup without row blocks prepends here: each adapter of a `Stack`
    /// prepends its own before what the earlier ones left, so the last comes first.
    fn program(&self, setup: &AdapterSetup) -> Vec<usize> {
        let mut program: Vec<usize> = setup
            .names()
            .iter()
            .filter_map(|name| self.prefixes.iter().position(|(n, _)| n == name))
            .collect();
        program.reverse();
        program
    }

    /// Prepends the active prefixes to `keys` and `values`.
    ///
    /// `input` is the attention block's input (what the gates read), `states` the prefixes of
    /// this forward from the host's [`PrefixPool`](super::PrefixPool).
    ///
    /// # Shapes
    ///
    /// - keys, values: `[batch, heads, keys, head_dim]`
    /// - input: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        keys: Tensor<4>,
        values: Tensor<4>,
        input: &Tensor<3>,
        states: &PrefixStates,
    ) -> PrefixedKeyValues {
        let unchanged = |keys, values| PrefixedKeyValues {
            keys,
            values,
            prefix_len: 0,
            padding: None,
        };
        let (Some(plan), Some(programs)) = (&self.plan, &self.programs) else {
            return unchanged(keys, values);
        };
        if states.is_empty() {
            return unchanged(keys, values);
        }
        let [batch, heads, _, head_dim] = keys.dims();
        let block = if plan.routes_rows() {
            self.routed_prefix(&plan.routing(batch), programs, input, states)
        } else {
            self.prefix(&programs[0], input.clone(), states, batch)
                .map(|[k, v]| (k, v, None))
        };
        let Some((prefix_keys, prefix_values, padding)) = block else {
            return unchanged(keys, values);
        };
        debug_assert_eq!(prefix_keys.dims()[..2], [batch, heads]);
        debug_assert_eq!(prefix_keys.dims()[3], head_dim);
        PrefixedKeyValues {
            prefix_len: prefix_keys.dims()[2],
            keys: Tensor::cat(vec![prefix_keys, keys], 2),
            values: Tensor::cat(vec![prefix_values, values], 2),
            padding,
        }
    }

    /// The prefix keys and values a program prepends for `rows` rows (whose attention input is
    /// `input`), `[rows, heads, length, head_dim]`; `None` for an empty program.
    fn prefix(
        &self,
        program: &[usize],
        input: Tensor<3>,
        states: &PrefixStates,
        rows: usize,
    ) -> Option<[Tensor<4>; 2]> {
        let parts: Vec<[Tensor<4>; 2]> = program
            .iter()
            .filter_map(|&i| {
                let (name, index) = &self.prefixes[i];
                let [keys, values] = states.layer(name, *index)?;
                let [_, heads, length, head_dim] = keys.dims();
                let full = |t: Tensor<4>| t.expand([rows, heads, length, head_dim]);
                let (keys, values) = (full(keys), full(values));
                Some(match self.gates.get(name.as_str()) {
                    Some(gate) => {
                        let [key_scale, value_scale] = gate.scales(input.clone());
                        [keys * key_scale, values * value_scale]
                    }
                    None => [keys, values],
                })
            })
            .collect();
        match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => {
                let (keys, values): (Vec<_>, Vec<_>) =
                    parts.into_iter().map(|[k, v]| (k, v)).unzip();
                Some([Tensor::cat(keys, 2), Tensor::cat(values, 2)])
            }
        }
    }

    /// The prefixes of a batch whose row groups run different setups: each group's, padded on
    /// the left to the longest with masked positions, in the batch's row order.
    fn routed_prefix(
        &self,
        routing: &Routing,
        programs: &[Vec<usize>],
        input: &Tensor<3>,
        states: &PrefixStates,
    ) -> Option<(Tensor<4>, Tensor<4>, Option<Tensor<2, Bool>>)> {
        let device = input.device();
        let indices = |rows: &[i64]| {
            Tensor::<1, Int>::from_data(TensorData::new(rows.to_vec(), [rows.len()]), &device)
        };
        let groups: Vec<(usize, Option<[Tensor<4>; 2]>)> = routing
            .groups
            .iter()
            .map(|group| {
                let (rows_input, rows) = match &group.rows {
                    Rows::Range { start, len } => (input.clone().narrow(0, *start, *len), *len),
                    Rows::Gather(rows) => (input.clone().select(0, indices(rows)), rows.len()),
                };
                let states = states.rows(&group.rows, &device);
                let prefix = self.prefix(&programs[group.variant], rows_input, &states, rows);
                (rows, prefix)
            })
            .collect();
        let longest = groups
            .iter()
            .filter_map(|(_, p)| p.as_ref().map(|[k, _]| k.dims()[2]))
            .max()?;
        let [_, heads, _, head_dim] = groups
            .iter()
            .find_map(|(_, p)| p.as_ref().map(|[k, _]| k.dims()))?;
        let shape = [heads, longest, head_dim];
        let (padded, pads): (Vec<[Tensor<4>; 2]>, Vec<(usize, usize)>) = groups
            .into_iter()
            .map(|(rows, prefix)| left_padded(prefix, rows, shape, &device))
            .unzip();
        let (keys, values): (Vec<_>, Vec<_>) = padded.into_iter().map(|[k, v]| (k, v)).unzip();
        let padding = missing_positions(&pads, longest, &device);
        Some((
            in_batch_order(Tensor::cat(keys, 0), routing),
            in_batch_order(Tensor::cat(values, 0), routing),
            padding.map(|mask| in_batch_order(mask, routing)),
        ))
    }
}

/// A row group's prefix keys and values padded on the left with zeros to `[rows, heads,
/// longest, head_dim]` (all zeros without a prefix), and `(rows, padded positions)`.
fn left_padded(
    prefix: Option<[Tensor<4>; 2]>,
    rows: usize,
    [heads, longest, head_dim]: [usize; 3],
    device: &burn::tensor::Device,
) -> ([Tensor<4>; 2], (usize, usize)) {
    let length = prefix.as_ref().map_or(0, |[k, _]| k.dims()[2]);
    let pad = longest - length;
    let zeros = || Tensor::<4>::zeros([rows, heads, pad, head_dim], device);
    let padded = match prefix {
        Some(prefix) if pad == 0 => prefix,
        Some(prefix) => prefix.map(|t| {
            let dtype = t.dtype();
            Tensor::cat(vec![zeros().cast(dtype), t], 2)
        }),
        None => [zeros(), zeros()],
    };
    (padded, (rows, pad))
}

/// `true` at each row's padded prefix positions, `[rows, longest]` in the groups' order;
/// `None` when no row is padded.
fn missing_positions(
    pads: &[(usize, usize)],
    longest: usize,
    device: &burn::tensor::Device,
) -> Option<Tensor<2, Bool>> {
    if pads.iter().all(|(_, pad)| *pad == 0) {
        return None;
    }
    let mask: Vec<bool> = pads
        .iter()
        .flat_map(|&(rows, pad)| (0..rows).flat_map(move |_| (0..longest).map(move |p| p < pad)))
        .collect();
    let batch = mask.len() / longest;
    Some(Tensor::from_data(
        TensorData::new(mask, [batch, longest]),
        device,
    ))
}

/// `t` (rows in the groups' order) in the batch's row order.
fn in_batch_order<const D: usize, K: burn::tensor::kind::Basic>(
    t: Tensor<D, K>,
    routing: &Routing,
) -> Tensor<D, K> {
    match &routing.restore {
        Some(order) => {
            let data = TensorData::new(order.clone(), [order.len()]);
            let device = t.device();
            t.select(0, Tensor::<1, Int>::from_data(data, &device))
        }
        None => t,
    }
}

impl PrefixedKeyValues {
    /// `bias` (`[batch, 1, queries, keys]`, added to the attention scores) extended over the
    /// prefix positions: 0 where a row has the prefix, −∞ where it does not, so that those
    /// positions drop out even of a query whose keys are all masked. A missing bias stays
    /// missing unless rows lack prefix positions.
    pub fn extend_bias(&self, bias: Option<Tensor<4>>) -> Option<Tensor<4>> {
        if self.prefix_len == 0 {
            return bias;
        }
        let [batch, _, total, _] = self.keys.dims();
        let device = self.keys.device();
        let (bias, queries) = match bias {
            Some(bias) => {
                let queries = bias.dims()[2];
                (bias, queries)
            }
            None => {
                self.padding.as_ref()?;
                let tokens = total - self.prefix_len;
                let zeros = Tensor::<4>::zeros([batch, 1, 1, tokens], &device);
                (zeros.cast(self.keys.dtype()), 1)
            }
        };
        let prefix =
            Tensor::<4>::zeros([batch, 1, queries, self.prefix_len], &device).cast(bias.dtype());
        Some(Tensor::cat(vec![self.mask_missing(prefix), bias], 3))
    }

    /// `scores` (`[batch, heads, queries, prefix + keys]`, or just the prefix's columns) with
    /// −∞ at the prefix positions a row does not have: for hosts that mask scores rather than
    /// add a bias.
    pub fn mask_missing(&self, scores: Tensor<4>) -> Tensor<4> {
        let Some(padding) = &self.padding else {
            return scores;
        };
        let [batch, heads, queries, keys] = scores.dims();
        let mut mask = padding.clone();
        if keys > self.prefix_len {
            let tokens = TensorData::new(
                vec![false; batch * (keys - self.prefix_len)],
                [batch, keys - self.prefix_len],
            );
            let tokens = Tensor::<2, Bool>::from_data(tokens, &scores.device());
            mask = Tensor::cat(vec![mask, tokens], 1);
        }
        let mask = mask
            .reshape([batch, 1, 1, keys])
            .expand([batch, heads, queries, keys]);
        scores.mask_fill(mask, f64::NEG_INFINITY)
    }

    /// A key mask (`[batch, keys]`, `true` = masked) extended over the prefix positions, which
    /// it leaves visible (see [`PrefixedKeyValues::mask_missing`] for the positions a row does
    /// not have).
    pub fn extend_key_mask(&self, mask: Tensor<2, Bool>) -> Tensor<2, Bool> {
        if self.prefix_len == 0 {
            return mask;
        }
        let [batch, _] = mask.dims();
        let data = TensorData::new(
            vec![false; batch * self.prefix_len],
            [batch, self.prefix_len],
        );
        let prefix = Tensor::<2, Bool>::from_data(data, &mask.device());
        Tensor::cat(vec![prefix, mask], 1)
    }

    /// A query-by-key mask (`[batch, queries, keys]`, `true` = masked) extended over the prefix
    /// positions, which every query sees.
    pub fn extend_attention_mask(&self, mask: Tensor<3, Bool>) -> Tensor<3, Bool> {
        if self.prefix_len == 0 {
            return mask;
        }
        let [batch, queries, _] = mask.dims();
        let shape = [batch, queries, self.prefix_len];
        let data = TensorData::new(vec![false; shape.iter().product()], shape);
        let prefix = Tensor::<3, Bool>::from_data(data, &mask.device());
        Tensor::cat(vec![prefix, mask], 2)
    }
}

container_site_module!(AttentionSite, gates);
