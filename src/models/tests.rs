//! Model checks: allow-lists from claims and scopes, wildcards, and what a
//! body without a readable model gets.
#![allow(clippy::cloned_ref_to_slice_refs)]

use super::body::{model_field, ModelField, Unreadable};
use super::*;
use crate::jwt::token::Claims;
use crate::jwt::Identity;
use serde_json::json;
use std::sync::Arc;

fn check(raw: serde_json::Value) -> ModelCheck {
    ModelCheck::compile(serde_json::from_value(raw).unwrap()).unwrap_or_else(|e| panic!("{e}"))
}

fn identity(payload: serde_json::Value) -> Identity {
    Identity {
        provider: "p".into(),
        claims: Arc::new(Claims {
            iss: None,
            sub: payload["sub"].as_str().map(str::to_string),
            aud: vec![],
            exp: None,
            nbf: None,
            iat: None,
            payload: payload.as_object().unwrap().clone(),
            payload_b64: String::new(),
        }),
    }
}

fn asked(model: &str) -> Option<ModelField> {
    Some(ModelField::Model {
        name: model.into(),
        whole: true,
    })
}

fn allowed(c: &ModelCheck, ids: &[Identity], model: &str) -> bool {
    let j = c.judge(ids, asked(model));
    assert_eq!(j.model.as_deref(), Some(model));
    j.denial.is_none()
}

#[test]
fn the_keys_allowed_models_with_wildcards() {
    let c = check(json!({}));
    let key =
        identity(json!({"sub": "app", "allowed_models": ["gpt-4o*", "claude-3-5-haiku-latest"]}));
    assert!(allowed(&c, &[key.clone()], "gpt-4o"));
    assert!(allowed(&c, &[key.clone()], "gpt-4o-mini"));
    assert!(allowed(&c, &[key.clone()], "claude-3-5-haiku-latest"));
    assert!(!allowed(&c, &[key.clone()], "gpt-4"));
    assert!(!allowed(&c, &[key.clone()], "o1-pro"));
    // The 403 names the model.
    let j = c.judge(&[key], asked("o1-pro"));
    let reply = j.denial.unwrap();
    assert_eq!(reply.status, 403);
    let e = reply.error.unwrap();
    assert_eq!(e.code, "model_not_allowed");
    assert_eq!(
        e.description,
        "model `o1-pro` is not allowed for this caller"
    );
}

#[test]
fn a_jwt_claim_or_scope_words() {
    let models = check(json!({"claims": ["models"]}));
    let jwt = identity(json!({"sub": "alice", "models": "gpt-4o-mini text-embedding-3-small"}));
    assert!(allowed(&models, &[jwt.clone()], "gpt-4o-mini"));
    assert!(!allowed(&models, &[jwt], "gpt-4o"));
    let nested = check(json!({"claims": ["llm.models"]}));
    let jwt = identity(json!({"llm": {"models": ["gpt-*"]}}));
    assert!(allowed(&nested, &[jwt], "gpt-4o"));

    let scoped = check(json!({"claims": [], "scope_prefix": "model:"}));
    let jwt =
        identity(json!({"scope": "openid model:gpt-4o* model:claude-3-5-sonnet-latest chat"}));
    assert!(allowed(&scoped, &[jwt.clone()], "gpt-4o-mini"));
    assert!(allowed(&scoped, &[jwt.clone()], "claude-3-5-sonnet-latest"));
    assert!(!allowed(&scoped, &[jwt], "chat"));
    // A scope without model words is no allow-list.
    let plain = identity(json!({"scope": "openid chat"}));
    assert!(!allowed(&scoped, &[plain.clone()], "gpt-4o"));
    let lenient = check(json!({"claims": [], "scope_prefix": "model:", "no_allow_list": "allow"}));
    assert!(allowed(&lenient, &[plain], "gpt-4o"));
}

#[test]
fn without_an_allow_list_the_policy_decides() {
    let strict = check(json!({}));
    let lenient = check(json!({"no_allow_list": "allow"}));
    let no_list = identity(json!({"sub": "app"}));
    assert!(!allowed(&strict, &[no_list.clone()], "gpt-4o"));
    assert!(allowed(&lenient, &[no_list.clone()], "gpt-4o"));
    // An empty list is a list: nothing is allowed.
    let empty = identity(json!({"allowed_models": []}));
    assert!(!allowed(&lenient, &[empty], "gpt-4o"));
    // No identity at all (allow_missing): no list.
    assert!(!allowed(&strict, &[], "gpt-4o"));
}

