//! Request matching as Envoy's `RouteMatch` and `HeaderMatcher` do it, shared by
//! every stage that chooses something per route (JWT rules, passthrough
//! disable, upstream backend selection).

use crate::request::RequestView;
use crate::vocab::ConfigError;
use regex_lite::Regex;
use serde::Deserialize;

/// Wire form of Envoy's `StringMatcher`: exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawStringMatcher {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub contains: Option<String>,
    pub safe_regex: Option<RawRegex>,
    #[serde(default)]
    pub ignore_case: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRegex {
    pub regex: String,
}

/// Wire form of Envoy's `HeaderMatcher` (the fields we support).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatcher {
    pub name: String,
    pub string_match: Option<RawStringMatcher>,
    pub exact_match: Option<String>,
    pub present_match: Option<bool>,
    #[serde(default)]
    pub invert_match: bool,
}

/// Wire form of Envoy's `RouteMatch` (the fields we support).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRouteMatch {
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub safe_regex: Option<RawRegex>,
    #[serde(default)]
    pub headers: Vec<RawHeaderMatcher>,
    pub case_sensitive: Option<bool>,
}

#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
}

impl StringMatcher {
    pub fn compile(raw: &RawStringMatcher) -> Result<Self, ConfigError> {
        let ic = raw.ignore_case;
        let fold = |s: &String| {
            if ic {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        let mut set = Vec::new();
        if let Some(v) = &raw.exact {
            set.push(StringMatcher::Exact(fold(v), ic));
        }
        if let Some(v) = &raw.prefix {
            set.push(StringMatcher::Prefix(fold(v), ic));
        }
        if let Some(v) = &raw.suffix {
            set.push(StringMatcher::Suffix(fold(v), ic));
        }
        if let Some(v) = &raw.contains {
            set.push(StringMatcher::Contains(fold(v), ic));
        }
        if let Some(r) = &raw.safe_regex {
            set.push(StringMatcher::Regex(
                compile_regex(&r.regex).map_err(|e| e.under("safe_regex"))?,
            ));
        }
        if set.len() != 1 {
            return Err(ConfigError::new(
                "",
                "exactly one of exact, prefix, suffix, contains, safe_regex must be set",
            ));
        }
        set.pop()
            .ok_or_else(|| ConfigError::new("", "no string matcher"))
    }

    pub fn matches(&self, value: &str) -> bool {
        let fold = |ic: bool| {
            if ic {
                std::borrow::Cow::Owned(value.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(value)
            }
        };
        match self {
            StringMatcher::Exact(s, ic) => fold(*ic) == s.as_str(),
            StringMatcher::Prefix(s, ic) => fold(*ic).starts_with(s.as_str()),
            StringMatcher::Suffix(s, ic) => fold(*ic).ends_with(s.as_str()),
            StringMatcher::Contains(s, ic) => fold(*ic).contains(s.as_str()),
            StringMatcher::Regex(r) => r.is_match(value),
        }
    }
}

/// Compiles a regex for a full match, as Envoy's `safe_regex` (RE2) matches.
pub fn compile_regex(pattern: &str) -> Result<Regex, ConfigError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ConfigError::new("regex", format!("invalid regex `{pattern}`: {e}")))
}

#[derive(Debug, Clone)]
pub enum HeaderCheck {
    Present(bool),
    Value(StringMatcher),
}

#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    name: String,
    check: HeaderCheck,
    invert: bool,
}

impl HeaderMatcher {
    pub fn compile(raw: &RawHeaderMatcher) -> Result<Self, ConfigError> {
        let name = raw.name.to_ascii_lowercase();
        if name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        let set = [
            raw.string_match.is_some(),
            raw.exact_match.is_some(),
            raw.present_match.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set > 1 {
            return Err(ConfigError::new(
                "",
                "at most one of string_match, exact_match, present_match may be set",
            ));
        }
        let check = if let Some(sm) = &raw.string_match {
            HeaderCheck::Value(StringMatcher::compile(sm).map_err(|e| e.under("string_match"))?)
        } else if let Some(exact) = &raw.exact_match {
            HeaderCheck::Value(StringMatcher::Exact(exact.clone(), false))
        } else {
            HeaderCheck::Present(raw.present_match.unwrap_or(true))
        };
        Ok(HeaderMatcher {
            name,
            check,
            invert: raw.invert_match,
        })
    }

    /// Envoy semantics: values of a repeated header are joined with `,`.
    pub fn matches(&self, req: &RequestView) -> bool {
        let value = header_for_match(req, &self.name);
        let result = match (&self.check, value) {
            (HeaderCheck::Present(want), v) => v.is_some() == *want,
            (HeaderCheck::Value(_), None) => false,
            (HeaderCheck::Value(m), Some(v)) => m.matches(&v),
        };
        result != self.invert
    }
}

fn header_for_match(req: &RequestView, name: &str) -> Option<String> {
    match name {
        ":method" => Some(req.method().to_string()),
        ":path" => Some(req.path().to_string()),
        ":authority" | "host" => Some(req.authority().to_string()),
        ":scheme" => Some(req.scheme().to_string()),
        _ => {
            let values: Vec<&str> = req.header_values(name).collect();
            (!values.is_empty()).then(|| values.join(","))
        }
    }
}

#[derive(Debug, Clone)]
enum PathCheck {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

/// A compiled `RouteMatch`.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    path: PathCheck,
    case_sensitive: bool,
    headers: Vec<HeaderMatcher>,
}

impl RouteMatch {
    pub fn compile(raw: &RawRouteMatch) -> Result<Self, ConfigError> {
        let case_sensitive = raw.case_sensitive.unwrap_or(true);
        let fold = |s: &String| {
            if case_sensitive {
                s.clone()
            } else {
                s.to_ascii_lowercase()
            }
        };
        let mut checks = Vec::new();
        if let Some(p) = &raw.prefix {
            checks.push(PathCheck::Prefix(fold(p)));
        }
        if let Some(p) = &raw.path {
            checks.push(PathCheck::Exact(fold(p)));
        }
        if let Some(r) = &raw.safe_regex {
            let pattern = if case_sensitive {
                r.regex.clone()
            } else {
                format!("(?i:{})", r.regex)
            };
            checks.push(PathCheck::Regex(
                compile_regex(&pattern).map_err(|e| e.under("safe_regex"))?,
            ));
        }
        if checks.len() > 1 {
            return Err(ConfigError::new(
                "",
                "exactly one of prefix, path, safe_regex must be set",
            ));
        }
        let path = checks.pop().unwrap_or(PathCheck::Prefix(String::new()));
        let headers = raw
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderMatcher::compile(h).map_err(|e| e.under(&format!("headers[{i}]"))))
            .collect::<Result<_, _>>()?;
        Ok(RouteMatch {
            path,
            case_sensitive,
            headers,
        })
    }

