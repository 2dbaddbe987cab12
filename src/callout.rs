//! Host-neutral HTTP callouts: what the core asks the host to send, and the
//! reply as the core sees it.

use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutRequest {
    /// Envoy cluster to send it to.
    pub cluster: String,
    /// Pseudo-headers first (`:method`, `:path`, `:authority`), then the rest.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// Where a unary gRPC call goes and how: the same for every call of one
/// configuration, so built once when it is loaded (not per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    /// The Envoy cluster, for logs.
    pub cluster: String,
    /// What the host takes as the call's target: a serialized
    /// `envoy.config.core.v3.GrpcService` (cluster and `:authority`).
    pub upstream: Vec<u8>,
    pub service: String,
    pub method: String,
    pub initial_metadata: Vec<(String, String)>,
    pub timeout: Duration,
}

/// A unary gRPC call, as the proxy-wasm host sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    pub target: Arc<GrpcTarget>,
    /// The serialized request message.
    pub message: Vec<u8>,
}

/// How a gRPC call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcReply {
    /// The reply message (status OK).
    Message(Vec<u8>),
    /// A non-OK status: timeout, unavailable, unknown cluster, an error
    /// from the service... `message` is remote text: quote it to log it.
    Failed { code: u32, message: String },
}

/// A reply; `status` is `None` when there was no valid HTTP answer
/// (timeout, reset, connection refused, a reply that was not HTTP, a status
/// outside 100-599 or not a number): every caller handles that as a failed
/// call, so no invalid status can reach a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalloutResponse {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CalloutResponse {
    /// From the raw header list the host read: `:status` becomes `status`.
    pub fn from_headers(headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        let mut status = None;
        let mut rest = Vec::with_capacity(headers.len());
        for (k, v) in headers {
            if k == ":status" {
                status = parse_status(&v);
            } else if !k.starts_with(':') {
                rest.push((k.to_ascii_lowercase(), v));
            }
        }
        CalloutResponse {
            status,
            headers: rest,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP status as a reply carries it: three digits, 100 to 599. Anything
/// else (`600`, `1000`, `+200`, `ok`) is `None`, no valid answer.
pub fn parse_status(text: &str) -> Option<u16> {
    let text = text.trim();
    if text.len() != 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|s| (100..=599).contains(s))
}

/// For the log: a `:status` the host read that is no HTTP status (the reply
/// is then handled as a failed call), quoted as remote text is.
pub fn invalid_status_note(raw: Option<&str>) -> Option<String> {
    let raw = raw?;
    parse_status(raw).is_none().then(|| {
        format!(
            "reply status {} is not an HTTP status (100-599); handled as a failed call",
            crate::vocab::quote(raw)
        )
    })
}

/// Key-value storage shared by every VM of the plugin (proxy-wasm shared data).
pub trait SharedStore {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: &[u8]);
    /// A value and its version; `None` when the key does not exist.
    fn get_versioned(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Stores `value` only over version `version` (compare-and-swap).
    /// Creating a key is never protected (proxy-wasm has no "create if
    /// absent"): use it on keys created beforehand.
    fn set_versioned(&self, key: &str, value: &[u8], version: u32) -> StoreWrite;

    /// Creates `key` with `value` unless it exists (first writer wins);
    /// returns whether this call created it. proxy-wasm has no "create if
    /// absent", but the host creates a missing key whatever version a write
    /// names and refuses a write to an existing key at another version: so
    /// this writes at a version no live key holds in practice
    /// ([`CREATE_ONLY`]: the host's counter, one per write across the whole
    /// plugin, would have to stop there on this very key).
    fn create(&self, key: &str, value: &[u8]) -> bool {
        self.set_versioned(key, value, CREATE_ONLY) == StoreWrite::Written
    }
}

/// The version [`SharedStore::create`] writes at.
pub const CREATE_ONLY: u32 = u32::MAX;

/// The result of a compare-and-swap write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreWrite {
    Written,
    /// Another VM wrote the key since it was read.
    Conflict,
    /// The host refused the write.
    Failed,
}

