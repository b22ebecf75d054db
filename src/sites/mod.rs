//! Sites: the points of a host model where adapters act. A [`ResidualSite`] sits where a
//! sublayer adds its residual (bottleneck adapters, AdapterFusion); a [`LinearSite`] replaces a
//! projection (LoRA, IA3); an [`AttentionSite`] takes key/value prefixes in an attention layer,
//! from the model's [`PrefixPool`] (prefix tuning); the [`EmbeddingSite`] adds a prompt to the
//! embedded input (prompt tuning); a [`HiddenStateSite`] intervenes on a layer's output at
//! chosen positions (ReFT).

mod attention;
mod embedding;
mod hidden;
mod linear;
mod named;
mod prefix;
mod residual;
mod rows;

pub use crate::config::{LinearLocation, LinearPosition, SiteLocation, SitePosition};
pub use attention::{AttentionSite, PrefixedKeyValues};
pub use embedding::{EmbeddingSite, PromptPlacement};
pub use hidden::{HiddenStateSite, InterventionPositions};
pub use linear::LinearSite;
pub use named::NamedModules;
pub use prefix::{PrefixPool, PrefixStates};
pub use residual::ResidualSite;
