//! Checking a setup against the model before it is activated.

use super::AdapterModel;
use crate::composition::AdapterSetup;
use crate::config::CompositionMode;
use crate::error::{Error, Result};
use crate::sites::LinearSite;

/// Checks `setup` against the model: it is valid, its adapters exist, and every `Fuse` block
/// fuses bottleneck adapters through a fusion layer the model has, and every `Stack` of LoRAs
/// fits the projections it runs at.
pub(crate) fn check<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    setup.validate()?;
    if let Some(missing) = setup.names().into_iter().find(|n| !model.has_adapter(n)) {
        return Err(Error::UnknownAdapter(missing.to_string()));
    }
    check_fusions(model, setup)?;
    check_prefix_blocks(model, setup)?;
    check_prompts(model, setup)?;
    check_lora_stacks(model, setup)?;
    check_input_scaling(model, setup)
}

/// Prompts and ReFT interventions act on the whole batch: they run only as the setup's first
/// adapter (AdapterHub applies the first adapter's and silently ignores the others') and not in
/// blocks that give rows different adapters.
fn check_prompts<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    let prompting = |name: &str| {
        model
            .adapter_config(name)
            .is_ok_and(|config| config.prompt_tuning().is_some() || config.reft().is_some())
    };
    let names = setup.names();
    let Some(name) = names.iter().find(|n| prompting(n)) else {
        return Ok(());
    };
    let reason = if setup.has_row_blocks() {
        "it acts on every row, so it cannot run in Parallel, BatchSplit, PerRow or MultiTask"
    } else if setup.first() != Some(*name) {
        "only the setup's first adapter runs one"
    } else if let Some(other) = names.iter().find(|n| *n != name && prompting(n)) {
        return Err(Error::InvalidSetup(format!(
            "`{setup}`: `{name}` and `{other}` both have a prompt or a ReFT intervention; only \
             the first adapter's runs"
        )));
    } else {
        return Ok(());
    };
    Err(Error::InvalidSetup(format!(
        "`{setup}`: `{name}` has a prompt or a ReFT intervention: {reason}"
    )))
}

/// Prefixes only concatenate: AdapterHub's `PrefixTuningLayer` composes them in `Stack`,
/// `Parallel` and `BatchSplit` (and so, here, `PerRow` and `MultiTask`, which routes rows as a
/// `BatchSplit`) and raises in the other blocks.
fn check_prefix_blocks<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    let mixing = matches!(
        setup,
        AdapterSetup::Fuse(_) | AdapterSetup::Split { .. } | AdapterSetup::Average { .. }
    );
    if mixing {
        let prefixed = setup.names().into_iter().find(|name| {
            model
                .adapter_config(name)
                .is_ok_and(|config| config.prefix_tuning().is_some())
        });
        if let Some(name) = prefixed {
            return Err(Error::InvalidSetup(format!(
                "`{setup}`: `{name}` has prefix tuning, which composes only in Stack, Parallel, \
                 BatchSplit, PerRow and MultiTask blocks"
            )));
        }
    }
    setup
        .children()
        .iter()
        .try_for_each(|child| check_prefix_blocks(model, child))
}

/// In a `Stack`, each LoRA after the first module of a projection takes the update so far as its
/// input (AdapterHub's `LoRALinear`), which only fits a projection whose input and output widths
/// agree; AdapterHub fails inside the forward pass otherwise.
fn check_lora_stacks<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    if let AdapterSetup::Stack(children) = setup {
        for site in model.linear_sites() {
            let (d_input, d_output) = site.dims();
            if d_input == d_output {
                continue;
            }
            let steps: Vec<Vec<&str>> = children
                .iter()
                .map(|child| {
                    let names = child.names().into_iter();
                    names.filter(|n| runs_at(site, n)).collect::<Vec<_>>()
                })
                .filter(|step| !step.is_empty())
                .collect();
            let later = steps.iter().skip(1).flatten().find(|name| {
                site.loras()
                    .get(*name)
                    .is_some_and(|l| l.composition_mode() == CompositionMode::Add)
            });
            if let Some(later) = later {
                return Err(Error::InvalidSetup(format!(
                    "`{setup}`: LoRA `{later}` would take the update of `{}` as its input at {} \
                     ({d_input} → {d_output} features), which fits only a square projection",
                    steps[0][0],
                    site.location()
                )));
            }
        }
    }
    setup
        .children()
        .iter()
        .try_for_each(|child| check_lora_stacks(model, child))
}

/// IA3 modules that scale a projection's input combine (`Stack`, `Average`) only with each
/// other there: the others act on its output.
fn check_input_scaling<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    if matches!(setup, AdapterSetup::Stack(_) | AdapterSetup::Average { .. }) {
        let names = setup.names();
        for site in model.linear_sites() {
            let running: Vec<&str> = names.iter().copied().filter(|n| runs_at(site, n)).collect();
            let scales_input =
                |name: &&str| site.loras().get(*name).is_some_and(|l| l.scales_input);
            if let (Some(input), Some(other)) = (
                running.iter().find(|n| scales_input(n)),
                running.iter().find(|n| !scales_input(n)),
            ) {
                return Err(Error::InvalidSetup(format!(
                    "`{setup}`: IA3 `{input}` scales the input of {}, which `{other}` cannot be \
                     combined with there",
                    site.location()
                )));
            }
        }
    }
    setup
        .children()
        .iter()
        .try_for_each(|child| check_input_scaling(model, child))
}

/// Whether adapter `name` has an unmerged module at `site`.
fn runs_at(site: &LinearSite, name: &str) -> bool {
    site.loras().get(name).is_some() && site.merged() != Some(name)
}

fn check_fusions<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    if let Some(key) = setup.fusion_key() {
        let names = setup.names();
        if let Some(name) = names.iter().find(|n| {
            model
                .adapter_config(n)
                .is_ok_and(|c| c.bottleneck().is_none())
        }) {
            return Err(Error::InvalidSetup(format!(
                "`{setup}`: AdapterFusion mixes bottleneck adapters; `{name}` has none"
            )));
        }
        if model.registry().fusion_config(&key).is_none() {
            return Err(Error::UnknownFusion(key.to_string()));
        }
    }
    setup
        .children()
        .iter()
        .try_for_each(|child| check_fusions(model, child))
}
