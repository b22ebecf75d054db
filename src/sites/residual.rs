//! The residual site: where a sublayer adds its residual and applies its LayerNorm.

use std::fmt;
use std::sync::Arc;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::nn::LayerNorm;
use burn::tensor::{Device, Tensor};

use super::NamedModules;
use super::rows::run_row_groups;
use crate::composition::AdapterSetup;
use crate::config::{AdapterConfig, BnConfig};
use crate::error::Result;
use crate::methods::{Bottleneck, BottleneckInput, Fusion, apply_norm};

/// Which residual block of a transformer layer a site follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SitePosition {
    /// After the multi-head attention output (AdapterHub's `mh_adapter` location).
    Attention,
    /// After the feed-forward output (AdapterHub's `output_adapter` location).
    Output,
}

/// Where a site sits in its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteLocation {
    /// Index of the transformer layer.
    pub layer: usize,
    /// Residual block within the layer.
    pub position: SitePosition,
}

impl fmt::Display for SiteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let position = match self.position {
            SitePosition::Attention => "attention",
            SitePosition::Output => "output",
        };
        write!(f, "layer {} {position}", self.layer)
    }
}

/// Bottleneck adapters and AdapterFusion layers at one residual block, and the active setup.
///
/// A transformer layer calls [`ResidualSite::forward`] in place of `layer_norm(hidden + residual)`
/// (or `hidden + residual` in pre-norm layers); with no active adapter the result is exactly that
/// expression.
#[derive(Debug, Clone)]
pub struct ResidualSite {
    location: SiteLocation,
    adapters: NamedModules<Bottleneck>,
    /// Fusion layers, named after their adapters (`"a,b"`; adapter names have no commas).
    fusions: NamedModules<Fusion>,
    /// The active setup, shared between sites.
    active: Option<Arc<AdapterSetup>>,
}

/// The tensors threaded through a composition at a residual site (AdapterHub's
/// `BottleneckState`).
#[derive(Clone)]
struct State<'a> {
    /// The running hidden state.
    hidden: Tensor<3>,
    /// The sublayer's residual input.
    input: Tensor<3>,
    /// The residual of the next adapter (set by pre-forward).
    residual: Tensor<3>,
    /// The up projection of the last adapter that ran (what Fuse mixes), if `keep_up`.
    up: Option<Tensor<3>>,
    /// Whether a Fuse reads `up`; otherwise it is not kept, so the adapter output can be
    /// computed in place.
    keep_up: bool,
    /// The last adapter that ran (its post-forward ends the site).
    last: Option<&'a Bottleneck>,
}

impl ResidualSite {
    /// An empty site at `location`.
    pub fn new(location: SiteLocation) -> Self {
        Self {
            location,
            adapters: NamedModules::default(),
            fusions: NamedModules::default(),
            active: None,
        }
    }

    /// Where this site sits.
    pub fn location(&self) -> SiteLocation {
        self.location
    }

    /// The adapters held here.
    pub fn adapters(&self) -> &NamedModules<Bottleneck> {
        &self.adapters
    }

