//! `adapter_summary`: parameter counts per adapter, as AdapterHub reports them.

use std::fmt;

use burn::module::Module;

use super::AdapterHost;
use crate::config::Architecture;

/// One adapter's row of [`AdapterSummary`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummaryRow {
    /// Adapter name.
    pub name: String,
    /// Config architecture.
    pub architecture: Architecture,
    /// Number of parameters of the adapter (all sites).
    pub num_params: usize,
    /// `num_params` as a percentage of the base model's parameters.
    pub percent_of_base: f64,
    /// Whether the adapter is part of the active setup.
    pub active: bool,
    /// Whether the adapter is configured to train (see [`AdapterRegistry::is_trainable`]).
    ///
    /// [`AdapterRegistry::is_trainable`]: super::AdapterRegistry::is_trainable
    pub trainable: bool,
}

/// Parameter counts of a model's adapters (AdapterHub's `adapter_summary`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    /// One row per adapter, in the order they were added.
    pub adapters: Vec<AdapterSummaryRow>,
    /// Parameters of the model without adapters and heads.
    pub base_params: usize,
    /// Whether the base model is configured to train.
    pub base_trainable: bool,
}

/// Parameters of the MTL-LoRA factors adapter `name` shares, at every site.
fn shared_params<M: AdapterHost>(model: &M, name: &str) -> usize {
    model
        .linear_sites()
        .filter_map(|site| site.loras().get(name).and_then(|lora| site.shared_of(lora)))
        .map(Module::num_params)
        .sum()
}

/// VeRA's frozen matrices as adapter `name` holds them (a slice at every module) and as they
/// count (once, at the largest module's shape, as AdapterHub counts its shared matrices).
fn vera_matrices<M: AdapterHost>(model: &M, name: &str) -> (usize, usize) {
    let sizes: Vec<[usize; 2]> = model
        .linear_sites()
        .filter_map(|site| site.loras().get(name).filter(|l| l.vera.is_some()))
        .map(|lora| [&lora.lora_a, &lora.lora_b].map(|m| m.as_ref().map_or(0, Module::num_params)))
        .collect();
    let held = sizes.iter().map(|[a, b]| a + b).sum();
    let largest = |i: usize| sizes.iter().map(|s| s[i]).max().unwrap_or(0);
    (held, largest(0) + largest(1))
}

/// Parameters adapter `name` holds itself at every site.
fn own_params<M: AdapterHost>(model: &M, name: &str) -> usize {
    let residual: usize = model
        .residual_sites()
        .filter_map(|site| site.adapters().get(name))
        .map(Module::num_params)
        .sum();
    let shared = model
        .shared_parameters()
        .and_then(|shared| shared.phm().get(name))
        .map_or(0, Module::num_params);
    let linear: usize = model
        .linear_sites()
        .filter_map(|site| site.loras().get(name))
        .map(Module::num_params)
        .sum();
    let gates: usize = model
        .attention_sites()
        .filter_map(|site| site.gates().get(name))
        .map(Module::num_params)
        .sum();
    let prefix = model
        .prefix_pool()
        .and_then(|pool| pool.prefixes().get(name))
        .map_or(0, Module::num_params);
    let prompt = model
        .embedding_site()
        .and_then(|site| site.prompts().get(name))
        .map_or(0, Module::num_params);
    let invertible = model
        .embedding_site()
        .and_then(|site| site.invertibles().get(name))
        .map_or(0, Module::num_params);
    let reft: usize = model
        .hidden_sites()
        .filter_map(|site| site.refts().get(name))
        .map(reft_params)
        .sum();
    residual + shared + linear + gates + prefix + prompt + invertible + reft
}

/// A ReFT module's parameters as AdapterHub counts them: an orthogonal projection's `base`
/// buffer is not one.
fn reft_params(reft: &crate::methods::ReftModule) -> usize {
    let bases: usize = reft
        .units
        .iter()
        .filter_map(|unit| match &unit.projection {
            crate::methods::ReftProjection::Orthogonal(o) => Some(o.base.num_params()),
            crate::methods::ReftProjection::Plain(_) => None,
        })
        .sum();
    reft.num_params() - bases
}

/// Parameters of the fusion layers and heads, which count neither as adapter nor as base
/// parameters, as in AdapterHub, and the shared MTL-LoRA factors (counted in each sharing
/// adapter's row, and once here).
fn other_params<M: AdapterHost>(model: &M) -> usize {
    let fusions: usize = model
        .residual_sites()
        .flat_map(|site| site.fusions().iter())
        .map(|(_, fusion)| fusion.num_params())
        .sum();
    let heads = model.heads().map_or(0, Module::num_params);
    let shared: usize = model
        .linear_sites()
        .flat_map(|site| site.shared().iter())
        .map(|(_, factors)| factors.num_params())
        .sum();
    fusions + heads + shared
}

pub(super) fn summarize<M: AdapterHost>(model: &M) -> AdapterSummary {
    let registry = model.registry();
    let own: Vec<(&str, usize)> = registry
        .names()
        .map(|name| (name, own_params(model, name)))
        .collect();
    let adapters_total: usize = own.iter().map(|(_, n)| n).sum();
    // A sharing adapter's row counts the factors it shares (`other_params` counts them once),
    // and a VeRA adapter's its matrices once.
    let counts: Vec<(&str, usize)> = own
        .into_iter()
        .map(|(name, n)| {
            let (vera_slices, vera_shared) = vera_matrices(model, name);
            (
                name,
                n + shared_params(model, name) - vera_slices + vera_shared,
            )
        })
        .collect();
    let base = model.num_params() - adapters_total - other_params(model);
    let active: Vec<&str> = registry.active().map(|s| s.names()).unwrap_or_default();
    let adapters = counts
        .iter()
        .map(|(name, num_params)| AdapterSummaryRow {
            name: name.to_string(),
            architecture: registry
                .config(name)
                .map_or(Architecture::Bottleneck, |c| c.architecture()),
            num_params: *num_params,
            percent_of_base: *num_params as f64 / base.max(1) as f64 * 100.0,
            active: active.contains(name),
            trainable: registry.is_trainable(name),
        })
        .collect();
    AdapterSummary {
        adapters,
        base_params: base,
        base_trainable: registry.is_base_trainable(),
    }
}

/// `1234567` → `1,234,567`
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for AdapterSummary {
    /// The same 80-column table AdapterHub prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = |f: &mut fmt::Formatter<'_>, c: &str| writeln!(f, "{}", c.repeat(80));
        let flag = |b: bool| if b { "1" } else { "0" };
        rule(f, "=")?;
        writeln!(
            f,
            "{:<25}{:<15}{:>12}{:>12}{:>8}{:>8}",
            "Name", "Architecture", "#Param", "%Param", "Active", "Train"
        )?;
        rule(f, "-")?;
        for row in &self.adapters {
            writeln!(
                f,
                "{:<25}{:<15}{:>12}{:>12.3}{:>8}{:>8}",
                row.name,
                row.architecture.name(),
                thousands(row.num_params),
                row.percent_of_base,
                flag(row.active),
                flag(row.trainable)
            )?;
        }
        rule(f, "-")?;
        writeln!(
            f,
            "{:<25}{:<15}{:>12}{:>12.3}{:>8}{:>8}",
            "Full model",
            "",
            thousands(self.base_params),
            100.0,
            "",
            flag(self.base_trainable)
        )?;
        write!(f, "{}", "=".repeat(80))
    }
}
