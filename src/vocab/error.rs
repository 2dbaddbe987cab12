//! A configuration error names the field (as a dotted path) and the reason.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `jwt_authn.providers.okta.issuer`.
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the path with a parent field.
    pub fn under(mut self, parent: &str) -> Self {
        self.path = if self.path.is_empty() {
            parent.to_string()
        } else if self.path.starts_with('[') {
            format!("{parent}{}", self.path)
        } else {
            format!("{parent}.{}", self.path)
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<root>"
        } else {
            &self.path
        };
        write!(f, "invalid configuration: field `{path}`: {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Deserialises a JSON document, or says where it breaks: the line and
/// column for broken JSON, else the path of the field serde refused.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let tree: super::json_tree::Json = serde_json::from_slice(bytes)
        .map_err(|e| ConfigError::new("", format!("not valid JSON: {e}")))?;
    super::json_tree::from_tree(&tree).map_err(|e| ConfigError::new(e.path(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_with_dots_and_brackets() {
        let e = ConfigError::new("[3].sha256", "x")
            .under("api_keys_from")
            .under("p");
        assert_eq!(e.path, "p.api_keys_from[3].sha256");
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            #[allow(dead_code)]
            name: String,
        }
        let err = parse_json::<Vec<Entry>>(br#"[{"name": "a"}, {"nam": "b"}]"#).unwrap_err();
        assert_eq!(err.path, "[1].nam");
        assert!(err.reason.contains("unknown field `nam`"), "{err}");
        assert!(!err.reason.contains("at line"), "{err}");
        let err = parse_json::<Vec<Entry>>(b"[{").unwrap_err();
        assert!(err.reason.starts_with("not valid JSON"), "{err}");
    }
}
