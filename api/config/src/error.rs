//! Typed errors. Every error names the field path and the problem; secrets
//! (tokens, keys, passwords) are never echoed in a message.

use std::fmt;

use crate::path::FieldPath;

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a well-formed MachineConfig: bad YAML, wrong type, unknown field.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Well-formed but with invalid values; every one found is listed.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// A config could not be written out (never expected: every field serialises).
    #[error("serialising the config: {0}")]
    Serialize(String),
}

/// The first error the YAML parser met (serde stops there).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ParseError {
    /// Where: the root when the YAML itself is malformed.
    pub path: FieldPath,
    /// serde's message, with the line and column when known.
    pub message: String,
}

/// One invalid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct FieldError {
    /// The offending field.
    pub path: FieldPath,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A required field is missing or empty.
    #[error("required: {why}")]
    Required {
        /// Why the node needs it.
        why: &'static str,
    },
    /// A field that only allows one value holds another.
    #[error("must be `{expected}`, not `{found}`")]
    Unsupported {
        /// The accepted value.
        expected: &'static str,
        /// The value found.
        found: String,
    },
    /// A value with the wrong syntax; the value is shown.
    #[error("`{value}` is not {what}: {reason}")]
    Invalid {
        /// The value as written.
        value: String,
        /// What it should be (`a CIDR address`, `a label key`).
        what: &'static str,
        /// Why not.
        reason: String,
    },
    /// A secret or bulky value with the wrong syntax; the value is not shown.
    #[error("not {what}: {reason}")]
    Malformed {
        /// What it should be.
        what: &'static str,
        /// Why not.
        reason: String,
    },
    /// A number outside its range.
    #[error("{value} is out of range {min}..={max}")]
    OutOfRange {
        /// The value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The same thing configured twice.
    #[error("duplicate {what} `{value}` (first at {first})")]
    Duplicate {
        /// What is duplicated (`interface`, `VLAN id`).
        what: &'static str,
        /// The duplicated value.
        value: String,
        /// Where it first appears.
        first: FieldPath,
    },
    /// Fields that contradict each other.
    #[error("{0}")]
    Conflict(String),
}

/// Every invalid value in a document, in the order checked (see `validate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl std::error::Error for ValidationErrors {}

impl fmt::Display for ValidationErrors {
    /// One error a line, so each names its own path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
