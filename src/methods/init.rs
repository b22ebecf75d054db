//! Host-side weight initialisation.
//!
//! Weights are drawn on the host from a seeded generator and then uploaded, so a given
//! `init_weights_seed` produces the same adapter on every backend. Without a seed, the generator
//! is seeded from the device's own random stream, which `Device::seed` makes reproducible.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, Normal, Uniform};

/// A random source for one adapter module.
pub(crate) struct InitRng(StdRng);

impl InitRng {
    /// Seeded explicitly (every module built from the same seed starts identical).
    pub fn seeded(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// Seeded from `device`'s random stream.
    pub fn from_device(device: &Device) -> Self {
        Self::seeded(device_seed(device))
    }

    /// Seeded with `seed` when given (a config's `init_weights_seed`), else from `device`'s
    /// random stream.
    pub fn new(seed: Option<u64>, device: &Device) -> Self {
        match seed {
            Some(seed) => Self::seeded(seed),
            None => Self::from_device(device),
        }
    }

    /// `N(mean, std)` samples.
    pub fn normal(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        let dist = Normal::new(mean, std).expect("std is a positive constant");
        (0..n).map(|_| dist.sample(&mut self.0) as f32).collect()
    }

    /// `U(-bound, bound)` samples.
    pub fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        if bound == 0.0 {
            return vec![0.0; n];
        }
        let dist = Uniform::new(-bound, bound).expect("bound is positive");
        (0..n).map(|_| dist.sample(&mut self.0) as f32).collect()
    }

    /// `n` draws that are `true` with probability `p` (clamped to `[0, 1]`).
    pub fn bernoulli(&mut self, n: usize, p: f64) -> Vec<bool> {
        let p = p.clamp(0.0, 1.0);
        (0..n)
            .map(|_| rand::Rng::random_bool(&mut self.0, p))
            .collect()
    }

    /// `N(mean, std)` truncated to `[lo, hi]` by rejection, as `torch.nn.init.trunc_normal_`.
    pub fn truncated_normal(
        &mut self,
        n: usize,
        mean: f64,
        std: f64,
        lo: f64,
        hi: f64,
    ) -> Vec<f32> {
        let dist = Normal::new(mean, std).expect("std is a positive constant");
        (0..n)
            .map(|_| {
                loop {
                    let v = dist.sample(&mut self.0);
                    if (lo..=hi).contains(&v) {
                        break v as f32;
                    }
                }
            })
            .collect()
    }
}

/// A seed for a host-side generator, drawn from `device`'s random stream (so `Device::seed`
/// makes what the generator produces reproducible).
pub(crate) fn device_seed(device: &Device) -> u64 {
    let draw = Tensor::<1, Int>::random([2], Distribution::Uniform(0.0, 2147483647.0), device)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap_or_default();
    draw.iter().fold(0u64, |acc, v| (acc << 31) ^ (*v as u64))
}

/// A parameter holding `values` with `shape`.
pub(crate) fn param<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// A parameter filled with `value`.
pub(crate) fn constant<const D: usize>(
    value: f32,
    shape: [usize; D],
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    param(vec![value; n], shape, device)
}

/// A `Linear` `[d_in, d_out]` with the given weight and bias values.
pub(crate) fn dense(
    weight: Vec<f32>,
    bias: Vec<f32>,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Linear {
    Linear {
        weight: param(weight, [d_in, d_out], device),
        bias: Some(param(bias, [d_out], device)),
    }
}

/// A `Linear` `[d_in, d_out]` initialised as torch's `nn.Linear`: weight and bias from
/// `U(-1/√d_in, 1/√d_in)` (kaiming-uniform with a = √5).
pub(crate) fn torch_linear(
    rng: &mut InitRng,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Linear {
    let bound = 1.0 / (d_in as f64).sqrt();
    let weight = rng.uniform(d_in * d_out, bound);
    dense(weight, rng.uniform(d_out, bound), d_in, d_out, device)
}