    /// The bottleneck config `config` places at this site, if any.
    pub fn placed<'a>(&self, config: &'a AdapterConfig) -> Option<&'a BnConfig> {
        config.bottleneck_at(
            self.location.position == SitePosition::Attention,
            self.location.layer,
        )
    }

    /// Builds and stores the adapter `name` if `config` places one here. Returns whether it did.
    pub fn add_adapter(
        &mut self,
        name: &str,
        config: &AdapterConfig,
        hidden_size: usize,
        device: &Device,
    ) -> Result<bool> {
        let Some(bn) = self.placed(config) else {
            return Ok(false);
        };
        let adapter = Bottleneck::new(bn, hidden_size, self.location.layer, device)?;
        self.adapters.insert(name, adapter);
        Ok(true)
    }

    /// Stores a ready-made adapter under `name` (used when loading).
    pub fn insert_adapter(&mut self, name: &str, adapter: Bottleneck) {
        self.adapters.insert(name, adapter);
    }

    /// Removes the adapter `name`, if present here.
    pub fn delete_adapter(&mut self, name: &str) -> Option<Bottleneck> {
        self.adapters.remove(name)
    }

    /// The fusion layers held here.
    pub fn fusions(&self) -> &NamedModules<Fusion> {
        &self.fusions
    }

    /// Stores a fusion layer under `name` (`"a,b"`).
    pub fn insert_fusion(&mut self, name: &str, fusion: Fusion) {
        self.fusions.insert(name, fusion);
    }

    /// Removes the fusion layer `name`, if present here.
    pub fn delete_fusion(&mut self, name: &str) -> Option<Fusion> {
        self.fusions.remove(name)
    }

    /// Sets the active setup (`None` deactivates).
    pub fn set_active(&mut self, active: Option<Arc<AdapterSetup>>) {
        self.active = active;
    }

    /// Applies the active adapters, then the sublayer's residual and LayerNorm.
    ///
    /// `hidden` is the sublayer output (after its dense projection and dropout), `residual` the
    /// sublayer input, `layer_norm` the sublayer's own LayerNorm (`None` in pre-norm hosts, where
    /// the block ends in `hidden + residual`).
    ///
    /// # Shapes
    ///
    /// - hidden, residual: `[batch, seq, d_model]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        residual: Tensor<3>,
        layer_norm: Option<&LayerNorm>,
    ) -> Tensor<3> {
        let Some(setup) = self
            .active
            .as_deref()
            .filter(|setup| setup.any_name(&|n| self.adapters.contains(n)))
        else {
            return apply_norm(layer_norm, hidden + residual);
        };
        if !setup.has_row_blocks() {
            return self.run(setup, hidden, residual, layer_norm);
        }
        run_row_groups(setup, vec![hidden, residual], |setup, mut inputs| {
            let residual = inputs.pop().expect("two inputs");
            let hidden = inputs.pop().expect("two inputs");
            self.run(setup, hidden, residual, layer_norm)
        })
    }

    /// Runs a setup without row blocks on the whole batch, including the post-forward.
    fn run(
        &self,
        setup: &AdapterSetup,
        hidden: Tensor<3>,
        residual: Tensor<3>,
        layer_norm: Option<&LayerNorm>,
    ) -> Tensor<3> {
        let state = State {
            hidden: hidden.clone(),
            input: residual.clone(),
            residual: residual.clone(),
            up: None,
            keep_up: false,
            last: None,
        };
        // A single name runs as a one-element Stack, as in AdapterHub.
        let state = match setup {
            AdapterSetup::Name(_) => {
                self.compose_stack(std::slice::from_ref(setup), state, layer_norm)
            }
            block => self.compose(block, state, layer_norm),
        };
        match state.last {
            Some(last) => last.post_forward(state.hidden, hidden, state.input, layer_norm),
            None => apply_norm(layer_norm, hidden + residual),
        }
    }

    fn compose<'a>(
        &'a self,
        setup: &AdapterSetup,
        state: State<'a>,
        layer_norm: Option<&LayerNorm>,
    ) -> State<'a> {
        match setup {
            AdapterSetup::Name(name) => match self.adapters.get(name) {
                Some(adapter) => self.single(adapter, state),
                None => state,
            },
            AdapterSetup::Stack(children) => self.compose_stack(children, state, layer_norm),
            AdapterSetup::Fuse(children) => self.compose_fuse(setup, children, state, layer_norm),
            AdapterSetup::Split { children, splits } => {
                let state = self.pre_block(setup, state, layer_norm);
                let [_, seq, _] = state.hidden.dims();
                let mut start = 0;
                let mut pieces = Vec::with_capacity(children.len());
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
                    let piece = self.compose(child, piece, layer_norm);
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
            AdapterSetup::Average {
                children,
                weights,
                normalize_weights,
            } => {
                let state = self.pre_block(setup, state, layer_norm);
                let total: f64 = if *normalize_weights {
                    weights.iter().sum()
                } else {
                    1.0
                };
                let mut sum: Option<Tensor<3>> = None;
                let mut last = state.last;
                for (child, weight) in children.iter().zip(weights) {
                    let out = self.compose(child, state.clone(), layer_norm);
                    if out.last.is_none() {
                        continue; // none of the child's adapters is at this site
                    }
                    last = out.last;
                    let term = out.hidden.mul_scalar(weight / total);
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
            // Row blocks are resolved into row groups before composing.
            AdapterSetup::Parallel(_)
            | AdapterSetup::BatchSplit { .. }
            | AdapterSetup::PerRow(_) => state,
        }
    }

    /// Stack: each adapter's pre-forward, then the adapter, in turn.
    fn compose_stack<'a>(
        &'a self,
        children: &[AdapterSetup],
        mut state: State<'a>,
        layer_norm: Option<&LayerNorm>,
    ) -> State<'a> {
        for child in children {
            state = match child {
                AdapterSetup::Name(name) => match self.adapters.get(name) {
                    Some(adapter) => {
                        let state = self.pre_block(child, state, layer_norm);
                        self.single(adapter, state)
                    }
                    None => state,
                },
                block => self.compose(block, state, layer_norm),
            };
        }
        state
    }

    /// AdapterFusion: the last adapter's pre-forward gives the query; every child runs on the
    /// same input and the fusion layer attends over their up projections.
    fn compose_fuse<'a>(
        &'a self,
        setup: &AdapterSetup,
        children: &[AdapterSetup],
        state: State<'a>,
        layer_norm: Option<&LayerNorm>,
    ) -> State<'a> {
        let fusion_name = setup.names().join(",");
        let (Some(fusion), Some(last)) = (
            self.fusions.get(&fusion_name),
            setup.last().and_then(|n| self.adapters.get(n)),
        ) else {
            return state;
        };
        let query_before_ln = state.hidden.clone();
        let BottleneckInput { hidden, residual } =
            last.pre_forward(state.hidden.clone(), state.input.clone(), layer_norm);
        let query = if fusion.query_before_ln {
            query_before_ln
        } else {
            hidden.clone()
        };
        let state = State {
            hidden,
            residual,
            ..state
        };
        let ups: Vec<Tensor<3>> = children
            .iter()
            .filter_map(|child| {
                let state = State {
                    keep_up: true,
                    ..state.clone()
                };
                self.compose(child, state, layer_norm).up
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

    /// The pre-forward of the setup's first adapter present here (AdapterHub's `pre_block`).
    fn pre_block<'a>(
        &'a self,
        setup: &AdapterSetup,
        state: State<'a>,
        layer_norm: Option<&LayerNorm>,
    ) -> State<'a> {
        let Some(first) = setup.names().into_iter().find_map(|n| self.adapters.get(n)) else {
            return state;
        };
        let BottleneckInput { hidden, residual } =
            first.pre_forward(state.hidden.clone(), state.input.clone(), layer_norm);
        State {
            hidden,
            residual,
            ..state
        }
    }

    /// One adapter on the current state (AdapterHub's `compose_single`).
    fn single<'a>(&'a self, adapter: &'a Bottleneck, state: State<'a>) -> State<'a> {
        let up = adapter.up_projection(&state.hidden);
        let kept = state.keep_up.then(|| up.clone());
        let delta = adapter.gate_and_drop(up, &state.hidden);
        State {
            hidden: adapter.finish(delta, state.residual.clone()),
            up: kept,
            last: Some(adapter),
            ..state
        }
    }
}

