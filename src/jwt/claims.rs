//! Claim rules on a verified token (`realm_access.roles` contains `llm-user`,
//! `scope` contains `chat`...), and claim values turned into header values.

use super::token::Claims;
use crate::response::is_valid_header_value;
use crate::vocab::ConfigError;
use serde::Deserialize;
use serde_json::Value;

/// Wire form: a claim (dotted path, or `claim_path` for names with dots)
/// and exactly one check.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawClaimRule {
    claim: Option<String>,
    claim_path: Option<Vec<String>>,
    /// The claim equals this JSON value.
    equals: Option<Value>,
    /// The claim (or one of its elements) equals one of these values.
    any_of: Option<Vec<Value>>,
    /// The claim, an array or a space-separated string (`scope`), holds this value.
    contains: Option<Value>,
    contains_all: Option<Vec<Value>>,
    contains_any: Option<Vec<Value>>,
    /// The claim is present (`true`) or absent (`false`).
    present: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
enum Check {
    Equals(Value),
    AnyOf(Vec<Value>),
    ContainsAll(Vec<Value>),
    ContainsAny(Vec<Value>),
    Present(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    path: Vec<String>,
    check: Check,
}

impl ClaimRule {
    pub fn compile(raw: RawClaimRule) -> Result<Self, ConfigError> {
        let path = match (raw.claim, raw.claim_path) {
            (Some(c), None) if !c.is_empty() && !c.split('.').any(str::is_empty) => {
                c.split('.').map(str::to_string).collect()
            }
            (None, Some(p)) if !p.is_empty() && !p.iter().any(String::is_empty) => p,
            _ => {
                return Err(ConfigError::new(
                    "claim",
                    "exactly one of claim (dotted path) or claim_path (list) must be set, without empty steps",
                ))
            }
        };
        let mut checks = Vec::new();
        if let Some(v) = raw.equals {
            checks.push(Check::Equals(v));
        }
        if let Some(v) = raw.any_of {
            checks.push(Check::AnyOf(non_empty("any_of", v)?));
        }
        if let Some(v) = raw.contains {
            checks.push(Check::ContainsAll(vec![v]));
        }
        if let Some(v) = raw.contains_all {
            checks.push(Check::ContainsAll(non_empty("contains_all", v)?));
        }
        if let Some(v) = raw.contains_any {
            checks.push(Check::ContainsAny(non_empty("contains_any", v)?));
        }
        if let Some(p) = raw.present {
            checks.push(Check::Present(p));
        }
        match (checks.pop(), checks.is_empty()) {
            (Some(check), true) => Ok(ClaimRule { path, check }),
            _ => Err(ConfigError::new(
                "",
                "exactly one of equals, any_of, contains, contains_all, contains_any, present must be set",
            )),
        }
    }

    /// The claim's name for error descriptions.
    pub fn claim_name(&self) -> String {
        self.path.join(".")
    }

    /// The scope values this rule asks for, when it checks the `scope` (or
    /// `scp`) claim: what RFC 6750's `scope` challenge parameter names.
    pub fn scope_values(&self) -> Vec<String> {
        if !matches!(self.path.as_slice(), [c] if c == "scope" || c == "scp") {
            return Vec::new();
        }
        let values: &[Value] = match &self.check {
            Check::Equals(v) => std::slice::from_ref(v),
            Check::AnyOf(v) | Check::ContainsAll(v) | Check::ContainsAny(v) => v,
            Check::Present(_) => &[],
        };
        values
            .iter()
            .filter_map(Value::as_str)
            .flat_map(|s| s.split(' '))
            .filter(|w| !w.is_empty() && crate::response::quoted_param_safe(w) == *w)
            .map(str::to_string)
            .collect()
    }

    pub fn is_satisfied_by(&self, claims: &Claims) -> bool {
        let value = claims.lookup(&self.path);
        match (&self.check, value) {
            (Check::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Check::Equals(expected), Some(v)) => v == expected,
            (Check::AnyOf(allowed), Some(v)) => match v {
                Value::Array(items) => items.iter().any(|i| allowed.contains(i)),
                other => allowed.contains(other),
            },
            (Check::ContainsAll(wanted), Some(v)) => wanted.iter().all(|w| holds(v, w)),
            (Check::ContainsAny(wanted), Some(v)) => wanted.iter().any(|w| holds(v, w)),
        }
    }
}

fn non_empty(field: &str, v: Vec<Value>) -> Result<Vec<Value>, ConfigError> {
    if v.is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(v)
    }
}

