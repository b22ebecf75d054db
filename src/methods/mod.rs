//! Adapter methods: the trainable modules and their forward math.

mod activation;
mod bottleneck;
pub(crate) mod init;

pub use bottleneck::*;
