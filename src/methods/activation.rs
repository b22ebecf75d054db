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
            Activation::Gelu => activation::gelu(x),
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