/// An array holds an element equal to `wanted`; a string holds `wanted` as
/// one of its space-separated words (the `scope` claim, RFC 8693 4.2).
fn holds(value: &Value, wanted: &Value) -> bool {
    match value {
        Value::Array(items) => items.contains(wanted),
        Value::String(s) => wanted
            .as_str()
            .is_some_and(|w| s.split(' ').any(|word| word == w)),
        other => other == wanted,
    }
}

/// A claim as a header value: strings as they are, numbers and booleans as
/// JSON text, arrays of those joined with `,`. Objects, and anything with
/// control characters, give no header.
pub fn header_value(value: &Value) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    is_valid_header_value(&text).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(payload: Value) -> Claims {
        Claims {
            iss: None,
            sub: None,
            aud: vec![],
            exp: None,
            nbf: None,
            iat: None,
            payload: payload.as_object().unwrap().clone(),
            payload_b64: String::new(),
        }
    }

    fn rule(json: Value) -> ClaimRule {
        ClaimRule::compile(serde_json::from_value(json).unwrap()).unwrap()
    }

    #[test]
    fn keycloak_realm_role() {
        let r = rule(json!({"claim": "realm_access.roles", "contains": "llm-user"}));
        assert!(r.is_satisfied_by(&claims(
            json!({"realm_access": {"roles": ["a", "llm-user"]}})
        )));
        assert!(!r.is_satisfied_by(&claims(json!({"realm_access": {"roles": ["a"]}}))));
        assert!(!r.is_satisfied_by(&claims(json!({"realm_access": "llm-user-x"}))));
        assert!(!r.is_satisfied_by(&claims(json!({}))));
    }

    #[test]
    fn space_separated_scope() {
        let r = rule(json!({"claim": "scope", "contains_all": ["chat", "embed"]}));
        assert!(r.is_satisfied_by(&claims(json!({"scope": "openid chat embed"}))));
        assert!(!r.is_satisfied_by(&claims(json!({"scope": "openid chatty embed"}))));
        let r = rule(json!({"claim": "scope", "contains_any": ["admin", "chat"]}));
        assert!(r.is_satisfied_by(&claims(json!({"scope": "chat"}))));
    }

    #[test]
    fn equals_and_any_of() {
        let r = rule(json!({"claim": "email_verified", "equals": true}));
        assert!(r.is_satisfied_by(&claims(json!({"email_verified": true}))));
        assert!(!r.is_satisfied_by(&claims(json!({"email_verified": "true"}))));
        let r = rule(json!({"claim": "tenant", "any_of": ["acme", "globex"]}));
        assert!(r.is_satisfied_by(&claims(json!({"tenant": "acme"}))));
        assert!(r.is_satisfied_by(&claims(json!({"tenant": ["x", "globex"]}))));
        assert!(!r.is_satisfied_by(&claims(json!({"tenant": "initech"}))));
    }

    #[test]
    fn claim_path_allows_dotted_names() {
        let r = rule(json!({"claim_path": ["https://example.com/roles"], "contains": "admin"}));
        assert!(r.is_satisfied_by(&claims(json!({"https://example.com/roles": ["admin"]}))));
    }

    #[test]
    fn rules_need_exactly_one_check() {
        let raw = |v: Value| ClaimRule::compile(serde_json::from_value(v).unwrap());
        assert!(raw(json!({"claim": "a"})).is_err());
        assert!(raw(json!({"claim": "a", "equals": 1, "contains": 1})).is_err());
        assert!(raw(json!({"claim": "a..b", "equals": 1})).is_err());
        assert!(raw(json!({"claim": "a", "any_of": []})).is_err());
    }

    #[test]
    fn scope_rules_name_their_scopes() {
        let r = rule(json!({"claim": "scope", "contains_all": ["chat", "embed"]}));
        assert_eq!(r.scope_values(), ["chat", "embed"]);
        let r = rule(json!({"claim": "scp", "contains": "chat"}));
        assert_eq!(r.scope_values(), ["chat"]);
        let r = rule(json!({"claim": "realm_access.roles", "contains": "chat"}));
        assert!(r.scope_values().is_empty());
        let r = rule(json!({"claim": "scope", "contains": "a\"b"}));
        assert!(
            r.scope_values().is_empty(),
            "nothing that could break the header"
        );
    }

    #[test]
    fn header_values_from_claims() {
        assert_eq!(header_value(&json!("alice")).as_deref(), Some("alice"));
        assert_eq!(header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_value(&json!(["a", "b"])).as_deref(), Some("a,b"));
        assert_eq!(header_value(&json!({"a": 1})), None);
        assert_eq!(header_value(&json!("a\r\nx-evil: 1")), None);
    }
}
