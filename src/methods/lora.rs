//! LoRA and IA3: low-rank updates and learned rescalings of a linear layer's output.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};

use super::dropout;
use super::init::{InitRng, param};
use super::{
    InitialFactors, MultiTaskFactors, OutputBlocks, SharedFactors, VeraProjections, VeraScales,
};
use crate::config::{CompositionMode, LoRAConfig, LoRAInit};
use crate::error::{Error, Result};

/// One LoRA or IA3 module at one linear layer (AdapterHub's `LoRA` / `IA3`).
///
/// - LoRA (`composition_mode = "add"`): `y = W x + b + dropout(x) A B · alpha / r`;
/// - IA3 (`composition_mode = "scale"`): `y = (W x + b) ⊙ l · alpha`;
/// - MTL-LoRA: LoRA with `A Λ` for `A` and a mixture of up projections for `B`
///   ([`MultiTaskFactors`]);
/// - VeRA: LoRA with `A diag(d)` and `B diag(b)`, `A` and `B` frozen and shared by the adapter's
///   modules, `d` and `b` trained ([`VeraScales`]).
///
/// With `use_gating`, the scaling is replaced by a learned gate: the mean over the sequence of
/// `sigmoid(gate(x))`. Matrices are stored in burn's `[d_input, d_output]` orientation
/// (AdapterHub's are transposed); the update is computed on the activations, never as a dense
/// weight delta.
///
/// On a fused projection the module may update only some output blocks ([`OutputBlocks`]):
/// then `A` is `[d_input, r·n]` and `B` `[r, n·width]` (LoRA), `l` `[1, n·width]` (IA3), for the
/// `n` enabled blocks.
#[derive(Module, Debug)]
pub struct LoRA {
    /// `A`, `[d_input, r]` (LoRA only).
    pub lora_a: Option<Param<Tensor<2>>>,
    /// `B`, `[r, d_output]` for LoRA; the scaling vector `l`, `[1, d_output]`, for IA3; `None`
    /// for MTL-LoRA, whose up projections are in `multi_task`.
    pub lora_b: Option<Param<Tensor<2>>>,
    /// MTL-LoRA's task-specific matrix and mixed up projections.
    pub multi_task: Option<MultiTaskFactors>,
    /// The key of the site's [`SharedFactors`] that hold this module's `A` and up projections
    /// (`lora_a` and `multi_task.lora_b` are then `None`).
    #[module(skip)]
    pub shared: Option<String>,
    /// The output blocks updated, when only some blocks of a fused projection are.
    #[module(skip)]
    pub blocks: Option<OutputBlocks>,
    /// The gate, `d_input → 1`, when `use_gating` is set.
    pub gate: Option<Linear>,
    /// VeRA's trained vectors; `lora_a` and `lora_b` are then the frozen shared matrices.
    pub vera: Option<VeraScales>,
    /// DoRA's magnitude `m` of every output, `[1, d_output]` (`use_dora`); see
    /// [`LoRA::with_magnitude`].
    pub magnitude: Option<Param<Tensor<2>>>,
    /// IA3 scaling the layer's input, `l` `[1, d_input]`, rather than its output (see
    /// [`LoRAConfig::ia3_input_scaling`]).
    #[module(skip)]
    pub scales_input: bool,
    /// What a PiSSA or OLoRA module started from (`init_weights` `"pissa"`, `"olora"`): the part
    /// of the wrapped weight it took over.
    #[module(skip)]
    pub(crate) initial: Option<Arc<InitialFactors>>,
    /// Dropout on the LoRA input.
    pub dropout: Dropout,
    /// `alpha / r` (LoRA) or `alpha` (IA3).
    pub scaling: f64,
}

