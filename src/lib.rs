#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
//! # burn-adapters
//!
//! AdapterHub-style modular, parameter-efficient fine-tuning for [burn](https://burn.dev):
//! named bottleneck adapters (Pfeiffer, Houlsby, parallel, invertible), LoRA, DoRA, IA3 and MTL-LoRA,
//! prefix and prompt tuning and ReFT that you add to a transformer, train while the base model
//! stays frozen, switch, merge, and save in AdapterHub's (or, for LoRA, Hugging Face PEFT's) file
//! format.
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use burn_adapters::prelude::*;
//! use burn_adapters::models::bert::{BertConfig, BertInput};
//!
//! let device = Device::flex().autodiff();
//! let mut model = BertConfig::tiny().init(&device)?;
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
//! ## Layers
//!
//! The modules form layers, from the bottom up; each imports (`crate::` paths) only from the
//! layers before it. `tests/layers.rs` reads this list and fails on any upward import.
//!
//! 1. `error`: the [`Error`] enum.
//! 2. `backend`: picking a device by name; which device host-side kernels run on.
//! 3. `names`: what may name an adapter; [`FusionKey`], the key of a fusion layer.
//! 4. `config`: method configs ([`BnConfig`], [`config::LoRAConfig`]) and [`AdapterConfig`] with
//!    AdapterHub's JSON and config-string syntax; where configs place modules.
//! 5. `composition`: active setups ([`AdapterSetup`]: Stack, Fuse, Split, BatchSplit, Parallel,
//!    Average, PerRow), their text form, and the plan a setup compiles into.
//! 6. `methods`: the adapter modules and their forward math.
//! 7. `heads`: prediction heads.
//! 8. `sites`: where methods act inside a host ([`sites::ResidualSite`] at residual blocks,
//!    [`sites::LinearSite`] in projections, [`sites::AttentionSite`] and [`sites::PrefixPool`]
//!    for key/value prefixes, [`sites::EmbeddingSite`] for prompts and invertible adapters,
//!    [`sites::HiddenStateSite`] for ReFT interventions).
//! 9. `io`: file formats as plain values (AdapterHub's and PEFT's directories); no modules, no
//!    hosts.
//! 10. `model`: the [`AdapterHost`] trait and the [`AdapterModel`] API written once on top of it;
//!     it builds modules from what `io` reads and installs them in the sites.
//! 11. `train`: a small training helper on top of burn's optimizers, and (feature `train`) the
//!     steps, dataset and batcher burn-train's `Learner` trains adapter models with.
//! 12. `generation`: text generation for any causal language model ([`generation::CausalLm`]).
//! 13. `models`: reference hosts (BERT, Llama-family and GPT-2 decoders, burn's `TransformerEncoder`).

pub mod backend;
pub mod composition;
pub mod config;
mod error;
pub mod generation;
pub mod heads;
pub mod io;
pub mod methods;
pub mod model;
pub mod models;
pub mod names;
pub mod sites;
pub mod train;

/// The burn version this crate is built on, re-exported so that a program can use the same one
/// without depending on burn itself: `use burn_adapters::burn::tensor::{Device, Tensor};`.
///
/// It has the features this crate enables (`std`, `autodiff`, `optim`, `safetensors`,
/// `pytorch`, `linalg`, and the backend features of this crate's own, e.g. `flex`). A program
/// that also depends on `burn` directly gets the same crate as long as its version requirement
/// is compatible (`0.22`), with the union of both feature sets.
pub use burn;
pub use composition::{AdapterSetup, IntoAdapterSetup, IntoFusionKey};
pub use config::{AdapterConfig, BnConfig};
pub use error::{Error, Result};
pub use model::{AdapterHost, AdapterModel, AdapterRegistry, AdapterSummary, AddAdapterOptions};
pub use names::FusionKey;

/// Internals that this crate's own integration tests and fuzz targets reach: not part of the
/// API, and may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::methods::dropout::dropout;

    /// The batch rows the plan of `setup` routes, in the order the groups run them (each row
    /// once when the routing is right), with `Parallel`'s copies counted in `batch`.
    pub fn route_rows(setup: &crate::AdapterSetup, batch: usize) -> Vec<usize> {
        let plan = crate::composition::ActivePlan::new(setup.clone());
        let routing = plan.routing(batch);
        routing.groups.iter().flat_map(|g| g.rows.iter()).collect()
    }
}

/// The types most programs import.
pub mod prelude {
    pub use crate::composition::{AdapterSetup, IntoAdapterSetup, IntoFusionKey};
    pub use crate::config::{AdapterConfig, BnConfig};
    pub use crate::error::{Error, Result};
    pub use crate::model::{AdapterHost, AdapterModel, AddAdapterOptions};
    pub use crate::names::FusionKey;
}
