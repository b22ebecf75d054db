//! Names: which strings may name an adapter, and the keys of AdapterFusion layers.

use std::fmt;

use crate::error::{Error, Result, shorten};

/// Characters that would break parameter paths, config strings or the composition text form.
const FORBIDDEN_IN_NAMES: &[char] = &['.', ',', '[', ']', '(', ')', '|', '=', '/', '\\'];

/// The longest name in bytes: `save_all_adapters` uses names as directory names.
const MAX_NAME_BYTES: usize = 255;

/// Checks that `name` can name an adapter or a head: not empty, at most 255 bytes, and free of
/// whitespace, control characters and `. , [ ] ( ) | = / \`.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidName {
        name: shorten(name, 0),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("names must not be empty".into()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "names are at most {MAX_NAME_BYTES} bytes (they name directories), this one has {}",
            name.len()
        )));
    }
    match name
        .chars()
        .find(|c| FORBIDDEN_IN_NAMES.contains(c) || c.is_whitespace() || c.is_control())
    {
        Some(c) => Err(invalid(format!("names must not contain {c:?}"))),
        None => Ok(()),
    }
}

/// The adapters an AdapterFusion layer attends over, in order: the key under which the layer is
/// stored, saved and activated.
///
/// It prints as AdapterHub's fusion name, the adapter names joined by commas (`a,b`), which is
/// also the name of the layer in AdapterHub's files. For a `Fuse` block the key holds the last
/// adapter of each child, as AdapterHub's `Fuse.name` does: `Fuse[Stack[a, b], c]` attends over
/// the outputs of `b` and `c` with the layer `b,c`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FusionKey(Vec<String>);

impl FusionKey {
    /// The key of a fusion over `adapters`: at least two valid adapter names.
    pub fn new<I, S>(adapters: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let adapters: Vec<String> = adapters.into_iter().map(Into::into).collect();
        for name in &adapters {
            validate_name(name)?;
        }
        if adapters.len() < 2 {
            return Err(Error::InvalidSetup(format!(
                "AdapterFusion needs at least two adapters, got {}",
                adapters.len()
            )));
        }
        Ok(Self(adapters))
    }

    /// Parses AdapterHub's comma-separated form (`"a,b"`; spaces around names are ignored).
    pub fn parse(text: &str) -> Result<Self> {
        Self::new(text.split(',').map(str::trim))
    }

    /// The fused adapters, in order.
    pub fn adapters(&self) -> &[String] {
        &self.0
    }

    /// Whether `name` is one of the fused adapters.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

impl fmt::Display for FusionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl PartialEq<str> for FusionKey {
    fn eq(&self, other: &str) -> bool {
        let mut parts = other.split(',');
        self.0.iter().all(|a| parts.next() == Some(a.as_str())) && parts.next().is_none()
    }
}

impl PartialEq<&str> for FusionKey {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_what_breaks_paths_and_texts() {
        assert!(validate_name("sst-2_v1").is_ok());
        for bad in ["", "a.b", "a,b", "a b", "Stack[a]", "a\n", &"x".repeat(256)] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fusion_keys_print_and_parse_as_adapterhub_names() {
        let key = FusionKey::parse("a, b").unwrap();
        assert_eq!(key.adapters(), ["a", "b"]);
        assert_eq!(key.to_string(), "a,b");
        assert_eq!(key, "a,b");
        assert_ne!(key, "a,b,c");
        assert_ne!(key, "a");
        assert!(FusionKey::parse("a").is_err());
        assert!(FusionKey::parse("a,b c").is_err());
    }
}
