//! Dropout with masks drawn on the host for CPU devices.
//!
//! burn's [`Dropout`] draws its mask with the backend's `random`; on burn-flex that builds a
//! Bernoulli sampler per element over one locked ChaCha stream, about 17 ns an element: a fifth
//! of a BERT training step on the CPU, mostly for the attention probabilities. On flex devices
//! [`dropout`] draws the mask on the host from a xoshiro generator instead (about 2 ns an
//! element), already scaled by `1/(1-p)`, so applying it is one multiplication. The generator is
//! seeded from the device's own random stream, so `Device::seed` still makes training
//! reproducible. Other devices draw the mask where the data lives, with burn's [`Dropout`].

use burn::nn::Dropout;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use super::init::device_seed;

/// `dropout.forward(input)` with the same semantics (active only in training mode on an
/// autodiff device; kept elements scaled by `1/(1-p)`), drawing the mask on the host where that
/// is faster (see the module docs).
///
/// # Shapes
///
/// - input: `[..., any]`
/// - output: same as input
pub fn dropout<const D: usize>(dropout: &Dropout, input: Tensor<D>) -> Tensor<D> {
    let device = input.device();
    if !dropout_active(dropout, &device) {
        return input;
    }
    // burn-flex's tensors live in host memory and its `random` is per-element: draw there.
    if !crate::backend::is_flex(&device) {
        return dropout.forward(input);
    }
    let shape = input.shape();
    let mask = host_mask(
        shape.num_elements(),
        1.0 - dropout.prob,
        device_seed(&device),
    );
    let mask = Tensor::<D>::from_data(TensorData::new(mask, shape), &device);
    let dtype = input.dtype();
    input * mask.cast(dtype)
}

/// Whether `dropout` changes its input on `device`: in training mode, on an autodiff device,
/// with a non-zero probability (burn's rule).
pub fn dropout_active(dropout: &Dropout, device: &Device) -> bool {
    dropout.training.is_enabled() && device.is_autodiff() && dropout.prob > 0.0
}

/// `n` values, each `1/keep` with probability `keep` and `0` otherwise.
fn host_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    // keep with probability threshold / 2^32 (keep is in (0, 1], so the product fits a u64)
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let pick = |bits: u32| {
        if u64::from(bits) < threshold {
            scale
        } else {
            0.0
        }
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut mask = Vec::with_capacity(n);
    // two 32-bit draws from each 64-bit output
    for _ in 0..n / 2 {
        let bits = rng.next_u64();
        mask.push(pick(bits as u32));
        mask.push(pick((bits >> 32) as u32));
    }
    if n % 2 == 1 {
        mask.push(pick(rng.next_u32()));
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_mask_keeps_the_expected_fraction() {
        let n = 1_000_001;
        let keep = 0.9;
        let mask = host_mask(n, keep, 7);
        assert_eq!(mask.len(), n);
        let scale = (1.0 / keep) as f32;
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale));
        let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64;
        // binomial(n, keep): within 6 standard deviations of the mean
        let sd = (n as f64 * keep * (1.0 - keep)).sqrt();
        assert!(
            (kept - n as f64 * keep).abs() < 6.0 * sd,
            "kept {kept} of {n}"
        );
    }

    #[test]
    fn host_mask_depends_on_the_seed_only() {
        assert_eq!(host_mask(1001, 0.5, 3), host_mask(1001, 0.5, 3));
        assert_ne!(host_mask(1001, 0.5, 3), host_mask(1001, 0.5, 4));
    }
}
