//! ReFT interventions (AdapterHub's `ReftUnit` / `ReftModule`): low-rank edits of the hidden
//! states at chosen positions after a layer.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use super::dropout;
use super::init::{InitRng, param, torch_linear};
use crate::config::{Activation, ReftConfig};
use crate::error::Result;

/// The `[r, hidden]` projection `R` of a unit.
#[derive(Module, Debug)]
pub enum ReftProjection {
    /// Trained directly (`projection.weight`).
    Plain(Param<Tensor<2>>),
    /// Kept orthonormal by torch's `orthogonal` parametrization (Householder map with
    /// trivialization): `R = (base · Q(original))ᵀ`.
    Orthogonal(OrthogonalWeight),
}

/// The stored form of an orthogonally parametrized `[r, hidden]` matrix
/// (`parametrizations.weight.original` and `parametrizations.weight.0.base`).
#[derive(Module, Debug)]
pub struct OrthogonalWeight {
    /// The unconstrained parameter, `[r, hidden]`.
    pub original: Param<Tensor<2>>,
    /// The orthogonal base it is expressed in, `[hidden, hidden]` (a buffer: never trained).
    pub base: Param<Tensor<2>>,
}

impl OrthogonalWeight {
    /// The orthonormal-rowed matrix, `[r, hidden]`, as torch computes it: with `X = originalᵀ`
    /// and `A` its strictly lower part, `Q = H₁⋯H_r I[:, :r]` for the Householder reflections
    /// `Hᵢ = I − τᵢ vᵢ vᵢᵀ` (`vᵢ = A[:, i] + eᵢ`, `τᵢ = 2 / (1 + ‖A[:, i]‖²)`), each column
    /// times the sign of `X[i, i]`, then `base · Q`, transposed back.
    ///
    /// torch multiplies by `X[i, i].int()` instead: the diagonal starts at exactly −1 and gets no
    /// gradient, but weight decay moves it into (−1, 0), where the truncation zeroes the row
    /// (one AdamW step with weight decay silences a torch LoReFT). The sign is what the factor
    /// is for; the two agree on every diagonal in (−2, −1] ∪ [1, 2), which is where torch
    /// training without weight decay keeps it.
    pub fn weight(&self) -> Tensor<2> {
        let x = self.original.val().transpose();
        let [hidden, r] = x.dims();
        let device = x.device();
        let below = lower_mask(hidden, r, &device);
        let a = x.clone() * below;
        let tau = (a.clone() * a.clone())
            .sum_dim(0)
            .add_scalar(1.0)
            .recip()
            .mul_scalar(2.0);
        let eye = identity_columns(hidden, r, &device);
        let v = a + eye.clone();
        let mut q = eye.clone();
        for i in (0..r).rev() {
            let vi = v.clone().narrow(1, i, 1);
            let ti = tau.clone().narrow(1, i, 1);
            let projection = vi.clone().transpose().matmul(q.clone());
            q = q - vi.matmul(projection) * ti;
        }
        let diagonal = (x.detach() * eye).sum_dim(0);
        let q = q * diagonal.sign();
        self.base.val().detach().matmul(q).transpose()
    }
}

