//! The text form of setups: `Stack[a, Average[b, c](weights=0.3,0.7)]`.

use std::fmt;

use super::AdapterSetup;
use crate::error::{Error, Result};

impl AdapterSetup {
    /// Parses the text form printed by `Display`. A plain name (`"sst"`) is a
    /// [`AdapterSetup::Name`]; errors are [`Error::SetupSyntax`] with the byte position.
    ///
    /// ```
    /// use burn_adapters::AdapterSetup;
    /// let setup = AdapterSetup::parse("Stack[a, Average[b, c](weights=0.3,0.7)]")?;
    /// assert_eq!(setup.to_string(), "Stack[a, Average[b, c](weights=0.3,0.7)]");
    /// assert_eq!(AdapterSetup::parse("Stack[a, b]")?, AdapterSetup::stack(["a", "b"]));
    /// assert!(AdapterSetup::parse("Fuse[a, Parallel[b, c]]").is_err()); // not an allowed nesting
    /// # Ok::<(), burn_adapters::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self> {
        let mut parser = Parser {
            text,
            pos: 0,
            depth: 0,
        };
        let setup = parser.setup()?;
        parser.skip_ws();
        if parser.pos != text.len() {
            return Err(parser.error("unexpected text after the setup"));
        }
        setup.validate()?;
        Ok(setup)
    }
}

/// How deeply blocks may nest in the text form. AdapterHub's setups are a few levels deep; the
/// bound keeps a hostile string from exhausting the stack of this recursive parser.
pub const MAX_SETUP_DEPTH: usize = 32;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Blocks open at `pos`.
    depth: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error(&self, reason: &str) -> Error {
        Error::SetupSyntax {
            input: crate::error::shorten(self.text, self.pos),
            position: self.pos,
            reason: reason.to_string(),
        }
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> &str {
        self.skip_ws();
        let rest = self.rest();
        let end = rest
            .find(|c: char| matches!(c, '[' | ']' | ',' | '(' | ')' | '=') || c.is_whitespace())
            .unwrap_or(rest.len());
        let start = self.pos;
        self.pos += end;
        &self.text[start..self.pos]
    }

    fn setup(&mut self) -> Result<AdapterSetup> {
        let word = self.word().to_string();
        if word.is_empty() {
            return Err(self.error("expected an adapter name or a block"));
        }
        if !self.eat('[') {
            return Ok(AdapterSetup::Name(word));
        }
        if word == "PerRow" {
            return self.per_row();
        }
        if self.depth == MAX_SETUP_DEPTH {
            return Err(self.error(&format!(
                "blocks nested deeper than {MAX_SETUP_DEPTH} levels"
            )));
        }
        self.depth += 1;
        let mut children = Vec::new();
        loop {
            children.push(self.setup()?);
            if self.eat(']') {
                break;
            }
            if !self.eat(',') {
                return Err(self.error("expected `,` or `]`"));
            }
        }
        self.depth -= 1;
        let args = self.arguments()?;
        self.block(&word, children, args)
    }

    /// The block called `word` with its children and `(key=values)` arguments.
    fn block(
        &self,
        word: &str,
        children: Vec<AdapterSetup>,
        mut args: Vec<(String, Vec<String>)>,
    ) -> Result<AdapterSetup> {
        let mut take = |key: &str| {
            args.iter()
                .position(|(k, _)| k == key)
                .map(|i| args.remove(i).1)
        };
        let setup = match word {
            "Stack" => AdapterSetup::Stack(children),
            "Fuse" => AdapterSetup::Fuse(children),
            "Parallel" => AdapterSetup::Parallel(children),
            "Split" => AdapterSetup::Split {
                splits: self.counts(take("splits"), "splits")?,
                children,
            },
            "BatchSplit" => AdapterSetup::BatchSplit {
                batch_sizes: self.counts(take("batch_sizes"), "batch_sizes")?,
                children,
            },
            "MultiTask" => AdapterSetup::MultiTask {
                task_ids: self.counts(take("task_ids"), "task_ids")?,
                children,
            },
            "Average" => {
                let weights = self.weights(take("weights"), children.len())?;
                let normalize_weights = match take("normalize_weights").as_deref() {
                    None => true,
                    Some([v]) if v.eq_ignore_ascii_case("true") => true,
                    Some([v]) if v.eq_ignore_ascii_case("false") => false,
                    Some(_) => return Err(self.error("normalize_weights is true or false")),
                };
                AdapterSetup::Average {
                    children,
                    weights,
                    normalize_weights,
                }
            }
            other => return Err(self.error(&format!("unknown composition block `{other}`"))),
        };
        if let Some((key, _)) = args.first() {
            return Err(self.error(&format!("`{word}` takes no argument `{key}`")));
        }
        Ok(setup)
    }

    /// `Average`'s weights: as given, or equal for `n` children.
    fn weights(&self, values: Option<Vec<String>>, n: usize) -> Result<Vec<f64>> {
        match values {
            Some(values) => values
                .iter()
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| self.error(&format!("weights: `{v}` is not a number")))
                })
                .collect(),
            None => Ok(vec![1.0 / n as f64; n]),
        }
    }

    fn per_row(&mut self) -> Result<AdapterSetup> {
        let mut rows = Vec::new();
        loop {
            if self.eat('(') {
                if !self.eat(')') {
                    return Err(self.error("expected `()` (the base model)"));
                }
                rows.push(None);
            } else {
                let name = self.word().to_string();
                if name.is_empty() {
                    return Err(self.error("expected an adapter name or `()`"));
                }
                rows.push(Some(name));
            }
            if self.eat(']') {
                return Ok(AdapterSetup::PerRow(rows));
            }
            if !self.eat(',') {
                return Err(self.error("expected `,` or `]`"));
            }
        }
    }

    /// `(key=v1,v2, key2=v3)` after a block, as (key, values) pairs.
    fn arguments(&mut self) -> Result<Vec<(String, Vec<String>)>> {
        let mut args: Vec<(String, Vec<String>)> = Vec::new();
        if !self.eat('(') {
            return Ok(args);
        }
        loop {
            let token = self.word().to_string();
            if token.is_empty() {
                return Err(self.error("expected `key=value` or a value"));
            }
            if self.eat('=') {
                let value = self.word().to_string();
                args.push((token, vec![value]));
            } else {
                match args.last_mut() {
                    Some((_, values)) => values.push(token),
                    None => return Err(self.error("expected `key=`")),
                }
            }
            if self.eat(')') {
                return Ok(args);
            }
            if !self.eat(',') {
                return Err(self.error("expected `,` or `)`"));
            }
        }
    }

    fn counts(&self, values: Option<Vec<String>>, key: &str) -> Result<Vec<usize>> {
        let values = values.ok_or_else(|| self.error(&format!("missing argument `{key}=`")))?;
        values
            .iter()
            .map(|v| {
                v.parse()
                    .map_err(|_| self.error(&format!("{key}: `{v}` is not a count")))
            })
            .collect()
    }
}