#[test]
fn a_key_and_a_jwt_together_get_what_both_allow() {
    let c = check(json!({}));
    let key = identity(json!({"allowed_models": ["gpt-4o*"]}));
    let jwt = identity(json!({"models": ["gpt-4o-mini", "o1"]}));
    assert!(allowed(&c, &[key.clone(), jwt.clone()], "gpt-4o-mini"));
    assert!(!allowed(&c, &[key.clone(), jwt.clone()], "gpt-4o"));
    assert!(!allowed(&c, &[key, jwt.clone()], "o1"));
    // One without a list does not widen nor narrow the other's.
    let bare = identity(json!({"sub": "x"}));
    assert!(allowed(&c, &[bare, jwt], "o1"));
}

#[test]
fn unreadable_models_follow_missing_model() {
    let strict = check(json!({}));
    let lenient = check(json!({"missing_model": "allow"}));
    let key = identity(json!({"allowed_models": ["*"]}));
    for field in [
        None,
        Some(model_field(b"{}", false)),
        Some(model_field(b"not json", false)),
        Some(model_field(br#"{"model": "a", "model": "b"}"#, false)),
    ] {
        let j = strict.judge(&[key.clone()], field.clone());
        assert!(j.unreadable);
        let reply = j.denial.unwrap();
        assert_eq!(reply.status, 403);
        assert_eq!(reply.error.unwrap().code, "model_unreadable");
        let j = lenient.judge(&[key.clone()], field);
        assert!(j.unreadable && j.denial.is_none());
    }
}

#[test]
fn a_model_read_from_the_start_only_counts_when_configured() {
    let start = Some(ModelField::Model {
        name: "gpt-4o".into(),
        whole: false,
    });
    let key = identity(json!({"allowed_models": ["gpt-4o"]}));
    let strict = check(json!({}));
    let j = strict.judge(&[key.clone()], start.clone());
    assert!(j.unreadable && j.denial.is_some());
    let reply = j.denial.unwrap();
    assert!(reply
        .error
        .unwrap()
        .description
        .contains(Unreadable::NotInStart.reason()));
    let from_start = check(json!({"over_max_body": "check_start"}));
    let j = from_start.judge(&[key], start);
    assert_eq!((j.model.as_deref(), j.denial), (Some("gpt-4o"), None));
}

#[test]
fn configuration_mistakes() {
    let err = |raw: serde_json::Value| {
        ModelCheck::compile(serde_json::from_value(raw).unwrap()).unwrap_err()
    };
    assert_eq!(err(json!({"claims": ["a..b"]})).path, "claims[0]");
    assert_eq!(err(json!({"claims": []})).path, "claims");
    assert_eq!(err(json!({"scope_prefix": ""})).path, "scope_prefix");
    assert_eq!(err(json!({"max_body_bytes": 0})).path, "max_body_bytes");
    assert!(serde_json::from_value::<RawModelCheck>(json!({"missing_model": "maybe"})).is_err());
    assert!(serde_json::from_value::<RawModelCheck>(json!({"claim": "x"})).is_err());
}

mod flow_with_model_checks {
    use crate::callout::{CalloutResponse, MemoryStore};
    use crate::config::FilterConfig;
    use crate::flow::{self, Step, WorkerState};
    use crate::request::RequestView;
    use crate::response::HeaderOp;
    use crate::stats::Counter;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};

    const KEY: &str = "sk-gw-flow-test";

    fn config(extra: Value) -> FilterConfig {
        FilterConfig::from_json(config_json(extra).as_bytes(), &|_: &str| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn config_json(extra: Value) -> String {
        let hash: String = Sha256::digest(KEY.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut cfg = json!({"jwt_authn": {
            "providers": {"keys": {"api_keys": [{"name": "app", "sha256": hash, "allowed_models": ["gpt-4o*"]}]}},
            "rules": [
                {"match": {"prefix": "/plain/"}, "requires": {"provider_name": "keys"}},
                {"match": {"prefix": "/"}, "requires": {"provider_name": "keys"},
                 "model_check": {"max_body_bytes": 64}}
            ]
        }});
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        cfg.to_string()
    }

    fn req(path: &str, has_body: bool) -> RequestView {
        let mut r = RequestView::new(vec![
            (":method".into(), "POST".into()),
            (":path".into(), path.into()),
            (":authority".into(), "gw".into()),
            ("x-api-key".into(), KEY.into()),
        ]);
        r.set_has_body(has_body);
        r
    }

    #[test]
    fn a_route_without_a_model_rule_goes_on_with_the_headers() {
        let cfg = config(json!({}));
        let mut state = WorkerState::new(&cfg);
        let (d, flight) = flow::on_request_headers(
            &cfg,
            &mut state,
            &MemoryStore::default(),
            req("/plain/v1/chat", true),
            0,
        );
        assert!(matches!(d.step, Step::Continue(_)), "{:?}", d.step);
        assert!(flight.is_none(), "nothing waits for the body");
    }

    #[test]
    fn a_model_rule_releases_the_headers_and_judges_the_body() {
        let cfg = config(json!({}));
        let store = MemoryStore::default();
        let mut state = WorkerState::new(&cfg);
        let (d, flight) =
            flow::on_request_headers(&cfg, &mut state, &store, req("/v1/chat", true), 0);
        let Step::ContinueAndBufferBody { ops, max_bytes } = d.step else {
            panic!("{:?}", d.step)
        };
        assert_eq!(max_bytes, 64);
        assert!(
            ops.contains(&HeaderOp::remove("x-api-key")),
            "the key goes before the headers do"
        );
        let (d, next) = flow::on_request_body(
            &cfg,
            &store,
            flight.unwrap(),
            br#"{"model": "gpt-4o-mini", "messages": []}"#,
            false,
            0,
        );
        assert_eq!(d.step, Step::Continue(vec![]));
        assert!(next.is_none());
        assert!(d.counters.contains(&Counter::ModelAllowed));
        assert!(d
            .properties
            .contains(&("ai_auth.model", "gpt-4o-mini".into())));

        let (_, flight) =
            flow::on_request_headers(&cfg, &mut state, &store, req("/v1/chat", true), 0);
        let (d, _) = flow::on_request_body(
            &cfg,
            &store,
            flight.unwrap(),
            br#"{"model": "o1"}"#,
            false,
            0,
        );
        let Step::Reply(reply) = d.step else {
            panic!("{:?}", d.step)
        };
        assert_eq!(reply.status, 403);
        assert!(d.counters.contains(&Counter::ModelDenied));
        // Without a body: judged at once.
        let (d, flight) =
            flow::on_request_headers(&cfg, &mut state, &store, req("/v1/chat", false), 0);
        assert!(flight.is_none());
        assert!(matches!(d.step, Step::Reply(ref r) if r.status == 403));
    }

    #[test]
    fn the_passthrough_is_asked_after_the_model_and_cannot_edit_headers_then() {
        let authz = |response: Value| {
            json!({"ext_authz": {"http_service": {
                "server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "1s"},
                "authorization_response": response}}})
        };
        let refused = FilterConfig::from_json(
            config_json(authz(
                json!({"allowed_upstream_headers": {"patterns": [{"exact": "x-user-id"}]}}),
            ))
            .as_bytes(),
            &|_: &str| None,
        )
        .unwrap_err();
        assert_eq!(
            refused.path,
            "ext_authz.http_service.authorization_response.allowed_upstream_headers"
        );
        assert!(refused.reason.contains("model_check"), "{refused}");
        let cfg = config(authz(
            json!({"allowed_client_headers_on_success": {"patterns": [{"exact": "x-ratelimit"}]}}),
        ));
        let store = MemoryStore::default();
        let mut state = WorkerState::new(&cfg);
        let (d, flight) =
            flow::on_request_headers(&cfg, &mut state, &store, req("/v1/chat", true), 0);
        assert!(
            matches!(d.step, Step::ContinueAndBufferBody { .. }),
            "{:?}",
            d.step
        );
        let (d, flight) = flow::on_request_body(
            &cfg,
            &store,
            flight.unwrap(),
            br#"{"model": "gpt-4o"}"#,
            false,
            0,
        );
        assert!(matches!(d.step, Step::Callout(_)), "{:?}", d.step);
        let reply = CalloutResponse {
            status: Some(200),
            headers: vec![("x-ratelimit".into(), "9".into())],
            body: vec![],
        };
        let d = flow::on_callout_response(
            &cfg,
            &mut WorkerState::new(&cfg),
            &store,
            flight.unwrap(),
            reply,
            0,
        )
        .0;
        assert_eq!(d.step, Step::Continue(vec![]));
        assert_eq!(
            d.response_headers,
            vec![("x-ratelimit".to_string(), "9".to_string())]
        );
    }
}
