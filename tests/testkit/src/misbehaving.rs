//! A corpus of services that misbehave, for every callout the filter makes
//! (auth service, JWKS and discovery, token endpoint): each kind is an
//! `http::Action` a scripted `http::Server` answers with.
//!
//! Several fail only after the response has started (headers arrived, then
//! the body never completes): the host then has no reply headers to give,
//! the case that used to abort the VM.

use crate::http::{Action, End};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehavior {
    /// `200` with `content-length: 100`, three bytes of the body, then close.
    CutBody,
    /// `200` and its headers, then silence past the callout timeout.
    HeadersThenStall,
    /// `200`, its headers and part of the body, then a TCP reset.
    ResetMidBody,
    /// `200` announcing a huge body, trickled until past the callout timeout.
    HugeBody,
    /// Bytes that are not HTTP at all.
    Garbage,
    /// A well-formed reply whose status is outside 100-599 or not a number,
    /// with the body a well-behaved service would send.
    Status(&'static str),
}

pub use Misbehavior::*;

/// Every kind, wrong statuses included.
pub const ALL: [Misbehavior; 9] = [
    CutBody,
    HeadersThenStall,
    ResetMidBody,
    HugeBody,
    Garbage,
    Status("600"),
    Status("999"),
    Status("1000"),
    Status("ok"),
];

/// How long past the callout timeout the slow kinds go on.
const PAST_TIMEOUT: Duration = Duration::from_millis(1500);

impl Misbehavior {
    /// The answer, for a callout with this `timeout`; `body` is what a
    /// well-behaved service would answer (a JWKS, a token reply...), used
    /// where the kind sends a body.
    pub fn action(self, timeout: Duration, body: &[u8]) -> Action {
        // Every kind ends its connection; `connection: close` says so up
        // front, so that a host which accepted the reply never pools the
        // connection and sends the next callout down a socket being closed.
        let head = |status: &str, length: usize| {
            format!(
                "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
            )
            .into_bytes()
        };
        let with_start = |mut head: Vec<u8>, n: usize| {
            head.extend_from_slice(body.get(..n.min(body.len())).unwrap_or_default());
            head
        };
        match self {
            CutBody => Action::Raw {
                bytes: with_start(head("200", 100), 3),
                then: End::Close,
            },
            HeadersThenStall => Action::Raw {
                bytes: head("200", body.len().max(1)),
                then: End::Stall(timeout + PAST_TIMEOUT),
            },
            ResetMidBody => Action::Raw {
                bytes: with_start(head("200", body.len().max(2) * 2), body.len() / 2),
                then: End::Reset,
            },
            HugeBody => Action::Trickle {
                head: head("200", 1 << 30),
                chunk: vec![b' '; 16 * 1024],
                every: Duration::from_millis(20),
                during: timeout + PAST_TIMEOUT,
            },
            Garbage => Action::Garbage(b"\x00\x01\x02 not http at all\r\n\r\n".to_vec()),
            Status(status) => Action::Raw {
                bytes: with_start(head(status, body.len()), body.len()),
                then: End::Close,
            },
        }
    }

    pub fn name(self) -> String {
        match self {
            CutBody => "cut body (200, content-length 100, 3 bytes, close)".into(),
            HeadersThenStall => "headers then a stall past the timeout".into(),
            ResetMidBody => "reset mid-body".into(),
            HugeBody => "a huge body that outlasts the timeout".into(),
            Garbage => "garbage that is not HTTP".into(),
            Status(s) => format!("status {s}"),
        }
    }
}

/// Lines of an Envoy log that say a VM failed: a Rust panic, or the host's
/// report of a trap in one of our entry points. None may appear after any
/// misbehaving service.
pub fn vm_failure_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            line.contains("panicked")
                || line.contains("Uncaught RuntimeError")
                || line.contains("unreachable")
                || (line.contains("proxy_on_") && line.contains(" failed"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_failure_lines_of_issue_9_are_recognised() {
        let log = "[info] wasm log ai_auth: configuration loaded\n\
                   [critical] wasm log: panicked at proxy-wasm-0.2.5/src/hostcalls.rs:295:23: unexpected status: 2\n\
                   [error] wasm log: Function: proxy_on_http_call_response failed: Uncaught RuntimeError: unreachable\n\
                   [info] all fine";
        assert_eq!(vm_failure_lines(log).len(), 2);
        assert!(vm_failure_lines("[info] wasm log ai_auth: jwks fetch failed").is_empty());
    }

    #[test]
    fn every_kind_has_an_answer_and_a_name() {
        for kind in ALL {
            let _ = kind.action(Duration::from_millis(500), b"{\"keys\":[]}");
            assert!(!kind.name().is_empty());
        }
    }
}
