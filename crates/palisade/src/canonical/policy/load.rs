//! Reading and writing policies as TOML, YAML and JSON, with the path of the field at
//! fault in every error.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::ClientPolicy;
#[cfg(feature = "http")]
use super::server::ServerPolicy;
use super::InvalidPolicy;

/// A policy file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// TOML (`.toml`).
    Toml,
    /// YAML (`.yaml`, `.yml`).
    Yaml,
    /// JSON (`.json`).
    Json,
}

impl Format {
    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

fn parse_error(path: String, location: Option<(usize, usize)>, message: String) -> InvalidPolicy {
    InvalidPolicy::Parse {
        path,
        location,
        message,
    }
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(crate) fn from_str<T: DeserializeOwned>(
    text: &str,
    format: Format,
) -> Result<T, InvalidPolicy> {
    match format {
        Format::Toml => {
            let de = toml::Deserializer::parse(text).map_err(|e| {
                let loc = e.span().map(|s| line_col(text, s.start));
                parse_error(String::new(), loc, e.message().to_owned())
            })?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let loc = inner.span().map(|s| line_col(text, s.start));
                parse_error(path, loc, inner.message().to_owned())
            })
        }
        Format::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let loc = inner.location().map(|l| (l.line(), l.column()));
                // serde_yaml_ng's message repeats the location; keep the first line only.
                let message = inner.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                parse_error(path, loc, message)
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let loc = (inner.line() > 0).then(|| (inner.line(), inner.column()));
                let message = inner.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                parse_error(path, loc, message)
            })
        }
    }
}

pub(crate) fn to_string<T: Serialize>(value: &T, format: Format) -> String {
    match format {
        Format::Toml => toml::to_string(value).expect("a policy is always valid TOML"),
        Format::Yaml => serde_yaml_ng::to_string(value).expect("a policy is always valid YAML"),
        Format::Json => serde_json::to_string_pretty(value).expect("a policy is always valid JSON"),
    }
}

pub(crate) fn from_file<T: DeserializeOwned>(path: &Path) -> Result<T, InvalidPolicy> {
    let file = path.display().to_string();
    let format = Format::from_path(path).ok_or_else(|| InvalidPolicy::File {
        file: file.clone(),
        message: "unknown extension: use .toml, .yaml, .yml or .json".to_owned(),
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| InvalidPolicy::File {
        file: file.clone(),
        message: e.to_string(),
    })?;
    from_str(&text, format).map_err(|e| match e {
        InvalidPolicy::Parse {
            path,
            location,
            message,
        } => InvalidPolicy::Parse {
            path,
            location,
            message: format!("{message} (in {file})"),
        },
        other => other,
    })
}

macro_rules! readers {
    ($ty:ident) => {
        impl $ty {
            /// Reads a policy from TOML. Unknown keys are errors.
            ///
            /// # Errors
            /// [`InvalidPolicy::Parse`] with the field's path and the line, or the first
            /// invalid field ([`InvalidPolicy::Field`]): the policy is also checked.
            pub fn from_toml(text: &str) -> Result<Self, InvalidPolicy> {
                Self::from_str_in(text, Format::Toml)
            }

            /// Reads a policy from YAML. Unknown keys are errors.
            ///
            /// # Errors
            /// As [`from_toml`](Self::from_toml).
            pub fn from_yaml(text: &str) -> Result<Self, InvalidPolicy> {
                Self::from_str_in(text, Format::Yaml)
            }

            /// Reads a policy from JSON. Unknown keys are errors.
            ///
            /// # Errors
            /// As [`from_toml`](Self::from_toml).
            pub fn from_json(text: &str) -> Result<Self, InvalidPolicy> {
                Self::from_str_in(text, Format::Json)
            }

            /// Reads a policy in `format`, and checks it.
            ///
            /// # Errors
            /// As [`from_toml`](Self::from_toml).
            pub fn from_str_in(text: &str, format: Format) -> Result<Self, InvalidPolicy> {
                let policy: Self = from_str(text, format)?;
                policy.check()?;
                Ok(policy)
            }

            /// Reads a policy from a `.toml`, `.yaml`/`.yml` or `.json` file, and checks it.
            ///
            /// # Errors
            /// [`InvalidPolicy::File`] if it cannot be read; else as
            /// [`from_toml`](Self::from_toml), the file named in the message.
            pub fn from_file(path: impl AsRef<Path>) -> Result<Self, InvalidPolicy> {
                let policy: Self = from_file(path.as_ref())?;
                policy.check()?;
                Ok(policy)
            }

            /// Writes the policy in `format`; reading it back gives the same policy.
            pub fn to_string_in(&self, format: Format) -> String {
                to_string(self, format)
            }
        }
    };
}

readers!(ClientPolicy);
#[cfg(feature = "http")]
readers!(ServerPolicy);

impl ClientPolicy {
    fn check(&self) -> Result<(), InvalidPolicy> {
        self.layer().map(drop)
    }
}

#[cfg(feature = "http")]
impl ServerPolicy {
    fn check(&self) -> Result<(), InvalidPolicy> {
        self.layer().map(drop)
    }
}
