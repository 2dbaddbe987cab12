//! A small auth service for the demo's passthrough stage, one policy over
//! both transports the filter speaks:
//!
//! - HTTP (`ext_authz.http_service`): the check is the original request
//!   under `/check`, with the identity the JWT stage verified in `x-user`
//!   and `x-tenant` (set from the token's claims; a client cannot send them);
//! - gRPC (`ext_authz.grpc_service`): Envoy's
//!   `envoy.service.auth.v3.Authorization/Check`, the identity read from the
//!   verified claims in `metadata_context` (`envoy.filters.http.jwt_authn`).
//!
//! The policy ([`decide`]):
//!
//!   user `mallory`        403, the service's own error body (suspended account)
//!   anyone else           allowed, `x-user-plan: pro` for tenant acme, `free` otherwise
//!
//! Every allow also sets `x-authz-transport: http` or `grpc`, so the
//! upstream (and the demo's checks) see which transport decided.
//!
//! Usage: demo-authz <http port> [<grpc port>]   (ends on SIGTERM or SIGINT)
//!
//! With `AUTHZ_BENCH_API_KEY` set, the policy is the benchmark's instead
//! (`benches/envoy.rs`, the passthrough rows): allowed, with nothing added,
//! when the request's `x-api-key` is that value, else 403 (gRPC
//! `PERMISSION_DENIED`, no body). A fast service (tonic, no logging) keeps
//! the benchmark's Envoy busy, so its CPU per request is not dominated by a
//! slow service's pace.

use ai_auth_testkit::demo;
use ai_auth_testkit::http::Action;
use serde_json::{json, Value};

/// Users whose access the demo's service has revoked.
const SUSPENDED: [&str; 1] = ["mallory"];

/// The header naming the transport that carried the check.
const TRANSPORT_HEADER: &str = "x-authz-transport";

enum Decision {
    Allow {
        plan: &'static str,
    },
    /// 403 with this JSON body.
    Deny {
        body: Value,
    },
}

/// The demo's policy, whichever transport asked: the verified user and
/// tenant, and the path the client called (for the shape of the error).
fn decide(user: Option<&str>, tenant: Option<&str>, path: &str) -> Decision {
    let message = match user {
        None => "no verified user".to_string(),
        Some(user) if SUSPENDED.contains(&user) => format!("the account of {user} is suspended"),
        Some(_) => {
            let plan = if tenant == Some("acme") {
                "pro"
            } else {
                "free"
            };
            return Decision::Allow { plan };
        }
    };
    // The service answers in the shape of the API that was called; the
    // gateway passes its body to the client as it is.
    let body = if path.starts_with("/v1/messages") {
        json!({"type": "error", "error": {"type": "permission_error", "message": message}})
    } else {
        json!({"error": {"message": message, "type": "permission_error", "param": null, "code": "account_suspended"}})
    };
    Decision::Deny { body }
}

/// The benchmark's policy (`AUTHZ_BENCH_API_KEY`): whether this key may pass.
fn bench_allows(key: &str, sent: Option<&str>) -> bool {
    sent == Some(key)
}

fn bench_key() -> Option<String> {
    std::env::var("AUTHZ_BENCH_API_KEY").ok()
}

fn main() {
    demo::block_termination();
    let usage = "demo-authz <http port> [<grpc port>]";
    let port = demo::port_arg(usage);
    if let Some(grpc_port) = std::env::args().nth(2) {
        let Ok(grpc_port) = grpc_port.parse() else {
            eprintln!("usage: {usage}");
            std::process::exit(2);
        };
        grpc::start(grpc_port);
    }
    let bench = bench_key();
    demo::serve("demo-authz", port, move |r| {
        if let Some(key) = &bench {
            let status = if bench_allows(key, r.header("x-api-key")) {
                200
            } else {
                403
            };
            return Action::status(status);
        }
        let path = r.path.strip_prefix("/check").unwrap_or(&r.path);
        match decide(r.header("x-user"), r.header("x-tenant"), path) {
            Decision::Allow { plan } => Action::status(200)
                .with_header("x-user-plan", plan)
                .with_header(TRANSPORT_HEADER, "http")
                .with_header("cache-control", "max-age=30"),
            Decision::Deny { body } => Action::json(403, &body),
        }
    });
}