/// An in-memory store for native tests, with versions as the host keeps them.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryStore(
    pub std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
    std::cell::Cell<u32>,
);

#[cfg(test)]
impl MemoryStore {
    fn next_version(&self) -> u32 {
        self.1.set(self.1.get() + 1);
        self.1.get()
    }
}

#[cfg(test)]
impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.borrow().get(key).map(|(v, _)| v.clone())
    }
    fn set(&self, key: &str, value: &[u8]) {
        let version = self.next_version();
        self.0
            .borrow_mut()
            .insert(key.to_string(), (value.to_vec(), version));
    }
    fn get_versioned(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.borrow().get(key).cloned()
    }
    fn set_versioned(&self, key: &str, value: &[u8], version: u32) -> StoreWrite {
        let current = self.0.borrow().get(key).map(|(_, v)| *v);
        match current {
            Some(v) if v != version => StoreWrite::Conflict,
            _ => {
                self.set(key, value);
                StoreWrite::Written
            }
        }
    }
}

/// A store where another VM acts between our read and our
/// compare-and-swap write: `race` runs on the store (with the key and the
/// version we write at) before each such write.
#[cfg(test)]
pub struct RacingStore<F: Fn(&MemoryStore, &str, u32)> {
    pub inner: MemoryStore,
    pub race: F,
}

#[cfg(test)]
impl<F: Fn(&MemoryStore, &str, u32)> SharedStore for RacingStore<F> {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) {
        self.inner.set(key, value)
    }
    fn get_versioned(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.get_versioned(key)
    }
    fn set_versioned(&self, key: &str, value: &[u8], version: u32) -> StoreWrite {
        (self.race)(&self.inner, key, version);
        self.inner.set_versioned(key, value, version)
    }
}

/// The race of two VMs over one slot: another VM writes `value` between our
/// read and our write (unless the slot already holds it). `prepared`: the
/// slot exists, empty, as `prepare_slots` leaves it; otherwise it is missing.
#[cfg(test)]
pub fn another_vm_writes(
    value: Vec<u8>,
    key: &str,
    prepared: bool,
) -> RacingStore<impl Fn(&MemoryStore, &str, u32)> {
    let store = RacingStore {
        inner: MemoryStore::default(),
        race: move |inner: &MemoryStore, key: &str, _| {
            if inner.get(key).as_deref() != Some(value.as_slice()) {
                inner.set(key, &value);
            }
        },
    };
    if prepared {
        store.inner.set(key, b"");
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_taken_from_pseudo_header() {
        let r = CalloutResponse::from_headers(
            vec![
                (":status".into(), "403".into()),
                ("X-Reason".into(), "no".into()),
            ],
            b"body".to_vec(),
        );
        assert_eq!(r.status, Some(403));
        assert_eq!(r.header("x-reason"), Some("no"));
        let none = CalloutResponse::from_headers(vec![], vec![]);
        assert_eq!(none.status, None);
    }

    #[test]
    fn only_statuses_100_to_599_are_answers() {
        for valid in ["100", "200", " 404 ", "599"] {
            assert!(parse_status(valid).is_some(), "{valid}");
        }
        for invalid in [
            "600", "999", "1000", "099", "0", "20", "+200", "-200", "ok", "", "2OO", "65536",
        ] {
            assert_eq!(parse_status(invalid), None, "{invalid}");
            let reply = CalloutResponse::from_headers(
                vec![(":status".into(), invalid.into())],
                b"{}".to_vec(),
            );
            assert_eq!(reply.status, None, "{invalid}: handled as a failed call");
        }
    }

    #[test]
    fn an_invalid_status_is_logged_short_and_escaped() {
        assert_eq!(invalid_status_note(None), None);
        assert_eq!(invalid_status_note(Some("204")), None);
        let note = invalid_status_note(Some("1000")).unwrap();
        assert!(note.contains("\"1000\""), "{note}");
        let hostile = format!("9{}", "\nforged log line".repeat(1000));
        let note = invalid_status_note(Some(&hostile)).unwrap();
        assert!(!note.contains('\n') && note.len() < 250, "{note}");
    }
}