    /// A match that accepts every request.
    pub fn any() -> Self {
        RouteMatch {
            path: PathCheck::Prefix(String::new()),
            case_sensitive: true,
            headers: Vec::new(),
        }
    }

    pub fn matches(&self, req: &RequestView) -> bool {
        let path_ok = match &self.path {
            // Envoy: prefix is matched against the whole :path, query included.
            PathCheck::Prefix(p) => self.fold(req.path()).starts_with(p.as_str()),
            // Envoy: path and safe_regex ignore the query string.
            PathCheck::Exact(p) => self.fold(req.path_without_query()) == *p,
            PathCheck::Regex(r) => r.is_match(req.path_without_query()),
        };
        path_ok && self.headers.iter().all(|h| h.matches(req))
    }

    fn fold<'a>(&self, s: &'a str) -> std::borrow::Cow<'a, str> {
        if self.case_sensitive {
            std::borrow::Cow::Borrowed(s)
        } else {
            std::borrow::Cow::Owned(s.to_ascii_lowercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestView {
        let mut all = vec![
            (":path".to_string(), path.to_string()),
            (":method".into(), "POST".into()),
        ];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RequestView::new(all)
    }

    fn route(json: &str) -> RouteMatch {
        RouteMatch::compile(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn prefix_path_and_regex() {
        assert!(route(r#"{"prefix": "/v1/"}"#).matches(&req("/v1/chat", &[])));
        assert!(!route(r#"{"prefix": "/v1/"}"#).matches(&req("/v2/chat", &[])));
        assert!(route(r#"{"path": "/health"}"#).matches(&req("/health?x=1", &[])));
        assert!(!route(r#"{"path": "/health"}"#).matches(&req("/healthz", &[])));
        assert!(route(r#"{"safe_regex": {"regex": "/v[0-9]+/models"}}"#)
            .matches(&req("/v1/models", &[])));
        assert!(!route(r#"{"safe_regex": {"regex": "/v[0-9]+/models"}}"#)
            .matches(&req("/v1/models/x", &[])));
    }

    #[test]
    fn case_insensitive_prefix() {
        let r = route(r#"{"prefix": "/V1/", "case_sensitive": false}"#);
        assert!(r.matches(&req("/v1/chat", &[])));
    }

    #[test]
    fn header_matchers() {
        let r = route(
            r#"{"prefix": "/", "headers": [{"name": "x-tenant", "string_match": {"exact": "acme"}}]}"#,
        );
        assert!(r.matches(&req("/", &[("x-tenant", "acme")])));
        assert!(!r.matches(&req("/", &[("x-tenant", "other")])));
        assert!(!r.matches(&req("/", &[])));
        let r = route(
            r#"{"headers": [{"name": "x-debug", "present_match": true, "invert_match": true}]}"#,
        );
        assert!(r.matches(&req("/", &[])));
        assert!(!r.matches(&req("/", &[("x-debug", "1")])));
        let r = route(r#"{"headers": [{"name": ":method", "exact_match": "POST"}]}"#);
        assert!(r.matches(&req("/", &[])));
    }

    #[test]
    fn invalid_regex_is_refused_with_field() {
        let raw: RawRouteMatch =
            serde_json::from_str(r#"{"safe_regex": {"regex": "(unclosed"}}"#).unwrap();
        let err = RouteMatch::compile(&raw).unwrap_err();
        assert!(err.path.starts_with("safe_regex"), "{err}");
        assert!(err.reason.contains("invalid regex"));
    }

    #[test]
    fn two_path_specifiers_are_refused() {
        let raw: RawRouteMatch = serde_json::from_str(r#"{"prefix": "/", "path": "/x"}"#).unwrap();
        assert!(RouteMatch::compile(&raw).is_err());
    }
}