/// `envoy.service.auth.v3.Authorization/Check` over tonic's server, on its
/// own thread (the main thread waits for SIGTERM / SIGINT, then the process
/// ends with it).
mod grpc {
    use super::{bench_allows, bench_key, decide, Decision, TRANSPORT_HEADER};
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::future::{ready, Future, Ready};
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
    /// Where Envoy's `jwt_authn` (and the filter) publish verified claims.
    const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
    /// `google.rpc.Code` values.
    const OK: i32 = 0;
    const PERMISSION_DENIED: i32 = 7;
    /// `HeaderValueOption.append_action`: the service's value replaces any
    /// the request carried (a client cannot pre-set these headers).
    const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;

    pub fn start(port: u16) {
        let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
        let addr: SocketAddr = match format!("{bind}:{port}").parse() {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("demo-authz: bad gRPC address {bind}:{port}: {e}");
                std::process::exit(2);
            }
        };
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("demo-authz: no tokio runtime: {e}");
                std::process::exit(1);
            }
        };
        // Bind here, so a port in use fails at start as on the HTTP side.
        let incoming = {
            let _reactor = runtime.enter();
            match tonic::transport::server::TcpIncoming::bind(addr) {
                Ok(incoming) => incoming.with_nodelay(Some(true)),
                Err(e) => {
                    eprintln!("demo-authz: cannot listen on {addr} (gRPC): {e}");
                    std::process::exit(1);
                }
            }
        };
        eprintln!("demo-authz: gRPC (Authorization/Check) on {addr}");
        let service = Authorization { bench: bench_key() };
        std::thread::spawn(move || {
            let served = runtime.block_on(
                tonic::transport::Server::builder().serve_with_incoming(service, incoming),
            );
            if let Err(e) = served {
                eprintln!("demo-authz: the gRPC server stopped: {e}");
                std::process::exit(1);
            }
        });
    }

    /// The one gRPC method, routed by path (what tonic's codegen would write).
    #[derive(Clone)]
    struct Authorization {
        /// `AUTHZ_BENCH_API_KEY`: the benchmark's policy instead of the demo's.
        bench: Option<String>,
    }

    type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

    impl tower_service::Service<http::Request<tonic::body::Body>> for Authorization {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            if request.uri().path() != CHECK {
                let path = request.uri().path().to_string();
                return Box::pin(async move {
                    Ok(tonic::Status::unimplemented(format!("no method {path}")).into_http())
                });
            }
            let check = Check {
                bench: self.bench.clone(),
            };
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(check, request).await)
            })
        }
    }

    struct Check {
        bench: Option<String>,
    }

    impl tonic::server::UnaryService<CheckRequest> for Check {
        type Response = CheckResponse;
        type Future = Ready<Result<tonic::Response<CheckResponse>, tonic::Status>>;

        fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
            let request = request.into_inner();
            let response = match &self.bench {
                Some(key) => bench_check(key, &request),
                None => check(&request),
            };
            ready(Ok(tonic::Response::new(response)))
        }
    }

    /// The benchmark's policy: OK with nothing added, or PERMISSION_DENIED.
    fn bench_check(key: &str, request: &CheckRequest) -> CheckResponse {
        let sent = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .and_then(|h| h.headers.get("x-api-key"))
            .map(String::as_str);
        let code = if bench_allows(key, sent) {
            OK
        } else {
            PERMISSION_DENIED
        };
        CheckResponse {
            status: Some(RpcStatus { code }),
            ok_response: None,
            denied_response: None,
        }
    }

    fn check(request: &CheckRequest) -> CheckResponse {
        let path = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(|h| h.path.as_str())
            .unwrap_or("");
        let claims = request
            .attributes
            .as_ref()
            .and_then(|a| a.metadata_context.as_ref())
            .and_then(|m| m.filter_metadata.get(JWT_AUTHN))
            // One entry per provider; the demo has one.
            .and_then(|providers| providers.fields.values().next())
            .and_then(|v| v.struct_value.as_ref());
        let claim = |name: &str| {
            claims
                .and_then(|c| c.fields.get(name))
                .and_then(|v| v.string_value.as_deref())
        };
        let header = |key: &str, value: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
            }),
            append_action: OVERWRITE_IF_EXISTS_OR_ADD,
        };
        match decide(claim("sub"), claim("tenant"), path) {
            Decision::Allow { plan } => CheckResponse {
                status: Some(RpcStatus { code: OK }),
                ok_response: Some(OkHttpResponse {
                    headers: vec![
                        header("x-user-plan", plan),
                        header(TRANSPORT_HEADER, "grpc"),
                    ],
                }),
                denied_response: None,
            },
            Decision::Deny { body } => CheckResponse {
                status: Some(RpcStatus {
                    code: PERMISSION_DENIED,
                }),
                ok_response: None,
                denied_response: Some(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 403 }),
                    headers: vec![header("content-type", "application/json")],
                    body: body.to_string(),
                }),
            },
        }
    }

    // The messages, as far as this service reads and writes them, with the
    // field numbers of Envoy's protos (envoy/service/auth/v3/*.proto,
    // envoy/config/core/v3/base.proto, google/protobuf/struct.proto,
    // google/rpc/status.proto); every other field is skipped on decode.

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckRequest {
        #[prost(message, optional, tag = "1")]
        attributes: Option<AttributeContext>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct AttributeContext {
        #[prost(message, optional, tag = "4")]
        request: Option<Request>,
        #[prost(message, optional, tag = "11")]
        metadata_context: Option<Metadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Request {
        #[prost(message, optional, tag = "2")]
        http: Option<HttpRequest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct HttpRequest {
        #[prost(btree_map = "string, string", tag = "3")]
        headers: BTreeMap<String, String>,
        #[prost(string, tag = "4")]
        path: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Metadata {
        #[prost(btree_map = "string, message", tag = "1")]
        filter_metadata: BTreeMap<String, Struct>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Struct {
        #[prost(btree_map = "string, message", tag = "1")]
        fields: BTreeMap<String, ProtoValue>,
    }

    /// `google.protobuf.Value`: the members of its `kind` the claims use.
    #[derive(Clone, PartialEq, prost::Message)]
    struct ProtoValue {
        #[prost(string, optional, tag = "3")]
        string_value: Option<String>,
        #[prost(message, optional, tag = "5")]
        struct_value: Option<Struct>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckResponse {
        #[prost(message, optional, tag = "1")]
        status: Option<RpcStatus>,
        #[prost(message, optional, tag = "2")]
        denied_response: Option<DeniedHttpResponse>,
        #[prost(message, optional, tag = "3")]
        ok_response: Option<OkHttpResponse>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct DeniedHttpResponse {
        #[prost(message, optional, tag = "1")]
        status: Option<HttpStatus>,
        #[prost(message, repeated, tag = "2")]
        headers: Vec<HeaderValueOption>,
        #[prost(string, tag = "3")]
        body: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct HttpStatus {
        #[prost(int32, tag = "1")]
        code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct OkHttpResponse {
        #[prost(message, repeated, tag = "2")]
        headers: Vec<HeaderValueOption>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct HeaderValueOption {
        #[prost(message, optional, tag = "1")]
        header: Option<HeaderValue>,
        #[prost(int32, tag = "3")]
        append_action: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct HeaderValue {
        #[prost(string, tag = "1")]
        key: String,
        #[prost(string, tag = "2")]
        value: String,
    }
}
