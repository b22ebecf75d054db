//! Applying an [`Activation`] to a tensor.

#[cfg(feature = "flex")]
use burn::tensor::TensorData;
use burn::tensor::{Tensor, activation};

use crate::config::Activation;

impl Activation {
    /// Applies the non-linearity element-wise.
    ///
    /// # Shapes
    ///
    /// - input: `[..]`, output: the same shape.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => activation::relu(x),
            Activation::Gelu => gelu(x),
            Activation::GeluNew => activation::gelu_approximate(x),
            Activation::Silu => activation::silu(x),
            Activation::Tanh => activation::tanh(x),
            Activation::Sigmoid => activation::sigmoid(x),
            // torch.nn.functional.leaky_relu's default slope
            Activation::LeakyRelu => activation::leaky_relu(x, 0.01),
            Activation::Identity => x,
        }
    }
}

/// The exact (erf) GELU. burn-flex evaluates it and its backward element by element on one
/// thread, which made it a third of a BERT forward on the CPU; for f32 on flex the same
/// expressions (the same `libm` erf, so the same bits) run on the host across rayon's threads
/// instead. On an autodiff device the graph gets `y + (x - x̄)·d`, with `y` the host's GELU, `d`
/// its derivative and `x̄` the detached input: the value is `y` (`x - x̄` is exactly zero for a
/// finite `x`) and the gradient `grad·d`, bit for bit burn's `gelu_backward`. Elsewhere it is
/// burn's `gelu`.
fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        let device = x.device();
        if crate::backend::is_flex(&device) && x.dtype() == burn::tensor::DType::F32 {
            if !x.is_tracked() {
                return Tensor::from_data(host::gelu(x.into_data(), None), &device);
            }
            let detached = x.clone().detach();
            let mut derivative = Vec::new();
            let value = host::gelu(detached.clone().into_data(), Some(&mut derivative));
            let derivative = TensorData::new(derivative, x.shape());
            let derivative = Tensor::<D>::from_data(derivative, &device);
            let value = Tensor::<D>::from_data(value, &device);
            return value + (x - detached) * derivative;
        }
    }
    activation::gelu(x)
}

#[cfg(feature = "flex")]
mod host {
    use burn::tensor::TensorData;
    use core::f32::consts::{PI, SQRT_2};
    use rayon::prelude::*;

    /// Values per rayon task: large enough to amortise the task, small enough to balance.
    const CHUNK: usize = 1 << 14;

    /// GELU of every value of `data` (f32), in place; with `derivative`, also fills it with
    /// GELU's derivative at each value. burn-flex's expressions, term for term.
    pub(super) fn gelu(mut data: TensorData, derivative: Option<&mut Vec<f32>>) -> TensorData {
        let values = data
            .as_mut_slice::<f32>()
            .expect("an f32 tensor's data is f32");
        let erf = |x: f32| libm::erff(x / SQRT_2);
        match derivative {
            None => values.par_chunks_mut(CHUNK).for_each(|chunk| {
                for v in chunk {
                    *v = 0.5 * *v * (1.0 + erf(*v));
                }
            }),
            Some(derivative) => {
                let inv_sqrt_2pi: f32 = 1.0 / (2.0 * PI).sqrt();
                derivative.resize(values.len(), 0.0);
                values
                    .par_chunks_mut(CHUNK)
                    .zip(derivative.par_chunks_mut(CHUNK))
                    .for_each(|(chunk, slopes)| {
                        for (v, slope) in chunk.iter_mut().zip(slopes) {
                            let x = *v;
                            let e = erf(x);
                            let cdf = 0.5 * (1.0 + e);
                            let pdf = inv_sqrt_2pi * (-0.5 * x * x).exp();
                            *slope = cdf + x * pdf;
                            *v = 0.5 * x * (1.0 + e);
                        }
                    });
            }
        }
        data
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor, activation};

    use crate::config::Activation;

    #[test]
    fn gelu_equals_burns_bit_for_bit_and_keeps_its_gradient() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            device.seed(1);
            let x = Tensor::<3>::random([3, 50_000, 2], Distribution::Normal(0.0, 3.0), &device);
            let ours = Activation::Gelu.forward(x.clone()).into_data();
            let burns = activation::gelu(x).into_data();
            assert_eq!(ours, burns, "{device:?}");
        }
        // In a graph: the same values and, for an arbitrary upstream gradient, the same
        // gradient as burn's gelu_backward, across several host chunks.
        let device = Device::flex().autodiff();
        device.seed(2);
        let x = Tensor::<3>::random([3, 20_000, 2], Distribution::Normal(0.0, 3.0), &device)
            .require_grad();
        let upstream = Tensor::<3>::random([3, 20_000, 2], Distribution::Normal(0.0, 1.0), &device);
        let gradient = |y: Tensor<3>| {
            let grads = (y * upstream.clone()).sum().backward();
            x.grad(&grads)
                .expect("the GELU stays in the graph")
                .into_data()
        };
        let ours = Activation::Gelu.forward(x.clone());
        let burns = activation::gelu(x.clone());
        assert_eq!(ours.clone().into_data(), burns.clone().into_data());
        assert_eq!(gradient(ours), gradient(burns));
    }
}