/// `[rows, cols]` with 1 strictly below the diagonal.
fn lower_mask(rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let values = (0..rows)
        .flat_map(|i| (0..cols).map(move |j| if i > j { 1.0f32 } else { 0.0 }))
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// The first `cols` columns of the `rows × rows` identity.
fn identity_columns(rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let values = (0..rows)
        .flat_map(|i| (0..cols).map(move |j| if i == j { 1.0f32 } else { 0.0 }))
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

impl ReftProjection {
    /// `R`, `[r, hidden]`.
    pub fn weight(&self) -> Tensor<2> {
        match self {
            ReftProjection::Plain(weight) => weight.val(),
            ReftProjection::Orthogonal(orthogonal) => orthogonal.weight(),
        }
    }
}

/// One intervention: `h ↦ dropout(h + (act(W h + b) − R h) R)` (without `− R h` for DiReFT).
#[derive(Module, Debug)]
pub struct ReftUnit {
    /// `W`, `b`: `hidden → r` (`learned_source`).
    pub learned_source: Linear,
    /// `R` (`projection`).
    pub projection: ReftProjection,
    /// Dropout on the intervened states.
    pub dropout: Dropout,
    /// The source's non-linearity.
    #[module(skip)]
    pub activation: Option<Activation>,
    /// Whether `R h` is subtracted.
    #[module(skip)]
    pub subtract_projection: bool,
}

impl ReftUnit {
    fn new(config: &ReftConfig, hidden: usize, rng: &mut InitRng, device: &Device) -> Self {
        let r = config.r;
        let learned_source = torch_linear(rng, hidden, r, device);
        // nn.Linear(hidden, r, bias=False) as torch initialises it, [r, hidden]
        let bound = 1.0 / (hidden as f64).sqrt();
        let weight = rng.uniform(r * hidden, bound);
        let projection = if config.orthogonality {
            ReftProjection::Orthogonal(orthogonal_init(&weight, r, hidden, rng, device))
        } else {
            ReftProjection::Plain(param(weight, [r, hidden], device))
        };
        Self {
            learned_source,
            projection,
            dropout: DropoutConfig::new(config.dropout).init(),
            activation: config.non_linearity,
            subtract_projection: config.subtract_projection,
        }
    }

    /// # Shapes
    ///
    /// - x, output: `[batch, positions, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let r = self.projection.weight();
        let mut source = self.learned_source.forward(x.clone());
        if let Some(activation) = self.activation {
            source = activation.forward(source);
        }
        if self.subtract_projection {
            source = source - x.clone().matmul(r.clone().transpose().unsqueeze());
        }
        dropout(&self.dropout, x + source.matmul(r.unsqueeze()))
    }
}

/// torch's `right_inverse` of the orthogonal parametrization for a fresh `[r, hidden]`
/// weight: `base` an orthonormal basis whose first `r` vectors span the weight's rows
/// (Gram–Schmidt of the rows and random vectors), `original = −I`, so that the weight starts
/// as the orthonormalised initial one.
fn orthogonal_init(
    weight: &[f32],
    r: usize,
    hidden: usize,
    rng: &mut InitRng,
    device: &Device,
) -> OrthogonalWeight {
    let mut columns: Vec<Vec<f64>> = weight
        .chunks(hidden)
        .map(|row| row.iter().map(|v| *v as f64).collect())
        .collect();
    let random = rng.normal(hidden * (hidden - r.min(hidden)), 0.0, 1.0);
    columns.extend(
        random
            .chunks(hidden)
            .map(|c| c.iter().map(|v| *v as f64).collect()),
    );
    let basis = gram_schmidt(columns, hidden);
    // base[i][j] = basis vector j, component i
    let base: Vec<f32> = (0..hidden)
        .flat_map(|i| basis.iter().map(move |column| column[i] as f32))
        .collect();
    let original: Vec<f32> = (0..r)
        .flat_map(|i| (0..hidden).map(move |j| if i == j { -1.0 } else { 0.0 }))
        .collect();
    OrthogonalWeight {
        original: param(original, [r, hidden], device),
        base: param(base, [hidden, hidden], device),
    }
}

/// Orthonormal vectors from `vectors` in order (a dependent one is replaced by a unit vector
/// that completes the basis).
fn gram_schmidt(vectors: Vec<Vec<f64>>, dim: usize) -> Vec<Vec<f64>> {
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(dim);
    let mut spare = (0..dim).map(|k| (0..dim).map(|i| if i == k { 1.0 } else { 0.0 }).collect());
    for mut v in vectors.into_iter().take(dim) {
        loop {
            for b in &basis {
                let dot: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
                v.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-8 {
                v.iter_mut().for_each(|x| *x /= norm);
                break;
            }
            v = spare.next().expect("the unit vectors complete any basis");
        }
        basis.push(v);
    }
    basis
}

/// The interventions of one adapter after one layer.
#[derive(Module, Debug)]
pub struct ReftModule {
    /// One unit (`tied_weights`) or two: prefix positions, suffix positions.
    pub units: Vec<ReftUnit>,
    /// Real tokens intervened on at the start of a row.
    #[module(skip)]
    pub prefix_positions: usize,
    /// Real tokens intervened on at the end of a row.
    #[module(skip)]
    pub suffix_positions: usize,
}

impl ReftModule {
    /// The interventions of `config` for a model of width `hidden`.
    pub fn new(config: &ReftConfig, hidden: usize, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut rng = InitRng::new(config.init_weights_seed, device);
        let n = if config.tied_weights { 1 } else { 2 };
        Ok(Self {
            units: (0..n)
                .map(|_| ReftUnit::new(config, hidden, &mut rng, device))
                .collect(),
            prefix_positions: config.prefix_positions,
            suffix_positions: config.suffix_positions,
        })
    }

    /// `hidden` with the states at `prefix` and `suffix` positions intervened on. Each is
    /// `(index, valid)`: `[batch, slots]` positions and 1/0 for the slots a row has; AdapterHub
    /// writes the prefix first and the suffix after, so the suffix wins where they meet.
    ///
    /// # Shapes
    ///
    /// - hidden, output: `[batch, seq, width]`
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        prefix: Option<&(Tensor<2, Int>, Tensor<2>)>,
        suffix: Option<&(Tensor<2, Int>, Tensor<2>)>,
    ) -> Tensor<3> {
        let gather = |t: &Tensor<3>, (index, _): &(Tensor<2, Int>, Tensor<2>)| {
            t.clone().gather(1, expand(index, t.dims()[2]))
        };
        let states = [
            prefix.map(|p| gather(&hidden, p)),
            suffix.map(|s| gather(&hidden, s)),
        ];
        let [pre, suf] = self.intervene(states);
        let mut out = hidden;
        for (positions, new) in [(prefix, pre), (suffix, suf)] {
            if let (Some((index, valid)), Some(new)) = (positions, new) {
                let width = out.dims()[2];
                let current = out.clone().gather(1, expand(index, width));
                let delta = (new - current) * valid.clone().unsqueeze_dim::<3>(2);
                let zeros = out.zeros_like();
                let update = zeros.scatter(1, expand(index, width), delta, IndexingUpdateOp::Add);
                out = out + update;
            }
        }
        out
    }

    /// The units applied: one to both position sets (tied), or one each.
    fn intervene(&self, [pre, suf]: [Option<Tensor<3>>; 2]) -> [Option<Tensor<3>>; 2] {
        match (&self.units[..], pre, suf) {
            ([tied], Some(pre), Some(suf)) => {
                let n = pre.dims()[1];
                let both = tied.forward(Tensor::cat(vec![pre, suf.clone()], 1));
                let m = suf.dims()[1];
                [
                    Some(both.clone().narrow(1, 0, n)),
                    Some(both.narrow(1, n, m)),
                ]
            }
            ([unit, ..], pre, suf) => {
                let second = self.units.get(1).unwrap_or(unit);
                [pre.map(|p| unit.forward(p)), suf.map(|s| second.forward(s))]
            }
            ([], ..) => unreachable!("a ReFT module has one or two units"),
        }
    }
}

/// `[batch, slots]` indices as `[batch, slots, width]`.
fn expand(index: &Tensor<2, Int>, width: usize) -> Tensor<3, Int> {
    let [batch, slots] = index.dims();
    index
        .clone()
        .unsqueeze_dim::<3>(2)
        .expand([batch, slots, width])
}
