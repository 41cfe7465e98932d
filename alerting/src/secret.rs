//! Secrets (tokens, webhook URLs) that never show in logs, debug output or JSON.
//!
//! The core never reads a file or the environment: receiver config names where a secret lives
//! ([`SecretRef`]), and the driver resolves it through a [`SecretSource`] when it sends.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value. `Debug`, `Display` and `Serialize` all print `***`; only [`Secret::expose`]
/// gives the value, so a leak needs a deliberate call.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: only where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// Written in the config itself (fine for a ntfy topic, discouraged for tokens).
    Inline(Secret),
    /// A file holding it (trailing newline trimmed); keep it 0600.
    File(String),
    /// An environment variable of the agent.
    Env(String),
}

/// What the driver offers to resolve secrets: the real environment and file system in the
/// agent, a map in tests.
pub trait SecretSource {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> Result<String, String>;
}

/// Why a secret could not be resolved. Names the place, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (or empty)")]
    Env(String),
    #[error("cannot read secret file {path}: {problem}")]
    File { path: String, problem: String },
}

impl SecretRef {
    /// From the usual trio of config fields (`x`, `x_file`, `x_env`): at most one may be set.
    pub fn from_fields(
        field: &str,
        inline: Option<String>,
        file: Option<String>,
        env: Option<String>,
    ) -> Result<Option<SecretRef>, String> {
        match (inline, file, env) {
            (None, None, None) => Ok(None),
            (Some(v), None, None) => Ok(Some(SecretRef::Inline(Secret::new(v)))),
            (None, Some(f), None) => Ok(Some(SecretRef::File(f))),
            (None, None, Some(e)) => Ok(Some(SecretRef::Env(e))),
            _ => Err(format!(
                "set only one of `{field}`, `{field}_file`, `{field}_env`"
            )),
        }
    }

    pub fn resolve(&self, src: &dyn SecretSource) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Inline(s) => Ok(s.clone()),
            SecretRef::Env(name) => src
                .env(name)
                .filter(|v| !v.is_empty())
                .map(Secret)
                .ok_or_else(|| SecretError::Env(name.clone())),
            SecretRef::File(path) => src
                .file(path)
                .map(|v| Secret(v.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|problem| SecretError::File {
                    path: path.clone(),
                    problem,
                }),
        }
    }
}

/// A [`SecretSource`] over fixed maps, for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct MapSecrets {
    pub env: std::collections::BTreeMap<String, String>,
    pub files: std::collections::BTreeMap<String, String>,
}

impl SecretSource for MapSecrets {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn file(&self, path: &str) -> Result<String, String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| "no such file".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_everywhere_but_expose() {
        let s = Secret::new("123456:ABC-telegram-token");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
            r: SecretRef,
        }
        let h = Holder {
            token: s.clone(),
            r: SecretRef::Inline(s.clone()),
        };
        let shown = format!("{h:?} {}", serde_json::to_string(&h.token).unwrap());
        assert!(!shown.contains("telegram-token"), "{shown}");
        assert_eq!(s.expose(), "123456:ABC-telegram-token");
    }

    #[test]
    fn refs_resolve_through_the_driver() {
        let mut src = MapSecrets::default();
        src.env.insert("TG".into(), "tok".into());
        src.files
            .insert("/etc/labmesh/slack".into(), "https://hooks/x\n".into());
        let env = SecretRef::from_fields("token", None, None, Some("TG".into()))
            .unwrap()
            .unwrap();
        assert_eq!(env.resolve(&src).unwrap().expose(), "tok");
        let file = SecretRef::File("/etc/labmesh/slack".into());
        assert_eq!(file.resolve(&src).unwrap().expose(), "https://hooks/x");
        let missing = SecretRef::Env("NOPE".into()).resolve(&src).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "environment variable NOPE is not set (or empty)"
        );
        assert!(SecretRef::from_fields("token", Some("a".into()), None, Some("B".into())).is_err());
    }
}
