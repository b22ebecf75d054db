//! `adapter_summary`: parameter counts per adapter, as AdapterHub reports them.

use std::fmt;

use burn::module::{ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::{AdapterHost, freeze::belongs_to_adapter};

/// One adapter's row of [`AdapterSummary`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummaryRow {
    /// Adapter name.
    pub name: String,
    /// Config architecture (`"bottleneck"`, `"union"`, ...).
    pub architecture: String,
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

struct Counter<'a> {
    path: Vec<String>,
    names: &'a [String],
    per_adapter: Vec<usize>,
    base: usize,
}

impl ModuleVisitor for Counter<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.lazy_shape().num_elements();
        // Heads and fusion layers (`...adapters.a,b...`) count neither as adapter nor as base
        // parameters, as in AdapterHub.
        let is_head = self.path.first().is_some_and(|s| s == "heads")
            || self.path.iter().any(|s| s.contains(','));
        match self
            .names
            .iter()
            .position(|name| belongs_to_adapter(&self.path, name))
        {
            Some(i) => self.per_adapter[i] += n,
            None if is_head => {}
            None => self.base += n,
        }
    }
}

pub(super) fn summarize<M: AdapterHost>(model: &M) -> AdapterSummary {
    let registry = model.registry();
    let names: Vec<String> = registry.names().map(str::to_string).collect();
    let mut counter = Counter {
        path: Vec::new(),
        names: &names,
        per_adapter: vec![0; names.len()],
        base: 0,
    };
    model.visit(&mut counter);
    let active: Vec<&str> = registry.active().map(|s| s.names()).unwrap_or_default();
    let base = counter.base;
    let adapters = names
        .iter()
        .zip(&counter.per_adapter)
        .map(|(name, num_params)| AdapterSummaryRow {
            name: name.clone(),
            architecture: registry
                .config(name)
                .map(|c| c.architecture())
                .unwrap_or("?")
                .to_string(),
            num_params: *num_params,
            percent_of_base: *num_params as f64 / base.max(1) as f64 * 100.0,
            active: active.contains(&name.as_str()),
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
                row.architecture,
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
