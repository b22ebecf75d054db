#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
//! # burn-adapters
//!
//! AdapterHub-style modular, parameter-efficient fine-tuning for [burn](https://burn.dev):
//! named bottleneck adapters (Pfeiffer, Houlsby, parallel), LoRA and IA3 that you add to a
//! transformer, train while the base model stays frozen, switch, merge, and save in AdapterHub's
//! (or, for LoRA, Hugging Face PEFT's) file format.
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use burn_adapters::prelude::*;
//! use burn_adapters::models::bert::{BertConfig, BertInput, BertModel};
//!
//! let device = Device::flex();
//! let mut model = BertModel::new(&BertConfig::tiny(), &device);
//! model.add_adapter("sentiment", AdapterConfig::load("seq_bn[reduction_factor=8]")?)?;
//! model.train_adapter("sentiment")?; // base frozen, adapter trainable and active
//!
//! let ids = Tensor::<2, Int>::from_ints([[2, 7, 9, 3]], &device);
//! let mask = Tensor::<2, Int>::ones([1, 4], &device);
//! let hidden = model.forward(BertInput::new(ids, mask)).last_hidden_state;
//! assert_eq!(hidden.dims(), [1, 4, 32]);
//! # Ok::<(), burn_adapters::Error>(())
//! ```
//!
//! The crate is organised in layers, each only using the ones above it:
//! - [`config`]: method configs ([`BnConfig`], [`config::LoRAConfig`]) and [`AdapterConfig`] with AdapterHub's JSON and
//!   config-string syntax;
//! - [`methods`]: the adapter modules and their forward math; [`heads`]: prediction heads;
//! - [`sites`]: where adapters act inside a host ([`sites::ResidualSite`] at residual blocks,
//!   [`sites::LinearSite`] in projections);
//! - [`composition`]: active setups ([`AdapterSetup`]: Stack, Fuse, Split, BatchSplit, Parallel,
//!   Average, PerRow) and their text form;
//! - [`model`]: the [`AdapterHost`] trait and the [`AdapterModel`] API written once on top of it;
//! - [`models`]: reference hosts (BERT, burn's `TransformerEncoder`).
//! - [`train`]: a small training helper on top of burn's optimizers.

pub mod backend;
pub mod composition;
pub mod config;
mod error;
pub mod heads;
pub mod io;
pub mod methods;
pub mod model;
pub mod models;
pub mod sites;
pub mod train;

pub use burn;
pub use composition::AdapterSetup;
pub use config::{AdapterConfig, BnConfig};
pub use error::{Error, Result};
pub use model::{AdapterHost, AdapterModel, AdapterRegistry, AdapterSummary, AddAdapterOptions};

/// The types most programs import.
pub mod prelude {
    pub use crate::composition::AdapterSetup;
    pub use crate::config::{AdapterConfig, BnConfig};
    pub use crate::error::{Error, Result};
    pub use crate::model::{AdapterHost, AdapterModel, AddAdapterOptions};
}
