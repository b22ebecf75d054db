//! Adapter methods: the trainable modules and their forward math.

mod activation;
mod base_init;
mod blocks;
mod bottleneck;
mod dora;
pub(crate) mod dropout;
mod fusion;
pub(crate) mod init;
mod invertible;
mod lora;
mod multi_task;
mod phm;
mod phm_shared;
mod prefix;
mod prompt;
mod reft;
mod vera;

pub(crate) use base_init::InitialFactors;
pub use blocks::OutputBlocks;
pub use bottleneck::*;
pub(crate) use dropout::{dropout, dropout_active};
pub use fusion::*;
pub use invertible::*;
pub use lora::*;
pub use multi_task::*;
pub use phm::*;
pub use phm_shared::*;
pub use prefix::*;
pub use prompt::*;
pub use reft::*;
pub(crate) use vera::VeraProjections;
pub use vera::VeraScales;