impl std::str::FromStr for AdapterSetup {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

impl TryFrom<&str> for AdapterSetup {
    type Error = Error;
    fn try_from(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

fn join<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T], sep: &str) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl fmt::Display for AdapterSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let block = match self {
            AdapterSetup::Name(name) => return f.write_str(name),
            AdapterSetup::PerRow(rows) => {
                f.write_str("PerRow[")?;
                for (i, row) in rows.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(row.as_deref().unwrap_or("()"))?;
                }
                return f.write_str("]");
            }
            AdapterSetup::Stack(_) => "Stack",
            AdapterSetup::Fuse(_) => "Fuse",
            AdapterSetup::Split { .. } => "Split",
            AdapterSetup::BatchSplit { .. } => "BatchSplit",
            AdapterSetup::Parallel(_) => "Parallel",
            AdapterSetup::Average { .. } => "Average",
            AdapterSetup::MultiTask { .. } => "MultiTask",
        };
        write!(f, "{block}[")?;
        join(f, self.children(), ", ")?;
        f.write_str("]")?;
        match self {
            AdapterSetup::Split { splits, .. } => {
                f.write_str("(splits=")?;
                join(f, splits, ",")?;
                f.write_str(")")
            }
            AdapterSetup::BatchSplit { batch_sizes, .. } => {
                f.write_str("(batch_sizes=")?;
                join(f, batch_sizes, ",")?;
                f.write_str(")")
            }
            AdapterSetup::MultiTask { task_ids, .. } => {
                f.write_str("(task_ids=")?;
                join(f, task_ids, ",")?;
                f.write_str(")")
            }
            AdapterSetup::Average {
                weights,
                normalize_weights,
                ..
            } => {
                f.write_str("(weights=")?;
                join(f, weights, ",")?;
                if !normalize_weights {
                    f.write_str(", normalize_weights=false")?;
                }
                f.write_str(")")
            }
            _ => Ok(()),
        }
    }
}
