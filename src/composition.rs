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
        AdapterSetup::Stack(
            names
                .into_iter()
                .map(|n| AdapterSetup::Name(n.into()))
                .collect(),
        )
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
                    return Err(Error::InvalidSetup(
                        "`Stack[]` needs at least one adapter".into(),
                    ));
                }
                for child in children {
                    if let AdapterSetup::Stack(_) = child {
                        return Err(Error::InvalidSetup(format!(
                            "`{child}` cannot be nested in `{self}`"
                        )));
                    }
                    child.validate()?;
                }
                Ok(())
            }
        }
    }
}

impl AdapterSetup {
    /// Parses the text form printed by `Display`: a name, or `Stack[a, b]` (nestable blocks).
    ///
    /// ```
    /// use burn_adapters::AdapterSetup;
    /// let setup = AdapterSetup::parse("Stack[a, b]")?;
    /// assert_eq!(setup, AdapterSetup::stack(["a", "b"]));
    /// assert_eq!(setup.to_string(), "Stack[a, b]");
    /// # Ok::<(), burn_adapters::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self> {
        let mut rest = text.trim();
        let setup = parse_setup(&mut rest, text)?;
        if !rest.trim().is_empty() {
            return Err(syntax(text, rest, "unexpected text after the setup"));
        }
        setup.validate()?;
        Ok(setup)
    }
}

fn syntax(text: &str, rest: &str, reason: &str) -> Error {
    Error::ConfigSyntax {
        input: text.to_string(),
        position: text.len() - rest.len(),
        reason: reason.to_string(),
    }
}

fn parse_setup(rest: &mut &str, text: &str) -> Result<AdapterSetup> {
    *rest = rest.trim_start();
    let end = rest
        .find(|c: char| matches!(c, '[' | ']' | ',' | '(' | ')') || c.is_whitespace())
        .unwrap_or(rest.len());
    let (word, after) = rest.split_at(end);
    if word.is_empty() {
        return Err(syntax(text, rest, "expected an adapter name or a block"));
    }
    *rest = after.trim_start();
    if !rest.starts_with('[') {
        return Ok(AdapterSetup::Name(word.to_string()));
    }
    *rest = &rest[1..];
    let mut children = Vec::new();
    loop {
        children.push(parse_setup(rest, text)?);
        *rest = rest.trim_start();
        match rest.chars().next() {
            Some(',') => *rest = &rest[1..],
            Some(']') => {
                *rest = &rest[1..];
                break;
            }
            _ => return Err(syntax(text, rest, "expected `,` or `]`")),
        }
    }
    match word {
        "Stack" => Ok(AdapterSetup::Stack(children)),
        "Fuse" | "Split" | "BatchSplit" | "Parallel" | "Average" => {
            Err(Error::Unsupported(format!("composition block `{word}`")))
        }
        other => Err(syntax(
            text,
            rest,
            &format!("unknown composition block `{other}`"),
        )),
    }
}

impl std::str::FromStr for AdapterSetup {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
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