impl LoRA {
    /// Builds the module `config` describes for a linear layer `d_input → d_output`.
    ///
    /// Initialisation follows AdapterHub: for LoRA, `init_weights = "lora"` draws `A`
    /// kaiming-uniform and zeros `B` (the update starts at zero), `"bert"` draws both from
    /// N(0, 0.02), `"ia3"` fills both with ones; for IA3, `"ia3"` starts `l` at ones (the
    /// identity), `"lora"` at zeros, `"bert"` from N(0, 0.02).
    pub fn new(
        config: &LoRAConfig,
        d_input: usize,
        d_output: usize,
        device: &Device,
    ) -> Result<Self> {
        Self::build(config, d_input, d_output, None, device)
    }

    /// Builds an IA3 module that scales the input of a linear layer with `d_input` features
    /// (`config.ia3_input_scaling`), initialised as [`LoRA::new`] does.
    pub fn new_scaling_input(config: &LoRAConfig, d_input: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            scales_input: true,
            ..Self::build(config, d_input, d_input, None, device)?
        })
    }

    /// Builds the module for the enabled `blocks` of a fused projection `d_input → d_output`
    /// (AdapterHub's `LoRAMergedLinear`), initialised as [`LoRA::new`] does. A gate is refused:
    /// AdapterHub gates each block separately, which this module does not do; so is MTL-LoRA,
    /// whose `r`-wide task-specific matrix AdapterHub applies to all blocks' ranks at once.
    pub fn new_in_blocks(
        config: &LoRAConfig,
        d_input: usize,
        d_output: usize,
        blocks: OutputBlocks,
        device: &Device,
    ) -> Result<Self> {
        if config.use_gating {
            return Err(Error::Unsupported(
                "a gated LoRA on a fused projection (GPT-2's `c_attn`)".into(),
            ));
        }
        if config.multi_task.is_some() {
            return Err(Error::Unsupported(
                "MTL-LoRA on a fused projection (GPT-2's `c_attn`)".into(),
            ));
        }
        if config.is_vera() {
            return Err(Error::Unsupported(
                "VeRA on a fused projection (GPT-2's `c_attn`)".into(),
            ));
        }
        if config.init_weights.changes_base() {
            return Err(Error::Unsupported(format!(
                "init_weights \"{}\" on a fused projection (GPT-2's `c_attn`) in AdapterHub's \
                 per-block form",
                config.init_weights
            )));
        }
        if config.use_dora {
            // AdapterHub's LoRAMergedLinear has no DoRA either (it never passes the weight).
            return Err(Error::Unsupported(
                "DoRA on a fused projection (GPT-2's `c_attn`) in AdapterHub's per-block form"
                    .into(),
            ));
        }
        Self::build(config, d_input, d_output, Some(blocks), device)
    }

    fn build(
        config: &LoRAConfig,
        d_input: usize,
        d_output: usize,
        blocks: Option<OutputBlocks>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        // `A` holds r columns and `B` one block's width per enabled block.
        let (ranks, d_output) = match &blocks {
            Some(b) => (config.r * b.count(), b.count() * b.width(d_output)),
            None => (config.r, d_output),
        };
        let mut rng = InitRng::new(config.init_weights_seed, device);
        let r = config.r;
        let (lora_a, lora_b, scaling) = match config.composition_mode {
            CompositionMode::Add => {
                // MTL-LoRA's up projections replace `B` (see `MultiTaskFactors::new`).
                let has_b = config.multi_task.is_none();
                let (a, b) = match config.init_weights {
                    // kaiming_uniform(a = √5) on A [r, d_input]: bound 1/√d_input.
                    // PiSSA and OLoRA replace both from the wrapped weight (`with_base_init`).
                    LoRAInit::Lora
                    | LoRAInit::Pissa
                    | LoRAInit::PissaNiter(_)
                    | LoRAInit::Olora => (
                        rng.uniform(d_input * ranks, 1.0 / (d_input as f64).sqrt()),
                        has_b.then(|| vec![0.0; r * d_output]),
                    ),
                    // torch's `normal_(std = 1 / r)` on A [r, d_input].
                    LoRAInit::Gaussian => (
                        rng.normal(d_input * ranks, 0.0, 1.0 / r as f64),
                        has_b.then(|| vec![0.0; r * d_output]),
                    ),
                    LoRAInit::Bert => {
                        let a = rng.normal(d_input * ranks, 0.0, 0.02);
                        (a, has_b.then(|| rng.normal(r * d_output, 0.0, 0.02)))
                    }
                    LoRAInit::Ia3 => (
                        vec![1.0; d_input * ranks],
                        has_b.then(|| vec![1.0; r * d_output]),
                    ),
                    // kaiming_uniform (gain √2) on A [r, d_input] and B [d_output, r].
                    LoRAInit::Vera => (
                        rng.uniform(d_input * ranks, (6.0 / d_input as f64).sqrt()),
                        has_b.then(|| rng.uniform(r * d_output, (6.0 / r as f64).sqrt())),
                    ),
                };
                (
                    Some(param(a, [d_input, ranks], device)),
                    b.map(|b| param(b, [r, d_output], device)),
                    config.scaling(),
                )
            }
            CompositionMode::Scale => {
                let l = match config.init_weights {
                    LoRAInit::Ia3 => vec![1.0; d_output],
                    LoRAInit::Lora => vec![0.0; d_output],
                    LoRAInit::Bert => rng.normal(d_output, 0.0, 0.02),
                    LoRAInit::Vera
                    | LoRAInit::Gaussian
                    | LoRAInit::Pissa
                    | LoRAInit::PissaNiter(_)
                    | LoRAInit::Olora => {
                        unreachable!("LoRAConfig::validate refuses IA3 with it")
                    }
                };
                (None, Some(param(l, [1, d_output], device)), config.alpha)
            }
        };
        let multi_task = config.multi_task.as_ref().map(|multi_task| {
            let shape = [r, d_output];
            MultiTaskFactors::new(multi_task, config.init_weights, shape, &mut rng, device)
        });
        // torch's nn.Linear default bias, then a N(0, 0.02) weight, as AdapterHub does.
        let gate = config.use_gating.then(|| {
            let bias = rng.uniform(1, 1.0 / (d_input as f64).sqrt());
            Linear {
                weight: param(rng.normal(d_input, 0.0, 0.02), [d_input, 1], device),
                bias: Some(param(bias, [1], device)),
            }
        });
        Ok(Self {
            lora_a,
            lora_b,
            multi_task,
            shared: None,
            gate,
            vera: None,
            magnitude: None,
            scales_input: false,
            initial: None,
            dropout: DropoutConfig::new(config.dropout).init(),
            scaling,
            blocks,
        })
    }

    /// The module as VeRA (`config.vera_d`, `config.vera_b`): `A` and `B` become this layer's
    /// slices of the adapter's shared frozen matrices, and `d` and `b` start at the config's
    /// values.
    pub(crate) fn with_vera(
        self,
        config: &LoRAConfig,
        projections: &VeraProjections,
        [d_input, d_output]: [usize; 2],
    ) -> Self {
        let device = projections.device();
        let [a, b] = projections.slice(d_input, d_output);
        let (d, b_init) = (config.vera_d.unwrap_or(0.0), config.vera_b.unwrap_or(0.0));
        Self {
            lora_a: Some(a),
            lora_b: Some(b),
            vera: Some(VeraScales::new(config.r, d_output, d, b_init, &device)),
            ..self
        }
    }

    /// The module with VeRA's shared matrices frozen, whatever `require_grad` the mapping that
    /// made it set on them.
    pub(crate) fn with_frozen_projections(self) -> Self {
        if self.vera.is_none() {
            return self;
        }
        let freeze = |p: Param<Tensor<2>>| p.set_require_grad(false);
        Self {
            lora_a: self.lora_a.map(freeze),
            lora_b: self.lora_b.map(freeze),
            ..self
        }
    }

    /// How this module combines with the layer output.
    pub fn composition_mode(&self) -> CompositionMode {
        match (&self.lora_a, &self.multi_task) {
            (None, None) => CompositionMode::Scale,
            _ => CompositionMode::Add,
        }
    }

    /// The module's contribution, given the contribution of the modules before it in a stack
    /// (`None` for the first) and the layer input: AdapterHub's `LoRA.forward` / `IA3.forward`.
    /// Scaling (or the gate) is already applied.
    ///
    /// # Shapes
    ///
    /// - previous: `[batch, seq, d_input]` (LoRA) or `[batch, 1 or seq, d_output]` (IA3)
    /// - input: `[batch, seq, d_input]`
    /// - output: `[batch, seq, d_output]` (LoRA), `[batch, 1 or seq, d_output]` (IA3)
    pub fn delta(&self, previous: Option<Tensor<3>>, input: &Tensor<3>) -> Tensor<3> {
        self.delta_with(previous, input, None)
    }

    /// [`LoRA::delta`] with the site's factors this module shares, if it shares any.
    pub(crate) fn delta_with(
        &self,
        previous: Option<Tensor<3>>,
        input: &Tensor<3>,
        shared: Option<&SharedFactors>,
    ) -> Tensor<3> {
        let gate = self.gate.as_ref().map(|gate| {
            // [batch, seq, 1] → mean over the sequence → [batch, 1, 1]
            sigmoid(gate.forward(input.clone())).mean_dim(1)
        });
        match self.down(shared) {
            Some(a) => {
                let x = dropout(&self.dropout, previous.unwrap_or_else(|| input.clone()));
                // Scale the rank-r intermediate: r values per token instead of d_output.
                let low_rank = x.matmul(a.unsqueeze());
                let low_rank = match gate {
                    Some(gate) => low_rank * gate,
                    None => low_rank.mul_scalar(self.scaling),
                };
                match &self.blocks {
                    None => low_rank.matmul(self.up(shared).unsqueeze()),
                    Some(blocks) => blocks.pad(per_block(low_rank, self.up(shared)), 0.0),
                }
            }
            None => {
                // Gated modules are never blocked (`new_in_blocks` refuses the gate).
                let s: Tensor<3> = match &gate {
                    Some(_) => self.up(None).unsqueeze(),
                    None => self.ia3_scale(self.up(None)).unsqueeze(),
                };
                let scaled = match previous {
                    Some(previous) => previous * s,
                    None => s,
                };
                match gate {
                    Some(gate) => scaled * gate,
                    None => scaled,
                }
            }
        }
    }

    /// The down projection LoRA applies: `A` (its own or the shared one), or `A Λ` for
    /// MTL-LoRA; `None` for IA3.
    fn down(&self, shared: Option<&SharedFactors>) -> Option<Tensor<2>> {
        let a = match (&self.lora_a, shared) {
            (Some(a), _) => a.val(),
            (None, Some(shared)) if self.multi_task.is_some() => shared.lora_a.val(),
            _ => return None,
        };
        Some(match (&self.multi_task, &self.vera) {
            (Some(multi_task), _) => multi_task.down(a),
            (None, Some(vera)) => vera.scale_down(a),
            (None, None) => a,
        })
    }

    /// `B` (LoRA), `l` (IA3), or MTL-LoRA's mixture of up projections.
    fn up(&self, shared: Option<&SharedFactors>) -> Tensor<2> {
        match (&self.lora_b, &self.multi_task) {
            (Some(b), _) => match &self.vera {
                Some(vera) => vera.scale_up(b.val()),
                None => b.val(),
            },
            (None, Some(multi_task)) => multi_task.up(shared),
            (None, None) => unreachable!("a LoRA module has B or MTL-LoRA's up projections"),
        }
    }

    /// Combines the output of the wrapped `linear` with the final contribution of a stack
    /// ending in this module: adds it (LoRA), multiplies by it (IA3), or rescales the adapted
    /// output by DoRA's magnitude ([`LoRA::with_magnitude`]).
    ///
    /// # Shapes
    ///
    /// - output: `[batch, seq, d_output]`; delta: as [`LoRA::delta`] returns it
    pub fn combine(&self, output: Tensor<3>, delta: Tensor<3>, linear: &Linear) -> Tensor<3> {
        self.combine_with(output, delta, linear, None)
    }

    /// [`LoRA::combine`] with the site's factors this module shares, if it shares any.
    pub(crate) fn combine_with(
        &self,
        output: Tensor<3>,
        delta: Tensor<3>,
        linear: &Linear,
        shared: Option<&SharedFactors>,
    ) -> Tensor<3> {
        if let Some(adapted) = self.dora_combine(&output, &delta, linear, shared) {
            return adapted;
        }
        match self.composition_mode() {
            CompositionMode::Add => output + delta,
            CompositionMode::Scale => output * delta,
        }
    }

    /// Checks that the update can be folded into the layer's weights and taken out again; the
    /// error says why not. A gated module depends on its input, so it cannot be folded. IA3 is
    /// taken out by dividing by its scaling `l·alpha`, so every entry of it must have a finite
    /// reciprocal (not `alpha = 0`, nor an `l` entry at 0 as `init_weights = "lora"` starts it);
    /// checking that reads `l` back from the device.
    pub fn check_mergeable(&self) -> std::result::Result<(), String> {
        if self.gate.is_some() {
            return Err(
                "a gated LoRA depends on its input and cannot be merged into weights".into(),
            );
        }
        if let Some(magnitude) = &self.magnitude {
            // reset_adapter divides by m / ‖W + ΔW‖.
            let m = magnitude.val().into_data().convert::<f32>();
            let m = m.as_slice::<f32>().unwrap_or_default();
            return match m.iter().position(|m| *m == 0.0 || !m.is_finite()) {
                Some(output) => Err(format!(
                    "its DoRA magnitude is {} at output {output}, so the merge could not be \
                     undone (reset_adapter divides by it)",
                    m[output]
                )),
                None => Ok(()),
            };
        }
        if self.lora_a.is_some() {
            return Ok(());
        }
        // As the merge computes it: in f32, `l` times the scalar.
        let alpha = self.scaling as f32;
        let l = self.up(None).into_data().convert::<f32>();
        let l = l.as_slice::<f32>().unwrap_or_default();
        match l.iter().position(|l| !(1.0 / (l * alpha)).is_finite()) {
            Some(output) => Err(format!(
                "its IA3 scaling l·alpha is {} at output {output}, so the merge could not be undone \
                 (reset_adapter divides by it)",
                l[output] * alpha
            )),
            None => Ok(()),
        }
    }

    /// Undoes [`LoRA::merge_into`](Self::merge_into), up to float rounding: subtracts the
    /// low-rank update, or divides by the IA3 scaling (which
    /// [`LoRA::check_mergeable`](Self::check_mergeable) made sure is invertible).
    /// `dora_norm` is the norm [`LoRA::merge_into`] returned for a DoRA module.
    pub(crate) fn unmerge_from(
        &self,
        linear: Linear,
        shared: Option<&SharedFactors>,
        dora_norm: Option<Tensor<2>>,
    ) -> Linear {
        if let Some(norm) = dora_norm {
            let merged = linear.weight.val();
            if let Some(weight) = self.dora_unmerged(merged, norm, shared) {
                return with_weight(linear, |_| weight.detach());
            }
        }
        if let Some(delta) = self.low_rank_delta(shared) {
            return with_weight(linear, |w| w - delta);
        }
        let s = self.ia3_scale(self.up(None).detach());
        if self.scales_input {
            // W (x ⊙ s) = (diag(s) W) x: the rows of the [d_input, d_output] weight.
            return with_weight(linear, |w| w / s.transpose());
        }
        Linear {
            weight: update(linear.weight, |w| w / s.clone()),
            bias: linear
                .bias
                .map(|bias| update(bias, |bias| (bias.unsqueeze_dim(0) / s).squeeze_dim(0))),
        }
    }

    /// `A B·scaling` (LoRA and MTL-LoRA), zero outside the enabled blocks.
    pub(super) fn low_rank_delta(&self, shared: Option<&SharedFactors>) -> Option<Tensor<2>> {
        let a = self.down(shared)?.detach();
        let b = self.up(shared).detach().mul_scalar(self.scaling);
        Some(match &self.blocks {
            None => a.matmul(b),
            Some(blocks) => blocks.pad(per_block(a, b), 0.0),
        })
    }

    /// The IA3 scaling `l·alpha` of every output, `[1, d_output]`: 1 outside the enabled blocks.
    ///
    /// (AdapterHub's `LoRAMergedLinear` scales the blocks it pads with 1 by `alpha` too; with
    /// IA3's default `alpha = 1` the two agree.)
    fn ia3_scale(&self, l: Tensor<2>) -> Tensor<2> {
        let s = l.mul_scalar(self.scaling);
        match &self.blocks {
            None => s,
            Some(blocks) => blocks.pad(s, 1.0),
        }
    }

    /// `linear` with this (ungated, see [`LoRA::check_mergeable`]) update folded into its
    /// weights, so that `merged(x)` equals the unmerged output: `W + A B·scaling` for LoRA;
    /// `W ⊙ s` and `b ⊙ s` with `s = l·alpha` for IA3.
    ///
    /// For IA3 the bias is scaled along with the weight: `(W x + b) ⊙ s = (W ⊙ s) x + b ⊙ s`.
    /// (AdapterHub leaves the bias unscaled, so its merged model differs from its unmerged one
    /// whenever the bias is non-zero.) For DoRA the weight becomes `m / ‖W + ΔW‖ ⊙ (W + ΔW)`
    /// and the norm is returned: [`LoRA::unmerge_from`] needs it.
    pub(crate) fn merge_into(
        &self,
        linear: Linear,
        shared: Option<&SharedFactors>,
    ) -> (Linear, Option<Tensor<2>>) {
        if let Some((weight, norm)) = self.dora_merged(linear.weight.val(), shared) {
            let linear = with_weight(linear, |_| weight.detach());
            return (linear, Some(norm));
        }
        (self.merge_plain(linear, shared), None)
    }

    fn merge_plain(&self, linear: Linear, shared: Option<&SharedFactors>) -> Linear {
        if let Some(delta) = self.low_rank_delta(shared) {
            return with_weight(linear, |w| w + delta);
        }
        let s = self.ia3_scale(self.up(None).detach());
        if self.scales_input {
            return with_weight(linear, |w| w * s.transpose());
        }
        Linear {
            weight: update(linear.weight, |w| w * s.clone()),
            bias: linear
                .bias
                .map(|bias| update(bias, |bias| (bias.unsqueeze_dim(0) * s).squeeze_dim(0))),
        }
    }
}

