//! Sharing MTL-LoRA factors between the modules of a site (AdapterHub's `share_parameters`).

use burn::module::Param;
use burn::tensor::Tensor;

use super::LinearSite;
use crate::error::{Error, Result};
use crate::methods::{LoRA, SharedFactors};

impl LinearSite {
    /// `A` and the up projections of MTL-LoRA module `name` (its own or the ones it shares).
    fn factors(&self, name: &str) -> Option<(Tensor<2>, Tensor<3>)> {
        let lora = self.loras.get(name)?;
        let own = lora.multi_task.as_ref()?.lora_b.as_ref();
        match (&lora.lora_a, own, self.shared_of(lora)) {
            (Some(a), Some(b), _) => Some((a.val(), b.val())),
            (None, None, Some(shared)) => Some((shared.lora_a.val(), shared.lora_b.val())),
            _ => None,
        }
    }

    /// Whether every one of `names` has a module here (sharing happens only there, as in
    /// AdapterHub).
    pub(crate) fn holds_all(&self, names: &[&str]) -> bool {
        names.iter().all(|name| self.loras.get(name).is_some())
    }

    /// Checks that the modules `names`, where all of them are held here, are MTL-LoRA modules
    /// with factors of one shape.
    pub(crate) fn check_share(&self, names: &[&str]) -> Result<()> {
        if !self.holds_all(names) {
            return Ok(());
        }
        let mismatch = |reason: String| {
            Err(Error::InvalidSetup(format!(
                "share_parameters({}) at {}: {reason}",
                names.join(", "),
                self.location()
            )))
        };
        let mut shapes = Vec::new();
        for name in names {
            let Some((a, b)) = self.factors(name) else {
                return mismatch(format!("`{name}` is not an MTL-LoRA module"));
            };
            shapes.push((a.dims(), b.dims()));
        }
        if shapes.windows(2).any(|w| w[0] != w[1]) {
            return mismatch(format!(
                "their A and up projections differ in shape: {shapes:?}"
            ));
        }
        Ok(())
    }

    /// Makes the modules `names` share `reference`'s `A` and up projections under `key` (a
    /// no-op unless all are held here; [`LinearSite::check_share`] passed).
    pub(crate) fn share(&mut self, key: &str, names: &[&str], reference: &str) {
        if !self.holds_all(names) {
            return;
        }
        let Some((a, b)) = self.factors(reference) else {
            return;
        };
        let shared = SharedFactors {
            lora_a: copy(a),
            lora_b: copy(b),
        };
        self.shared.insert(key.to_string(), shared);
        let loras = std::mem::take(&mut self.loras);
        self.loras = loras.map_entries(|name, mut lora| {
            if names.contains(&name.as_str()) {
                lora.lora_a = None;
                if let Some(multi_task) = &mut lora.multi_task {
                    multi_task.lora_b = None;
                }
                lora.shared = Some(key.to_string());
            }
            lora
        });
        self.drop_unused_shares();
    }

    /// Gives every module sharing `key` its own copy of the factors again, and drops them.
    pub(crate) fn unshare(&mut self, key: &str) {
        let Some(shared) = self.shared.get(key) else {
            return;
        };
        let (a, b) = (shared.lora_a.val(), shared.lora_b.val());
        let loras = std::mem::take(&mut self.loras);
        self.loras = loras.map_entries(|_, lora| {
            if lora.shared.as_deref() == Some(key) {
                own_factors(lora, a.clone(), b.clone())
            } else {
                lora
            }
        });
        self.shared.remove(key);
    }

    /// Replaces every share by `f(members, factors)`, given the modules that share it; `f` must
    /// keep their structure.
    pub(crate) fn map_shared(&mut self, f: impl Fn(&[&str], SharedFactors) -> SharedFactors) {
        let shared = std::mem::take(&mut self.shared);
        self.shared = shared.map_entries(|key, factors| f(&self.share_members(key), factors));
    }

    /// The modules that share the factors under `key`.
    pub fn share_members(&self, key: &str) -> Vec<&str> {
        self.loras
            .iter()
            .filter(|(_, lora)| lora.shared.as_deref() == Some(key))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Drops the shares no module uses any more.
    pub(super) fn drop_unused_shares(&mut self) {
        let unused: Vec<String> = self
            .shared
            .iter()
            .map(|(key, _)| key.clone())
            .filter(|key| self.share_members(key).is_empty())
            .collect();
        for key in unused {
            self.shared.remove(&key);
        }
    }
}

/// `lora` with its own copies of `a` and the up projections `b`.
fn own_factors(mut lora: LoRA, a: Tensor<2>, b: Tensor<3>) -> LoRA {
    lora.lora_a = Some(copy(a));
    if let Some(multi_task) = &mut lora.multi_task {
        multi_task.lora_b = Some(copy(b));
    }
    lora.shared = None;
    lora
}

/// A new parameter holding `value`'s values, with its gradient requirement.
fn copy<const D: usize>(value: Tensor<D>) -> Param<Tensor<D>> {
    let require_grad = value.is_require_grad();
    Param::from_tensor(value.detach().set_require_grad(require_grad))
}
