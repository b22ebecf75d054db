//! Applying an [`Activation`] to a tensor.

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

/// The exact (erf) GELU. burn-flex evaluates it element by element on one thread, which made it
/// a third of a BERT forward on the CPU; for f32 inference on flex the same expression (the same
/// `libm` erf, so the same bits) runs on the host across rayon's threads instead. Elsewhere, and
/// on autodiff devices (which need the backward), it is burn's `gelu`.
fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        use burn::tensor::DType;
        use rayon::prelude::*;

        let device = x.device();
        // Not on autodiff devices: the host result would be cut off from the graph.
        if crate::backend::is_flex(&device) && !device.is_autodiff() && x.dtype() == DType::F32 {
            let mut data = x.into_data();
            let values = data
                .as_mut_slice::<f32>()
                .expect("an f32 tensor's data is f32");
            values.par_chunks_mut(1 << 14).for_each(|chunk| {
                for v in chunk {
                    // burn-flex's expression, term for term
                    *v = 0.5 * *v * (1.0 + libm::erff(*v / core::f32::consts::SQRT_2));
                }
            });
            return Tensor::from_data(data, &device);
        }
    }
    activation::gelu(x)
}

#[cfg(test)]
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
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::random([4, 8], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let grads = Activation::Gelu.forward(x.clone()).sum().backward();
        let ours = x.grad(&grads).expect("the GELU stays in the graph");
        let grads = activation::gelu(x.clone()).sum().backward();
        assert_eq!(ours.into_data(), x.grad(&grads).unwrap().into_data());
    }
}
