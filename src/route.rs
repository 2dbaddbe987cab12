//! Request matching as Envoy's `RouteMatch` and `HeaderMatcher` do it, shared by
//! every stage that chooses something per route (JWT rules, passthrough
//! disable, upstream backend selection).

use crate::request::RequestView;
use crate::vocab::ConfigError;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson::{self, WhichCaptures, NFA};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use serde::Deserialize;
use std::cell::RefCell;

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
    Regex(SafeRegex),
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

/// The largest compiled pattern accepted, in NFA states (instructions),
/// as Envoy bounds RE2's program size (`re2.max_program_size.error_level`,
/// 100 by default): matching costs at most this many steps per byte.
pub const MAX_REGEX_PROGRAM_SIZE: usize = 100;
/// Memory the NFA compiler may use before a pattern is refused as too big
/// (`a{1000}{1000}` is refused here, before it is built).
const MAX_REGEX_COMPILE_BYTES: usize = 64 * 1024;
/// Memory of the lazy DFA's state cache, per pattern. A pattern whose DFA
/// needs more (states that blow up) clears it and goes on: slower, still
/// linear in the input.
const REGEX_CACHE_BYTES: usize = 64 * 1024;

/// A `safe_regex`, matched as RE2 does in Envoy: against the whole value,
/// in linear time (a lazy DFA, regex-automata's `hybrid`, never
/// backtracking), with `\d`, `\w`, `\s` and `(?i)` on ASCII.
#[derive(Debug, Clone)]
pub struct SafeRegex(Box<Lazy>);

#[derive(Debug, Clone)]
struct Lazy {
    dfa: DFA,
    /// The DFA's states built so far (the VM runs one request at a time).
    cache: RefCell<Cache>,
}

impl SafeRegex {
    pub fn is_match(&self, value: &str) -> bool {
        let input = Input::new(value.as_bytes())
            .anchored(Anchored::Yes)
            .earliest(true);
        let Lazy { dfa, cache } = &*self.0;
        let found = match cache.try_borrow_mut() {
            Ok(mut cache) => dfa.try_search_fwd(&mut cache, &input),
            Err(_) => dfa.try_search_fwd(&mut dfa.create_cache(), &input),
        };
        // The DFA is configured never to give up and has no quit bytes:
        // an error cannot happen; were it to, nothing matched.
        matches!(found, Ok(Some(_)))
    }
}

/// Compiles a regex for a full match, as Envoy's `safe_regex` (RE2) matches,
/// refusing patterns over [`MAX_REGEX_PROGRAM_SIZE`].
pub fn compile_regex(pattern: &str) -> Result<SafeRegex, ConfigError> {
    let full = format!("^(?:{pattern})$");
    let too_big = |size: &dyn std::fmt::Display| {
        ConfigError::new(
            "regex",
            format!(
                "regex `{pattern}` compiles to {size} instructions, more than {MAX_REGEX_PROGRAM_SIZE} (as Envoy's RE2 program size limit)"
            ),
        )
    };
    // Unicode off: RE2's Perl classes are ASCII, and the matcher carries no
    // Unicode tables; a path or a header value is matched as bytes.
    let nfa = NFA::compiler()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            thompson::Config::new()
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(MAX_REGEX_COMPILE_BYTES)),
        )
        .build(&full)
        .map_err(|e| {
            if e.size_limit().is_some() {
                too_big(&"many")
            } else {
                ConfigError::new("regex", format!("invalid regex `{pattern}`: {e}"))
            }
        })?;
    let size = nfa.states().len();
    if size > MAX_REGEX_PROGRAM_SIZE {
        return Err(too_big(&size));
    }
    let dfa = DFA::builder()
        .configure(DFA::config().cache_capacity(REGEX_CACHE_BYTES))
        .build_from_nfa(nfa)
        .map_err(|e| ConfigError::new("regex", format!("regex `{pattern}`: {e}")))?;
    let cache = RefCell::new(dfa.create_cache());
    Ok(SafeRegex(Box::new(Lazy { dfa, cache })))
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
    Regex(SafeRegex),
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
    fn regexes_match_the_path_without_its_query_as_re2_does() {
        let r = route(r#"{"safe_regex": {"regex": "/v\\d+/\\w+"}}"#);
        assert!(r.matches(&req("/v1/models?next=/../admin", &[])));
        assert!(!r.matches(&req("/v1/models/x?y", &[])));
        // RE2's Perl classes are ASCII.
        assert!(!r.matches(&req("/v\u{0663}/models", &[])));
        let r = route(r#"{"safe_regex": {"regex": "/API/.*"}, "case_sensitive": false}"#);
        assert!(r.matches(&req("/api/x", &[])));
        let m = StringMatcher::compile(
            &serde_json::from_str(r#"{"safe_regex": {"regex": "b.+r"}}"#).unwrap(),
        )
        .unwrap();
        assert!(m.matches("bearer"));
        assert!(!m.matches("x-bearer"));
    }

    #[test]
    fn patterns_over_the_program_size_are_refused() {
        for (pattern, ok) in [
            ("/v1/(chat/completions|completions|embeddings)", true),
            ("(.*a){20}", true),
            ("[a-z]{1,1000}", false),
            (".{200}", false),
            ("a{1000}{1000}", false),
        ] {
            let raw: RawRouteMatch =
                serde_json::from_value(serde_json::json!({"safe_regex": {"regex": pattern}}))
                    .unwrap();
            match RouteMatch::compile(&raw) {
                Ok(_) => assert!(ok, "{pattern} accepted"),
                Err(e) => {
                    assert!(!ok, "{pattern}: {e}");
                    assert_eq!(e.path, "safe_regex.regex");
                    assert!(e.reason.contains("more than 100"), "{e}");
                }
            }
        }
    }

    #[test]
    fn a_60_kb_path_is_matched_in_linear_time() {
        // regex-lite's PikeVM took 7 ms (the first) and 61-68 ms (the
        // second) per match in the VM; a lazy DFA scans it once.
        let path = format!("/re/{}", "a".repeat(60 * 1000));
        for pattern in ["/re/[a-z]+(/.*)?", "(.*a){20}"] {
            let r = compile_regex(pattern).unwrap();
            let start = std::time::Instant::now();
            for _ in 0..20 {
                assert!(r.is_match(&path));
            }
            let took = start.elapsed();
            assert!(
                took < std::time::Duration::from_millis(400),
                "{pattern}: 20 matches took {took:?}"
            );
        }
    }

    #[test]
    fn two_path_specifiers_are_refused() {
        let raw: RawRouteMatch = serde_json::from_str(r#"{"prefix": "/", "path": "/x"}"#).unwrap();
        assert!(RouteMatch::compile(&raw).is_err());
    }
}