/// `x · B_g` for each block `g`, side by side: block `g` of `x`'s last dimension (width `r`)
/// times columns `g·width..(g+1)·width` of `B` (`[r, n·width]`).
///
/// # Shapes
///
/// - x: `[..., n·r]`, b: `[r, n·width]`, output: `[..., n·width]`
fn per_block<const D: usize>(x: Tensor<D>, b: Tensor<2>) -> Tensor<D> {
    let [r, total] = b.dims();
    let n = x.dims()[D - 1] / r;
    let width = total / n;
    let pieces = (0..n)
        .map(|g| {
            let b_g: Tensor<D> = b.clone().narrow(1, g * width, width).unsqueeze();
            x.clone().narrow(D - 1, g * r, r).matmul(b_g)
        })
        .collect();
    Tensor::cat(pieces, D - 1)
}

/// `linear` with its weight replaced by `f(weight)`, through [`update`].
pub(super) fn with_weight(linear: Linear, f: impl FnOnce(Tensor<2>) -> Tensor<2>) -> Linear {
    Linear {
        weight: update(linear.weight, f),
        bias: linear.bias,
    }
}

/// Replaces a parameter's value, keeping its id and its gradient requirement.
pub(super) fn update<const D: usize>(
    param: Param<Tensor<D>>,
    f: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Param<Tensor<D>> {
    param.map(|value| {
        let require_grad = value.is_require_grad();
        // The result becomes a new leaf (its inputs may be tracked: burn's `detach` keeps a
        // parameter's `require_grad`).
        f(value).detach().set_require_grad(require_grad)
    })
}
