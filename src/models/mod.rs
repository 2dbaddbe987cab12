//! Model-level authorization: which models a caller may use.
//!
//! A `jwt_authn` rule with a `model_check` reads `model` from the start of
//! an OpenAI- or Anthropic-shaped JSON body ([`body`]) and checks it
//! against the allow-list of the verified identity: a claim (an API key's
//! `allowed_models`, a JWT's `models`...) or `scope` words with a prefix
//! (`model:gpt-4o*`), with `*` wildcards ([`pattern`]). Routes whose rule
//! has no `model_check` never read the body.

pub mod body;
pub mod pattern;

use crate::jwt::token::Claims;
use crate::jwt::Identity;
use crate::response::LocalReply;
use crate::vocab::ConfigError;
use body::{ModelField, Unreadable};
use serde::Deserialize;
use serde_json::Value;

/// Filter state key (`wasm.ai_auth.model` in access logs): the model a request asked for.
pub const MODEL_PROPERTY: &str = "ai_auth.model";
/// How much of the body is read by default. The official SDKs put `model`
/// after `messages`, so a long conversation needs a larger limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// The most that may be configured: the body is held in Envoy meanwhile.
const MAX_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    Deny,
    Allow,
}

/// What to do with a body longer than `max_body_bytes`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OverMaxBody {
    /// As a body without a readable model (`missing_model`).
    #[default]
    Unreadable,
    /// Check the model found in the start. A second `model` further on
    /// (which a provider keeping the last key would use) goes unseen.
    CheckStart,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawModelCheck {
    /// Claims holding the allowed models (an array, or a space-separated
    /// string), as dotted paths; the first one present counts.
    claims: Option<Vec<String>>,
    /// `scope` words with this prefix name allowed models (`model:gpt-4o*`).
    scope_prefix: Option<String>,
    #[serde(default)]
    missing_model: Policy,
    #[serde(default)]
    no_allow_list: Policy,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    over_max_body: OverMaxBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCheck {
    claims: Vec<Vec<String>>,
    scope_prefix: Option<String>,
    missing_model: Policy,
    no_allow_list: Policy,
    pub max_body_bytes: usize,
    over_max_body: OverMaxBody,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The model the request asked for, when it could be read.
    pub model: Option<String>,
    /// `None`: allowed; else the 403 to answer.
    pub denial: Option<LocalReply>,
    /// No readable model (allowed or not, by `missing_model`).
    pub unreadable: bool,
}

impl ModelCheck {
    pub fn compile(raw: RawModelCheck) -> Result<Self, ConfigError> {
        let names = raw
            .claims
            .unwrap_or_else(|| vec!["allowed_models".into(), "models".into()]);
        let mut claims = Vec::new();
        for (i, c) in names.iter().enumerate() {
            if c.is_empty() || c.split('.').any(str::is_empty) {
                return Err(ConfigError::new(
                    format!("claims[{i}]"),
                    "must be a claim name or a dotted path",
                ));
            }
            claims.push(c.split('.').map(str::to_string).collect());
        }
        if raw.scope_prefix.as_deref() == Some("")
            || raw.scope_prefix.as_deref().is_some_and(|p| p.contains(' '))
        {
            return Err(ConfigError::new(
                "scope_prefix",
                "must be a non-empty word such as `model:`",
            ));
        }
        if claims.is_empty() && raw.scope_prefix.is_none() {
            return Err(ConfigError::new(
                "claims",
                "name at least one claim, or set scope_prefix: the allow-list must come from somewhere",
            ));
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if !(1..=MAX_MAX_BODY_BYTES).contains(&max_body_bytes) {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be between 1 and {MAX_MAX_BODY_BYTES}"),
            ));
        }
        Ok(ModelCheck {
            claims,
            scope_prefix: raw.scope_prefix,
            missing_model: raw.missing_model,
            no_allow_list: raw.no_allow_list,
            max_body_bytes,
            over_max_body: raw.over_max_body,
        })
    }

    /// The allow-list one identity carries, if it carries one.
    fn allow_list<'c>(&self, claims: &'c Claims) -> Option<Vec<&'c str>> {
        let mut list: Option<Vec<&str>> = self
            .claims
            .iter()
            .find_map(|path| claims.lookup(path))
            .map(|v| words(v).collect());
        if let Some(prefix) = &self.scope_prefix {
            let scoped: Vec<&str> = claims
                .payload
                .get("scope")
                .into_iter()
                .flat_map(words)
                .filter_map(|w| w.strip_prefix(prefix.as_str()))
                .collect();
            if !scoped.is_empty() {
                list.get_or_insert_with(Vec::new).extend(scoped);
            }
        }
        list
    }

    /// Judges a request of these identities whose body gave `field`
    /// (`None`: the request has no body).
    pub fn judge(&self, identities: &[Identity], field: Option<ModelField>) -> Judgement {
        let field = field.unwrap_or(ModelField::Unreadable(Unreadable::NoBody));
        let name = match field {
            ModelField::Model { whole: false, .. }
                if self.over_max_body == OverMaxBody::Unreadable =>
            {
                Err(Unreadable::NotInStart)
            }
            ModelField::Model { name, .. } => Ok(name),
            ModelField::Unreadable(why) => Err(why),
        };
        let name = match name {
            Ok(name) => name,
            Err(why) => {
                let denial = (self.missing_model == Policy::Deny).then(|| {
                    LocalReply::json_error(
                        403,
                        "model_unreadable",
                        &format!("the requested model cannot be checked: {}", why.reason()),
                    )
                });
                return Judgement {
                    model: None,
                    denial,
                    unreadable: true,
                };
            }
        };
        let lists: Vec<Vec<&str>> = identities
            .iter()
            .filter_map(|i| self.allow_list(&i.claims))
            .collect();
        // Every identity that has a list must allow the model (a key and a
        // JWT together get what both allow).
        let allowed = if lists.is_empty() {
            self.no_allow_list == Policy::Allow
        } else {
            lists
                .iter()
                .all(|l| l.iter().any(|p| pattern::matches(p, &name)))
        };
        let denial = (!allowed).then(|| {
            let shown = crate::jwt::loggable(&name);
            LocalReply::json_error(
                403,
                "model_not_allowed",
                &format!("model `{shown}` is not allowed for this caller"),
            )
        });
        Judgement {
            model: Some(name),
            denial,
            unreadable: false,
        }
    }
}

/// The strings of a claim: an array's string elements, or the words of a
/// space-separated string (`scope`).
fn words(value: &Value) -> Box<dyn Iterator<Item = &str> + '_> {
    match value {
        Value::Array(items) => Box::new(items.iter().filter_map(Value::as_str)),
        Value::String(s) => Box::new(s.split(' ').filter(|w| !w.is_empty())),
        _ => Box::new(std::iter::empty()),
    }
}

#[cfg(test)]
mod tests;
