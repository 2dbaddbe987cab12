//! A small auth service for the demo's passthrough stage, answering the
//! filter's `ext_authz` HTTP checks: the check is the original request
//! under `/check`, with the identity the JWT stage verified (`x-user`,
//! `x-tenant`, set from the token's claims; a client cannot send them).
//!
//!   user `mallory`        403, the service's own error body (suspended account)
//!   anyone else           200, `x-user-plan: pro` for tenant acme, `free` otherwise
//!
//! Usage: demo-authz <port>   (ends on SIGTERM or SIGINT)

use ai_auth_testkit::demo;
use ai_auth_testkit::http::Action;
use serde_json::json;

/// Users whose access the demo's service has revoked.
const SUSPENDED: [&str; 1] = ["mallory"];

fn main() {
    demo::block_termination();
    let port = demo::port_arg("demo-authz <port>");
    demo::serve("demo-authz", port, |r| {
        let Some(user) = r.header("x-user") else {
            return Action::status(403);
        };
        if SUSPENDED.contains(&user) {
            let message = format!("the account of {user} is suspended");
            // The service answers in the shape of the API that was called;
            // the gateway passes its body to the client as it is.
            let body = if r.path.starts_with("/check/v1/messages") {
                json!({"type": "error", "error": {"type": "permission_error", "message": message}})
            } else {
                json!({"error": {"message": message, "type": "permission_error", "param": null, "code": "account_suspended"}})
            };
            return Action::json(403, &body);
        }
        let plan = if r.header("x-tenant") == Some("acme") {
            "pro"
        } else {
            "free"
        };
        Action::status(200)
            .with_header("x-user-plan", plan)
            .with_header("cache-control", "max-age=30")
    });
}
