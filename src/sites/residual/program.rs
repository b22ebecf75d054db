//! What a residual site runs for one setup, resolved against the adapters and fusion layers it
//! holds (compiled when the setup or the site changes), and running it (AdapterHub's
//! `compose_*` of `BottleneckLayer`).

use burn::nn::LayerNorm;
use burn::tensor::Tensor;

use crate::composition::AdapterSetup;
use crate::methods::{Bottleneck, BottleneckInput, Fusion, apply_norm};
use crate::names::FusionKey;
use crate::sites::{NamedModules, SharedParameters};

/// A setup resolved at one site: adapters and fusion layers by index; what the site does not
/// hold is left out.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    /// One adapter, after its own pre-forward when it is a direct child of a `Stack` (or the
    /// whole setup), as AdapterHub's `compose_stack` does.
    Adapter {
        index: usize,
        pre_forward: bool,
    },
    Stack(Vec<Step>),
    /// AdapterFusion: the pre-forward of adapter `last` gives the query; each child's up
    /// projection is fused by layer `fusion`.
    Fuse {
        fusion: usize,
        last: usize,
        children: Vec<Step>,
    },
    /// The pre-forward of adapter `first`, then each child on its slice of the sequence.
    Split {
        first: usize,
        children: Vec<Option<Step>>,
        splits: Vec<usize>,
    },
    /// The pre-forward of adapter `first`, then the children's outputs, each weighted by its
    /// (normalised) factor; a child holding nothing here passes the state on unchanged.
    Average {
        first: usize,
        children: Vec<(Option<Step>, f64)>,
    },
}

/// The modules a program refers to by index.
pub(super) struct Modules<'a> {
    pub adapters: &'a NamedModules<Bottleneck>,
    pub fusions: &'a NamedModules<Fusion, FusionKey>,
}

impl Modules<'_> {
    /// Compiles a setup without row blocks; `None` when no adapter of it is held here.
    pub fn compile(&self, setup: &AdapterSetup) -> Option<Step> {
        match setup {
            // A single name runs as a one-element Stack, as in AdapterHub.
            AdapterSetup::Name(_) => self.compile_stack(std::slice::from_ref(setup)),
            block => self.compile_block(block),
        }
    }

    fn compile_block(&self, setup: &AdapterSetup) -> Option<Step> {
        match setup {
            AdapterSetup::Name(name) => Some(Step::Adapter {
                index: self.adapters.position(name.as_str())?,
                pre_forward: false,
            }),
            AdapterSetup::Stack(children) => self.compile_stack(children),
            AdapterSetup::Fuse(children) => Some(Step::Fuse {
                fusion: self.fusions.position(&setup.fusion_key()?)?,
                last: self.adapters.position(setup.last()?)?,
                children: children
                    .iter()
                    .filter_map(|c| self.compile_block(c))
                    .collect(),
            }),
            AdapterSetup::Split { children, splits } => Some(Step::Split {
                first: self.first(setup)?,
                children: children.iter().map(|c| self.compile_block(c)).collect(),
                splits: splits.clone(),
            }),
            AdapterSetup::Average { .. } => Some(Step::Average {
                first: self.first(setup)?,
                children: setup
                    .weighted_children()
                    .into_iter()
                    .map(|(c, factor)| (self.compile_block(c), factor))
                    .collect(),
            }),
            // Row blocks are resolved into variants before compiling.
            AdapterSetup::Parallel(_)
            | AdapterSetup::BatchSplit { .. }
            | AdapterSetup::PerRow(_)
            | AdapterSetup::MultiTask { .. } => None,
        }
    }

    fn compile_stack(&self, children: &[AdapterSetup]) -> Option<Step> {
        let steps: Vec<Step> = children
            .iter()
            .filter_map(|child| match child {
                AdapterSetup::Name(name) => Some(Step::Adapter {
                    index: self.adapters.position(name.as_str())?,
                    pre_forward: true,
                }),
                block => self.compile_block(block),
            })
            .collect();
        match steps.len() {
            0 => None,
            1 => steps.into_iter().next(),
            _ => Some(Step::Stack(steps)),
        }
    }

    /// The setup's first adapter held here (whose pre-forward a block applies, AdapterHub's
    /// `pre_block`).
    fn first(&self, setup: &AdapterSetup) -> Option<usize> {
        setup
            .names()
            .into_iter()
            .find_map(|name| self.adapters.position(name))
    }
}

/// The tensors threaded through a program (AdapterHub's `BottleneckState`).
#[derive(Clone)]
struct State {
    /// The running hidden state.
    hidden: Tensor<3>,
    /// The sublayer's residual input.
    input: Tensor<3>,
    /// The residual of the next adapter (set by pre-forward).
    residual: Tensor<3>,
    /// The up projection of the last adapter that ran (what Fuse mixes), if `keep_up`.
    up: Option<Tensor<3>>,
    /// Whether a Fuse reads `up`; otherwise it is not kept.
    keep_up: bool,
    /// The last adapter that ran (its post-forward ends the site).
    last: Option<usize>,
}

/// Runs programs at one site.
pub(super) struct Runner<'a> {
    pub modules: Modules<'a>,
    pub layer_norm: Option<&'a LayerNorm>,
    pub shared: &'a SharedParameters,
}

