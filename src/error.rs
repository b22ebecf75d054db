//! The crate's single error type.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every user-reachable failure of the library.
///
/// Each variant names what was wrong: the adapter, the config field, the file and the tensor key,
/// so that a message printed to a user is enough to fix the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter with this name is registered in the model.
    #[error("no adapter named `{0}` in the model")]
    UnknownAdapter(String),

    /// An adapter with this name already exists and overwriting was not requested.
    #[error(
        "an adapter named `{0}` already exists (pass `AddAdapterOptions {{ overwrite_ok: true, .. }}` to replace it, or load it under another name)"
    )]
    DuplicateAdapter(String),

    /// No prediction head with this name exists.
    #[error("no head named `{0}` in the model")]
    UnknownHead(String),

    /// A prediction head with this name already exists.
    #[error("a head named `{0}` already exists")]
    DuplicateHead(String),

    /// The adapter name cannot be used (empty, or containing characters that break parameter paths).
    #[error("invalid adapter name `{name}`: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A config field has a value outside its domain.
    #[error("invalid value for config field `{field}`: {value} ({reason})")]
    InvalidConfig {
        /// The field (a JSON path such as `reduction_factor.default`).
        field: String,
        /// The offending value as written (its first 200 bytes when longer).
        value: String,
        /// What the field accepts.
        reason: String,
    },

    /// A config string such as `seq_bn[reduction_factor=8]` could not be parsed.
    #[error("cannot parse config string `{input}` at byte {position}: {reason}")]
    ConfigSyntax {
        /// The config string; when longer than 200 bytes, the part around `position` with `…`
        /// marking what was cut.
        input: String,
        /// Byte offset of the problem.
        position: usize,
        /// What was expected there.
        reason: String,
    },

    /// The text form of an adapter setup (`Stack[a, b]`) could not be parsed.
    #[error("cannot parse adapter setup `{input}` at byte {position}: {reason}")]
    SetupSyntax {
        /// The setup text; when longer than 200 bytes, the part around `position`.
        input: String,
        /// Byte offset of the problem.
        position: usize,
        /// What was expected there.
        reason: String,
    },

    /// A config identifier is neither a preset name, a JSON object, nor an existing file.
    #[error(
        "unknown adapter config `{0}`: not a preset name, a config string, JSON, or an existing file"
    )]
    UnknownConfig(String),

    /// The feature exists in AdapterHub's config schema but is not implemented here yet.
    #[error("not supported yet: {0}")]
    Unsupported(String),

    /// The active adapter setup cannot be used with the model.
    #[error("invalid adapter setup: {0}")]
    InvalidSetup(String),

    /// No AdapterFusion layer over these adapters (named as AdapterHub does, `a,b`) exists.
    #[error(
        "no AdapterFusion layer over `{0}` (add it with `add_adapter_fusion` or `load_adapter_fusion`)"
    )]
    UnknownFusion(String),

    /// An AdapterFusion layer over these adapters (`a,b`) exists already.
    #[error("an AdapterFusion layer over `{0}` exists already")]
    DuplicateFusion(String),

    /// An input tensor does not fit the model (shape, length, or values out of range).
    #[error("invalid input `{input}`: {reason}")]
    InvalidInput {
        /// The input (`input_ids`, `attention_mask`, ...).
        input: String,
        /// What was wrong.
        reason: String,
    },

    /// Training was asked of a model whose device records no gradients.
    #[error(
        "the model lives on a device without autodiff, so it cannot be trained: create it on `device.autodiff()` (e.g. `Device::flex().autodiff()`)"
    )]
    NoAutodiff,

    /// The adapter cannot be merged into the model's weights.
    #[error("cannot merge adapter `{name}`: {reason}")]
    NotMergeable {
        /// The adapter.
        name: String,
        /// Why (not LoRA-family, gated, another adapter already merged).
        reason: String,
    },

    /// Reading or writing a file failed.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file does not match the expected schema.
    #[error("invalid JSON in `{path}` at `{field}`: {reason}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON path of the offending value (`.` for the root).
        field: String,
        /// What was wrong.
        reason: String,
    },

    /// A weights file is malformed (truncated, corrupt header, unsupported dtype or archive).
    #[error("malformed weights file `{path}`: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// A weights file lacks a tensor the adapter needs.
    #[error("`{path}` is missing tensor `{key}`")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The expected key.
        key: String,
    },

    /// A weights file holds a tensor that belongs to nothing in the adapter.
    #[error("`{path}` has unexpected tensor `{key}`")]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The unmatched key.
        key: String,
    },

    /// A tensor has a shape other than the one the adapter needs.
    #[error("tensor `{key}` in `{path}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// Shape required by the model/config.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },

    /// A weights file is not the one its config file was saved with: the checksum the config
    /// records differs. The files come from two different saves, or the directory was being
    /// rewritten while it was read (loads retry a few times before reporting this).
    #[error(
        "`{weights}` does not match the checksum recorded in `{config}`: the two files come from different saves"
    )]
    ChecksumMismatch {
        /// The config file recording the checksum.
        config: PathBuf,
        /// The weights file.
        weights: PathBuf,
    },

    /// The adapter was trained for a model of another width.
    #[error("`{path}` was saved for hidden size {found}, but the model has hidden size {expected}")]
    HiddenSizeMismatch {
        /// The adapter config file.
        path: PathBuf,
        /// The model's hidden size.
        expected: usize,
        /// The hidden size recorded in the file.
        found: usize,
    },
}

/// `text` itself when short; otherwise about 200 bytes around byte `at`, with `…` where it was
/// cut, so that errors about megabyte inputs stay readable.
pub(crate) fn shorten(text: &str, at: usize) -> String {
    const KEEP: usize = 100;
    if text.len() <= 2 * KEEP {
        return text.to_string();
    }
    let floor = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(at.saturating_sub(KEEP).min(text.len()));
    let end = floor((at + KEEP).min(text.len()));
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.push_str(&text[start..end]);
    if end < text.len() {
        out.push('…');
    }
    out
}

impl Error {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            value: shorten(&value.to_string(), 0),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn input(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            input: input.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