impl Module for ResidualSite {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.fusions
            .collect_devices(self.adapters.collect_devices(devices))
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            adapters: self.adapters.fork(device),
            fusions: self.fusions.fork(device),
            ..self
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            adapters: self.adapters.to_device(device),
            fusions: self.fusions.to_device(device),
            ..self
        }
    }

    fn train(self) -> Self {
        Self {
            adapters: self.adapters.train(),
            fusions: self.fusions.train(),
            ..self
        }
    }

    fn valid(&self) -> Self {
        Self {
            adapters: self.adapters.valid(),
            fusions: self.fusions.valid(),
            location: self.location,
            active: self.active.clone(),
        }
    }

    fn materialize(self) -> Self {
        Self {
            adapters: self.adapters.materialize(),
            fusions: self.fusions.materialize(),
            ..self
        }
    }

    // Adapters and fusion layers are visited directly under the site's own field name, so a
    // site stored in a field called `adapters` yields AdapterHub's `...output.adapters.<name>.*`
    // paths; fusion layers appear as `...adapters.<a,b>.*` (no adapter name has a comma).
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.adapters.visit(visitor);
        self.fusions.visit(visitor);
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        Self {
            adapters: self.adapters.map(mapper),
            fusions: self.fusions.map(mapper),
            ..self
        }
    }
}

impl ModuleDisplayDefault for ResidualSite {
    fn content(&self, content: Content) -> Option<Content> {
        let content = self.adapters.content(content)?;
        if self.fusions.is_empty() {
            Some(content)
        } else {
            self.fusions.content(content)
        }
    }
}

impl ModuleDisplay for ResidualSite {}