impl Runner<'_> {
    /// The site's output for sublayer output `hidden` and residual input `residual`.
    pub fn run(&self, step: &Step, hidden: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let state = State {
            hidden: hidden.clone(),
            input: residual.clone(),
            residual: residual.clone(),
            up: None,
            keep_up: false,
            last: None,
        };
        let state = self.exec(step, state);
        match state.last {
            Some(last) => {
                self.adapter(last)
                    .post_forward(state.hidden, hidden, state.input, self.layer_norm)
            }
            None => apply_norm(self.layer_norm, hidden + residual),
        }
    }

    fn adapter(&self, index: usize) -> &Bottleneck {
        self.modules.adapters.at(index)
    }

    fn exec(&self, step: &Step, state: State) -> State {
        match step {
            Step::Adapter { index, pre_forward } => {
                let state = if *pre_forward {
                    self.pre_forward(*index, state)
                } else {
                    state
                };
                self.single(*index, state)
            }
            Step::Stack(children) => children
                .iter()
                .fold(state, |state, child| self.exec(child, state)),
            Step::Fuse {
                fusion,
                last,
                children,
            } => self.fuse(*fusion, *last, children, state),
            Step::Split {
                first,
                children,
                splits,
            } => self.split(self.pre_forward(*first, state), children, splits),
            Step::Average { first, children } => {
                self.average(self.pre_forward(*first, state), children)
            }
        }
    }

    /// The adapter's pre-forward: its input and residual from the running state.
    fn pre_forward(&self, index: usize, state: State) -> State {
        let BottleneckInput { hidden, residual } = self.adapter(index).pre_forward(
            state.hidden.clone(),
            state.input.clone(),
            self.layer_norm,
        );
        State {
            hidden,
            residual,
            ..state
        }
    }

    /// One adapter on the current state (AdapterHub's `compose_single`).
    fn single(&self, index: usize, state: State) -> State {
        let (name, adapter) = self.modules.adapters.entry(index);
        let up = adapter.up_projection(&state.hidden, self.shared.phm().get(name));
        let kept = state.keep_up.then(|| up.clone());
        let delta = adapter.gate_and_drop(up, &state.hidden);
        State {
            hidden: adapter.finish(delta, state.residual.clone()),
            up: kept,
            last: Some(index),
            ..state
        }
    }

    /// AdapterFusion: the last adapter's pre-forward gives the query; every child runs on the
    /// same input and the fusion layer attends over their up projections.
    fn fuse(&self, fusion: usize, last: usize, children: &[Step], state: State) -> State {
        let fusion = self.modules.fusions.at(fusion);
        let query_before_ln = state.hidden.clone();
        let state = self.pre_forward(last, state);
        let query = if fusion.query_before_ln {
            query_before_ln
        } else {
            state.hidden.clone()
        };
        let ups: Vec<Tensor<3>> = children
            .iter()
            .filter_map(|child| {
                let state = State {
                    keep_up: true,
                    ..state.clone()
                };
                self.exec(child, state).up
            })
            .collect();
        if ups.is_empty() {
            return state;
        }
        let hidden = fusion.forward(query, ups, state.residual.clone());
        State {
            hidden,
            last: Some(last),
            ..state
        }
    }

    /// Each child on its slice of the sequence; what the splits do not cover passes unchanged.
    fn split(&self, state: State, children: &[Option<Step>], splits: &[usize]) -> State {
        let [_, seq, _] = state.hidden.dims();
        let mut start = 0;
        let mut pieces = Vec::with_capacity(children.len() + 1);
        let mut last = state.last;
        for (child, len) in children.iter().zip(splits) {
            let len = (*len).min(seq - start);
            if len == 0 {
                continue;
            }
            let slice = |t: &Tensor<3>| t.clone().narrow(1, start, len);
            let piece = State {
                hidden: slice(&state.hidden),
                input: slice(&state.input),
                residual: slice(&state.residual),
                up: state.up.as_ref().map(slice),
                keep_up: state.keep_up,
                last: state.last,
            };
            let piece = match child {
                Some(child) => self.exec(child, piece),
                None => piece,
            };
            last = piece.last.or(last);
            pieces.push(piece.hidden);
            start += len;
        }
        if start < seq {
            pieces.push(state.hidden.clone().narrow(1, start, seq - start));
        }
        State {
            hidden: Tensor::cat(pieces, 1),
            last,
            ..state
        }
    }

    /// The weighted sum of the children's outputs on the same input; children after which no
    /// adapter has run yet are left out.
    fn average(&self, state: State, children: &[(Option<Step>, f64)]) -> State {
        let mut sum: Option<Tensor<3>> = None;
        let mut last = state.last;
        for (child, factor) in children {
            let out = match child {
                Some(child) => self.exec(child, state.clone()),
                None => state.clone(),
            };
            if out.last.is_none() {
                continue;
            }
            last = out.last;
            let term = out.hidden.mul_scalar(*factor);
            sum = Some(match sum {
                Some(sum) => sum + term,
                None => term,
            });
        }
        match sum {
            Some(hidden) => State {
                hidden,
                last,
                ..state
            },
            None => state,
        }
    }
}
