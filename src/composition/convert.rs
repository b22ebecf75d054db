//! What the model API accepts where it asks for a setup or a fusion: values, and their text.

use super::AdapterSetup;
use crate::error::{Error, Result};
use crate::names::FusionKey;

/// Anything that names an adapter setup: an [`AdapterSetup`], or its text form, which is parsed
/// (`"sst"`, `"Stack[a, b]"`, `"Fuse[a, b]"`; see [`AdapterSetup::parse`]).
///
/// ```
/// use burn_adapters::composition::IntoAdapterSetup;
/// use burn_adapters::AdapterSetup;
/// assert_eq!("Stack[a, b]".into_setup()?, AdapterSetup::stack(["a", "b"]));
/// assert_eq!("sst".into_setup()?, AdapterSetup::Name("sst".into()));
/// # Ok::<(), burn_adapters::Error>(())
/// ```
pub trait IntoAdapterSetup {
    /// The setup, or the error that parsing its text gave.
    fn into_setup(self) -> Result<AdapterSetup>;
}

impl IntoAdapterSetup for AdapterSetup {
    fn into_setup(self) -> Result<AdapterSetup> {
        Ok(self)
    }
}

impl IntoAdapterSetup for &AdapterSetup {
    fn into_setup(self) -> Result<AdapterSetup> {
        Ok(self.clone())
    }
}

impl IntoAdapterSetup for &str {
    fn into_setup(self) -> Result<AdapterSetup> {
        AdapterSetup::parse(self)
    }
}

impl IntoAdapterSetup for String {
    fn into_setup(self) -> Result<AdapterSetup> {
        AdapterSetup::parse(&self)
    }
}

impl IntoAdapterSetup for &String {
    fn into_setup(self) -> Result<AdapterSetup> {
        AdapterSetup::parse(self)
    }
}

/// Anything that names an AdapterFusion layer: a [`FusionKey`], a `Fuse` block (its
/// [`AdapterSetup::fusion_key`]), or text: a `Fuse` block (`"Fuse[a, b]"`) or AdapterHub's
/// comma-separated list (`"a,b"`), as AdapterHub's `add_adapter_fusion` accepts.
pub trait IntoFusionKey {
    /// The key, or why the value names no fusion.
    fn into_fusion_key(self) -> Result<FusionKey>;
}

impl IntoFusionKey for FusionKey {
    fn into_fusion_key(self) -> Result<FusionKey> {
        Ok(self)
    }
}

impl IntoFusionKey for &FusionKey {
    fn into_fusion_key(self) -> Result<FusionKey> {
        Ok(self.clone())
    }
}

impl IntoFusionKey for AdapterSetup {
    fn into_fusion_key(self) -> Result<FusionKey> {
        (&self).into_fusion_key()
    }
}

impl IntoFusionKey for &AdapterSetup {
    fn into_fusion_key(self) -> Result<FusionKey> {
        match self {
            AdapterSetup::Fuse(_) => {
                self.validate()?;
                self.fusion_key().ok_or_else(|| {
                    Error::InvalidSetup(format!("`{self}` names fewer than two adapters"))
                })
            }
            other => Err(Error::InvalidSetup(format!(
                "`{other}` does not name adapters to fuse; use Fuse[a, b] or \"a,b\""
            ))),
        }
    }
}

impl IntoFusionKey for &str {
    fn into_fusion_key(self) -> Result<FusionKey> {
        if self.trim_start().starts_with("Fuse[") {
            AdapterSetup::parse(self)?.into_fusion_key()
        } else {
            FusionKey::parse(self)
        }
    }
}

impl IntoFusionKey for &String {
    fn into_fusion_key(self) -> Result<FusionKey> {
        self.as_str().into_fusion_key()
    }
}

impl<S: AsRef<str>> IntoFusionKey for &[S] {
    fn into_fusion_key(self) -> Result<FusionKey> {
        FusionKey::new(self.iter().map(|s| s.as_ref().to_string()))
    }
}

impl<S: AsRef<str>, const N: usize> IntoFusionKey for [S; N] {
    fn into_fusion_key(self) -> Result<FusionKey> {
        self.as_slice().into_fusion_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusions_are_named_by_blocks_lists_and_text() {
        let want = FusionKey::new(["a", "b"]).unwrap();
        assert_eq!("Fuse[a, b]".into_fusion_key().unwrap(), want);
        assert_eq!("a,b".into_fusion_key().unwrap(), want);
        assert_eq!(["a", "b"].into_fusion_key().unwrap(), want);
        let nested = AdapterSetup::parse("Fuse[Stack[x, a], b]").unwrap();
        assert_eq!(nested.into_fusion_key().unwrap(), want);
        assert!("Stack[a, b]".into_fusion_key().is_err());
        assert!("a".into_fusion_key().is_err());
    }
}
