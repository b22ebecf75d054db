//! Adapter setups: which adapters are active and how they combine.
//!
//! A plain name activates one adapter; [`AdapterSetup::Stack`] runs adapters one after another at
//! each site (the output of one is the input of the next), as AdapterHub's `Stack`.

use std::fmt;

use crate::error::{Error, Result};

/// The active adapter setup of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdapterSetup {
    /// A single adapter.
    Name(String),
    /// Adapters applied in sequence; names not present at a site are skipped there.
    Stack(Vec<AdapterSetup>),
}

impl AdapterSetup {
    /// A stack of the given adapter names.
    pub fn stack<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AdapterSetup::Stack(names.into_iter().map(|n| AdapterSetup::Name(n.into())).collect())
    }

    /// Every adapter name in the setup, in order of appearance.
    pub fn names(&self) -> Vec<&str> {
        match self {
            AdapterSetup::Name(name) => vec![name.as_str()],
            AdapterSetup::Stack(children) => children.iter().flat_map(|c| c.names()).collect(),
        }
    }

    /// The setup as a flat list of stacked names, the form a residual site executes.
    pub(crate) fn stacked_names(&self) -> Vec<String> {
        self.names().into_iter().map(str::to_string).collect()
    }

    /// Rejects nestings the reference rejects (a Stack directly inside a Stack, an empty Stack).
    pub fn validate(&self) -> Result<()> {
        match self {
            AdapterSetup::Name(name) => crate::model::validate_name(name),
            AdapterSetup::Stack(children) => {
                if children.is_empty() {
                    return Err(Error::InvalidSetup("`Stack[]` needs at least one adapter".into()));
                }
                for child in children {
                    if let AdapterSetup::Stack(_) = child {
                        return Err(Error::InvalidSetup(format!("`{child}` cannot be nested in `{self}`")));
                    }
                    child.validate()?;
                }
                Ok(())
            }
        }
    }
}

impl From<&str> for AdapterSetup {
    fn from(name: &str) -> Self {
        AdapterSetup::Name(name.to_string())
    }
}

impl From<String> for AdapterSetup {
    fn from(name: String) -> Self {
        AdapterSetup::Name(name)
    }
}

impl fmt::Display for AdapterSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterSetup::Name(name) => f.write_str(name),
            AdapterSetup::Stack(children) => {
                f.write_str("Stack[")?;
                for (i, child) in children.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{child}")?;
                }
                f.write_str("]")
            }
        }
    }
}
