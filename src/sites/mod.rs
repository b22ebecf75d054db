//! Sites: the points of a host model where adapters act. A [`ResidualSite`] sits where a
//! sublayer adds its residual (bottleneck adapters, AdapterFusion); a [`LinearSite`] replaces a
//! projection (LoRA, IA3).

mod linear;
mod named;
mod residual;
mod rows;

pub use crate::config::{LinearLocation, LinearPosition, SiteLocation, SitePosition};
pub use linear::LinearSite;
pub use named::NamedModules;
pub use residual::ResidualSite;
