//! `ConfigError`: what went wrong with the configuration, as one sentence the operator can act on.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the configuration text came from, for messages only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin(Option<PathBuf>);

impl Origin {
    pub fn new(path: Option<&Path>) -> Self {
        Self(path.map(Path::to_path_buf))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(path) => write!(f, "config file {}", path.display()),
            None => f.write_str("config"),
        }
    }
}

/// A configuration that cannot be used. The caller prints it and exits with status 2.
///
/// Every variant displays as one sentence naming the file, and for content errors the key path
/// (`channels.imessage.accounts.bot.dmPolicy`), the bad value and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file named with `--config` or `$IMSG_BRIDGE_CONFIG` does not exist.
    #[error("config file {} does not exist (named by {via}); create it or name an existing file", path.display())]
    Missing { path: PathBuf, via: &'static str },

    /// The file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The text is not valid json5. Line and column are 1-based.
    #[error("{origin}: json5 syntax error at line {line} column {column}: {message}")]
    Syntax {
        origin: Origin,
        line: usize,
        column: usize,
        message: String,
    },

    /// A key that a strict section (`channels.imessage`, `bridge`) does not know.
    #[error("{origin}: unknown key {path}{}", hint(.suggestion.as_deref()))]
    UnknownKey {
        origin: Origin,
        path: String,
        suggestion: Option<String>,
    },

    /// A known key with a value that is not allowed.
    #[error("{origin}: {path}: {message}")]
    Invalid {
        origin: Origin,
        path: String,
        message: String,
    },
}

fn hint(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(key) => format!("; did you mean \"{key}\"?"),
        None => "; remove it (docs/configuration.md lists the valid keys)".to_owned(),
    }
}

impl ConfigError {
    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            origin: Origin::default(),
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unknown_key(path: impl Into<String>, suggestion: Option<&str>) -> Self {
        Self::UnknownKey {
            origin: Origin::default(),
            path: path.into(),
            suggestion: suggestion.map(str::to_owned),
        }
    }

    /// The key path the error is about, for content errors.
    pub fn key_path(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { path, .. } | Self::Invalid { path, .. } => Some(path),
            Self::Missing { .. } | Self::Read { .. } | Self::Syntax { .. } => None,
        }
    }

    /// Stamp the file the text came from; errors are built deep in validation without it.
    pub(crate) fn in_origin(mut self, new: &Origin) -> Self {
        match &mut self {
            Self::Syntax { origin, .. } | Self::UnknownKey { origin, .. } | Self::Invalid { origin, .. } => {
                *origin = new.clone();
            }
            Self::Missing { .. } | Self::Read { .. } => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_key_path() {
        let origin = Origin::new(Some(Path::new("/etc/imsg/config.json5")));
        let cases = [
            (
                ConfigError::unknown_key("channels.imessage.dmPoliccy", Some("dmPolicy")).in_origin(&origin),
                "config file /etc/imsg/config.json5: unknown key channels.imessage.dmPoliccy; did you mean \"dmPolicy\"?",
            ),
            (
                ConfigError::unknown_key("bridge.zzz", None),
                "config: unknown key bridge.zzz; remove it (docs/configuration.md lists the valid keys)",
            ),
            (
                ConfigError::invalid("bridge.agentId", "must not be empty").in_origin(&origin),
                "config file /etc/imsg/config.json5: bridge.agentId: must not be empty",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }

    #[test]
    fn key_path_is_available_for_content_errors_only() {
        assert_eq!(
            ConfigError::invalid("a.b", "x").key_path(),
            Some("a.b"),
            "invalid value"
        );
        let missing = ConfigError::Missing {
            path: PathBuf::from("/nope"),
            via: "--config",
        };
        assert_eq!(missing.key_path(), None);
    }
}
