//! Sites: the points of a host model where adapters act. A [`ResidualSite`] sits where a
//! sublayer adds its residual (bottleneck adapters, AdapterFusion); a [`LinearSite`] replaces a
//! projection (LoRA, IA3); an [`AttentionSite`] takes key/value prefixes in an attention layer,
//! from the model's [`PrefixPool`] (prefix tuning); the [`EmbeddingSite`] adds a prompt to the
//! embedded input (prompt tuning); a [`HiddenStateSite`] intervenes on a layer's output at
//! chosen positions (ReFT). What an adapter shares across layers (Compacter's PHM rule) sits once
//! in the model's [`SharedParameters`].

/// `Module` and `ModuleDisplay` for a site whose parameters all sit in one keyed container field:
/// the container is visited in the site's place, so its entries appear under the site's own
/// field name in the host (`prefix_tuning.<name>...`).
macro_rules! container_site_module {
    ($site:ty, $field:ident) => {
        // A site with the container as its only field names every field in these updates.
        #[allow(clippy::needless_update)]
        impl burn::module::Module for $site {
            fn collect_devices(&self, devices: burn::module::Devices) -> burn::module::Devices {
                self.$field.collect_devices(devices)
            }

            fn fork(self, device: &burn::tensor::Device) -> Self {
                Self {
                    $field: self.$field.fork(device),
                    ..self
                }
            }

            fn to_device(self, device: &burn::tensor::Device) -> Self {
                Self {
                    $field: self.$field.to_device(device),
                    ..self
                }
            }

            fn train(self) -> Self {
                Self {
                    $field: self.$field.train(),
                    ..self
                }
            }

            fn valid(&self) -> Self {
                Self {
                    $field: self.$field.valid(),
                    ..self.clone()
                }
            }

            fn materialize(self) -> Self {
                Self {
                    $field: self.$field.materialize(),
                    ..self
                }
            }

            fn visit<V: burn::module::ModuleVisitor>(&self, visitor: &mut V) {
                self.$field.visit(visitor);
            }

            fn map<M: burn::module::ModuleMapper>(self, mapper: &mut M) -> Self {
                Self {
                    $field: self.$field.map(mapper),
                    ..self
                }
            }
        }

        impl burn::module::ModuleDisplayDefault for $site {
            fn content(&self, content: burn::module::Content) -> Option<burn::module::Content> {
                self.$field.content(content)
            }
        }

        impl burn::module::ModuleDisplay for $site {}
    };
}

mod attention;
mod embedding;
mod hidden;
mod linear;
mod named;
mod prefix;
mod residual;
mod rows;
mod shared;

pub use crate::config::{LinearLocation, LinearPosition, SiteLocation, SitePosition};
pub use attention::{AttentionSite, PrefixedKeyValues};
pub use embedding::{EmbeddingSite, PromptPlacement};
pub use hidden::{HiddenStateSite, InterventionPositions};
pub use linear::LinearSite;
pub(crate) use named::NAMED_MODULES;
pub use named::NamedModules;
pub use prefix::{PrefixPool, PrefixStates};
pub use residual::ResidualSite;
pub use shared::SharedParameters;
