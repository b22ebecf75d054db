//! Sites: the points of a host model where adapters act. A [`ResidualSite`] sits where a
//! sublayer adds its residual (bottleneck adapters, AdapterFusion); a [`LinearSite`] replaces a
//! projection (LoRA, IA3); an [`AttentionSite`] takes key/value prefixes in an attention layer,
//! from the model's [`PrefixPool`] (prefix tuning).

mod attention;
mod linear;
mod named;
mod prefix;
mod residual;
mod rows;

pub use crate::config::{LinearLocation, LinearPosition, SiteLocation, SitePosition};
pub use attention::{AttentionSite, PrefixedKeyValues};
pub use linear::LinearSite;
pub use named::NamedModules;
pub use prefix::{PrefixPool, PrefixStates};
pub use residual::ResidualSite;
