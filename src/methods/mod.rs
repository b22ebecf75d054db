//! Adapter methods: the trainable modules and their forward math.

mod activation;
mod bottleneck;
mod dropout;
mod fusion;
pub(crate) mod init;
mod lora;

pub use bottleneck::*;
pub use dropout::*;
pub use fusion::*;
pub use lora::*;
