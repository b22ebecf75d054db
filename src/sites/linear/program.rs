//! What a linear site runs for one setup, resolved against the (unmerged) LoRA/IA3 modules it
//! holds, and running it (AdapterHub's `LoRALinear` composition).

use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::composition::AdapterSetup;
use crate::methods::{LoRA, SharedFactors};
use crate::sites::NamedModules;

/// A setup resolved at one linear site.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Program {
    /// Each slice of the sequence runs its own child (`None`: the plain layer).
    Split {
        children: Vec<Option<Program>>,
        splits: Vec<usize>,
    },
    /// The layer's output combined with the contribution of the modules.
    Update(Update),
}

/// The contribution of modules to a layer's output.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Update {
    /// One module, by index.
    Module(usize),
    /// Each module takes the previous one's contribution as its input.
    Stack(Vec<Update>),
    /// The children's contributions, weighted by their (normalised) factors.
    Average(Vec<(Update, f64)>),
}

/// The modules a program refers to, and the one merged into the weights (skipped).
pub(super) struct Modules<'a> {
    pub loras: &'a NamedModules<LoRA>,
    pub merged: Option<&'a str>,
}

impl Modules<'_> {
    /// Compiles a setup without row blocks; `None` when no unmerged module of it is held here.
    pub fn compile(&self, setup: &AdapterSetup) -> Option<Program> {
        match setup {
            AdapterSetup::Split { children, splits } => {
                let children: Vec<Option<Program>> =
                    children.iter().map(|c| self.compile(c)).collect();
                children
                    .iter()
                    .any(Option::is_some)
                    .then(|| Program::Split {
                        children,
                        splits: splits.clone(),
                    })
            }
            other => self.update(other).map(Program::Update),
        }
    }

    fn update(&self, setup: &AdapterSetup) -> Option<Update> {
        match setup {
            AdapterSetup::Name(name) if self.merged != Some(name.as_str()) => {
                self.loras.position(name.as_str()).map(Update::Module)
            }
            AdapterSetup::Stack(children) => {
                let mut steps: Vec<Update> =
                    children.iter().filter_map(|c| self.update(c)).collect();
                match steps.len() {
                    0 => None,
                    1 => steps.pop(),
                    _ => Some(Update::Stack(steps)),
                }
            }
            AdapterSetup::Average { .. } => {
                let terms: Vec<(Update, f64)> = setup
                    .weighted_children()
                    .into_iter()
                    .filter_map(|(c, factor)| Some((self.update(c)?, factor)))
                    .collect();
                (!terms.is_empty()).then_some(Update::Average(terms))
            }
            // Fuse mixes bottleneck adapters (LoRA-family members are refused when activating);
            // a Split inside another block leaves LoRA sites alone, as a merged module does.
            _ => None,
        }
    }
}

/// Runs programs at one linear site.
pub(super) struct Runner<'a> {
    pub loras: &'a NamedModules<LoRA>,
    pub shared: &'a NamedModules<SharedFactors>,
    pub linear: &'a Linear,
}

impl Runner<'_> {
    /// The layer's output for `input`, adapted as `program` says.
    pub fn run(&self, program: &Program, input: Tensor<3>) -> Tensor<3> {
        match program {
            Program::Split { children, splits } => {
                let [_, seq, _] = input.dims();
                let mut start = 0;
                let mut pieces = Vec::with_capacity(children.len() + 1);
                for (child, len) in children.iter().zip(splits) {
                    let len = (*len).min(seq - start);
                    if len > 0 {
                        let slice = input.clone().narrow(1, start, len);
                        pieces.push(match child {
                            Some(child) => self.run(child, slice),
                            None => self.linear.forward(slice),
                        });
                        start += len;
                    }
                }
                if start < seq {
                    pieces.push(self.linear.forward(input.narrow(1, start, seq - start)));
                }
                Tensor::cat(pieces, 1)
            }
            Program::Update(update) => {
                let (delta, last) = self.delta(update, None, &input);
                let (Some(delta), Some(last)) = (delta, last) else {
                    return self.linear.forward(input);
                };
                let lora = self.loras.at(last);
                // IA3 on the input: the setup's input-scaling modules only (checked on activation).
                if lora.scales_input {
                    return self.linear.forward(input * delta);
                }
                let output = self.linear.forward(input);
                let shared = super::shared_of(self.shared, lora);
                lora.combine_with(output, delta, self.linear, shared)
            }
        }
    }

    /// The contribution of `update` given the contribution so far, and the module that
    /// produced it last.
    fn delta(
        &self,
        update: &Update,
        previous: Option<Tensor<3>>,
        input: &Tensor<3>,
    ) -> (Option<Tensor<3>>, Option<usize>) {
        match update {
            Update::Module(index) => {
                let lora = self.loras.at(*index);
                let shared = super::shared_of(self.shared, lora);
                (Some(lora.delta_with(previous, input, shared)), Some(*index))
            }
            Update::Stack(children) => {
                let (mut delta, mut last) = (previous, None);
                for child in children {
                    let (d, l) = self.delta(child, delta, input);
                    delta = d;
                    last = l.or(last);
                }
                (delta, last)
            }
            Update::Average(terms) => {
                let mut sum: Option<Tensor<3>> = None;
                let mut last = None;
                for (child, factor) in terms {
                    if let (Some(delta), Some(l)) = self.delta(child, previous.clone(), input) {
                        let term = delta.mul_scalar(*factor);
                        sum = Some(match sum {
                            Some(sum) => sum + term,
                            None => term,
                        });
                        last = Some(l);
                    }
                }
                match sum {
                    Some(sum) => (Some(sum), last),
                    None => (previous, None),
                }
            }
        }
    }
}
