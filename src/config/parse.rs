//! The config-string syntax: `name[key=value,...]`, joined by `|` into unions.
//!
//! Values are Python-style literals as AdapterHub accepts them (`16`, `0.5`, `True`, `None`,
//! `"gelu"`, `[0, 1]`, `{"0": 8, "default": 16}`); unquoted words are read as strings too, so
//! `non_linearity=gelu` works although the reference insists on quotes.

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// One `name[overrides]` item of a config string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConfigItem {
    pub name: String,
    pub overrides: Map<String, Value>,
}

/// Splits `s` on top-level `|` and parses each item.
pub(crate) fn parse_config_string(s: &str) -> Result<Vec<ConfigItem>> {
    let mut parser = Parser {
        input: s,
        pos: 0,
        depth: 0,
    };
    let mut items = vec![parser.item()?];
    loop {
        parser.skip_ws();
        match parser.peek() {
            None => break,
            Some('|') => {
                parser.pos += 1;
                items.push(parser.item()?);
            }
            Some(c) => {
                return Err(parser.error(format!("expected `|` or end of input, found `{c}`")));
            }
        }
    }
    Ok(items)
}

/// How deeply lists and dictionaries may nest in a value (serde_json allows 128; configs need 2).
/// The bound keeps a hostile string from exhausting the stack of this recursive parser.
const MAX_VALUE_DEPTH: usize = 32;

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    /// Lists and dictionaries open at `pos`.
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::ConfigSyntax {
            input: crate::error::shorten(self.input, self.pos),
            position: self.pos,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn expect(&mut self, want: char) -> Result<()> {
        self.skip_ws();
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected `{want}`, found `{c}`"))),
            None => Err(self.error(format!("expected `{want}`, found end of input"))),
        }
    }

    /// An identifier-like word: letters, digits, `_`, `-`, `+`, `.`.
    fn word(&mut self) -> &str {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '+' | '.') {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        &self.input[start..self.pos]
    }

    fn item(&mut self) -> Result<ConfigItem> {
        let name = self.word().to_string();
        if name.is_empty() {
            return Err(self.error("expected a config name"));
        }
        let mut overrides = Map::new();
        self.skip_ws();
        if self.peek() == Some('[') {
            self.pos += 1;
            self.skip_ws();
            if self.peek() == Some(']') {
                self.pos += 1;
            } else {
                loop {
                    let key = self.word().to_string();
                    if key.is_empty() {
                        return Err(self.error("expected a field name"));
                    }
                    self.expect('=')?;
                    let value = self.value()?;
                    if overrides.insert(key.clone(), value).is_some() {
                        return Err(self.error(format!("field `{key}` given twice")));
                    }
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.error("expected `,` or `]` after a value")),
                    }
                }
            }
        }
        Ok(ConfigItem { name, overrides })
    }

    fn value(&mut self) -> Result<Value> {
        self.skip_ws();
        if matches!(self.peek(), Some('[' | '(' | '{')) {
            if self.depth == MAX_VALUE_DEPTH {
                return Err(self.error(format!(
                    "values nested deeper than {MAX_VALUE_DEPTH} levels"
                )));
            }
            self.depth += 1;
            let value = self.compound_value();
            self.depth -= 1;
            return value;
        }
        self.scalar_value()
    }

    /// A list (`[..]` or `(..)`) or a dictionary.
    fn compound_value(&mut self) -> Result<Value> {
        match self.peek() {
            Some('[') | Some('(') => {
                let close = if self.peek() == Some('[') { ']' } else { ')' };
                self.pos += 1;
                let mut list = Vec::new();
                self.skip_ws();
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(Value::Array(list));
                }
                loop {
                    list.push(self.value()?);
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(c) if c == close => {
                            self.pos += 1;
                            return Ok(Value::Array(list));
                        }
                        _ => return Err(self.error(format!("expected `,` or `{close}` in a list"))),
                    }
                }
            }
            _ => {
                self.pos += 1;
                let mut map = Map::new();
                self.skip_ws();
                if self.peek() == Some('}') {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                loop {
                    let key = match self.value()? {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        _ => return Err(self.error("dictionary keys must be strings or numbers")),
                    };
                    self.expect(':')?;
                    let value = self.value()?;
                    map.insert(key, value);
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some('}') => {
                            self.pos += 1;
                            return Ok(Value::Object(map));
                        }
                        _ => return Err(self.error("expected `,` or `}` in a dictionary")),
                    }
                }
            }
        }
    }

    /// A quoted string or a literal word.
    fn scalar_value(&mut self) -> Result<Value> {
        match self.peek() {
            None => Err(self.error("expected a value, found end of input")),
            Some('"') | Some('\'') => self.string().map(Value::String),
            Some(_) => {
                let start = self.pos;
                let word = self.word();
                if word.is_empty() {
                    self.pos = start;
                    return Err(self.error("expected a value"));
                }
                Ok(literal(word))
            }
        }
    }

    fn string(&mut self) -> Result<String> {
        let quote = self.peek().unwrap_or('"');
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == quote {
                return Ok(out);
            }
            if c == '\\' {
                match self.peek() {
                    Some(escaped) => {
                        self.pos += escaped.len_utf8();
                        out.push(escaped);
                    }
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        self.pos = start;
        Err(self.error("unterminated string"))
    }
}

/// A bare word as a JSON value: numbers, Python/JSON booleans and None/null, else a string.
fn literal(word: &str) -> Value {
    match word {
        "True" | "true" => return Value::Bool(true),
        "False" | "false" => return Value::Bool(false),
        "None" | "null" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = word.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(f) = word.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_items_values_and_unions() {
        let items = parse_config_string(
            r#"double_seq_bn[reduction_factor=12, non_linearity="gelu", leave_out=[0,1], ln_before=True, init_weights_seed=None]|lora[r=4]"#,
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name, "double_seq_bn");
        assert_eq!(
            Value::Object(items[0].overrides.clone()),
            json!({"reduction_factor": 12, "non_linearity": "gelu", "leave_out": [0, 1],
                   "ln_before": true, "init_weights_seed": null})
        );
        assert_eq!(items[1].name, "lora");
        assert_eq!(items[1].overrides["r"], json!(4));
    }

    #[test]
    fn accepts_unquoted_strings_and_maps() {
        let items = parse_config_string(
            "seq_bn[non_linearity=gelu,reduction_factor={'0': 4, default: 16},scaling=0.5]",
        )
        .unwrap();
        assert_eq!(items[0].overrides["non_linearity"], json!("gelu"));
        assert_eq!(
            items[0].overrides["reduction_factor"],
            json!({"0": 4, "default": 16})
        );
        assert_eq!(items[0].overrides["scaling"], json!(0.5));
    }

    #[test]
    fn reports_position_of_errors() {
        for (input, position) in [
            ("seq_bn[reduction_factor]", 23),
            ("seq_bn[a=1", 10),
            ("seq_bn[a=\"x]", 9),
            ("", 0),
        ] {
            match parse_config_string(input) {
                Err(Error::ConfigSyntax { position: p, .. }) => assert_eq!(p, position, "{input}"),
                other => panic!("{input}: expected a syntax error, got {other:?}"),
            }
        }
    }
}
