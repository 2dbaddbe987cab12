//! An owned snapshot of the request headers, built once by the host adapter.
//!
//! Header names are lowercase (HTTP/2 and Envoy's header map guarantee that);
//! values are kept as bytes turned into text losslessly where they are UTF-8
//! and with U+FFFD where they are not, so a hostile value can never abort the
//! VM and never compares equal to a configured value by accident.

/// The pseudo-headers a view keeps apart from the others.
const PSEUDO: [&str; 4] = [":authority", ":method", ":path", ":scheme"];

/// One request as the core sees it.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    method: String,
    path: String,
    authority: String,
    scheme: String,
    /// The pseudo-headers above in the order the request had them (Envoy's
    /// header map keeps them first, in arrival order; a gRPC check with
    /// `encode_raw_headers` lists them in that order). A fixed array: no
    /// allocation per request for what only that check reads.
    pseudo_order: [Option<&'static str>; 4],
    headers: Vec<(String, String)>,
    /// The Envoy cluster the route chose, when the host provided it.
    cluster: Option<String>,
    /// The Envoy route name, when the host provided it.
    route_name: Option<String>,
    /// Whether a body follows the headers.
    has_body: bool,
    /// Hex SHA-256 of the downstream TLS client certificate, when the host
    /// was asked for it and the connection presented one.
    peer_certificate_sha256: Option<String>,
    /// Addresses and protocol, when the host was asked for them (gRPC checks).
    connection: crate::ext_authz::grpc::Connection,
}

impl RequestView {
    /// Builds a view from the header list, pseudo-headers included.
    pub fn new(headers: Vec<(String, String)>) -> Self {
        let mut view = RequestView::default();
        for (name, value) in headers {
            // Envoy hands names in lowercase already; only fold when needed.
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                name.to_ascii_lowercase()
            } else {
                name
            };
            let slot = match name.as_str() {
                ":method" => &mut view.method,
                ":path" => &mut view.path,
                ":authority" => &mut view.authority,
                ":scheme" => &mut view.scheme,
                _ => {
                    view.headers.push((name, value));
                    continue;
                }
            };
            *slot = value;
            if let Some(p) = PSEUDO.into_iter().find(|p| *p == name) {
                if !view.pseudo_order.contains(&Some(p)) {
                    if let Some(free) = view.pseudo_order.iter_mut().find(|s| s.is_none()) {
                        *free = Some(p);
                    }
                }
            }
        }
        view
    }

    /// Same as [`RequestView::new`] from raw bytes: invalid UTF-8 becomes U+FFFD.
    pub fn from_bytes(headers: Vec<(String, Vec<u8>)>) -> Self {
        Self::new(
            headers
                .into_iter()
                .map(|(k, v)| match String::from_utf8(v) {
                    Ok(s) => (k, s),
                    Err(e) => (k, String::from_utf8_lossy(e.as_bytes()).into_owned()),
                })
                .collect(),
        )
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The full `:path`, query string included.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The path without its query string (and without a fragment).
    pub fn path_without_query(&self) -> &str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        self.path.get(..end).unwrap_or(&self.path)
    }

    /// The raw query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        let start = self.path.find('?')?;
        let rest = self.path.get(start + 1..)?;
        Some(rest.split('#').next().unwrap_or(rest))
    }

    /// Values of a query parameter (not percent-decoded: tokens are base64url).
    pub fn query_params<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(move |pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then_some(v)
            })
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_values(name).next()
    }

    /// Every value of a header, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `:method`, `:path`, `:authority` and `:scheme` with their values
    /// (empty when absent), in the request's order, then any it lacked.
    pub fn pseudo_headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let missing = PSEUDO
            .into_iter()
            .filter(|p| !self.pseudo_order.contains(&Some(*p)));
        self.pseudo_order
            .iter()
            .flatten()
            .copied()
            .chain(missing)
            .map(|p| match p {
                ":method" => (p, self.method.as_str()),
                ":path" => (p, self.path.as_str()),
                ":authority" => (p, self.authority.as_str()),
                _ => (p, self.scheme.as_str()),
            })
    }

    /// All regular headers (no pseudo-headers), names lowercase.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Values of a cookie across every `Cookie` header.
    pub fn cookies<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_values("cookie")
            .flat_map(|h| h.split(';'))
            .filter_map(move |pair| {
                let (k, v) = pair.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            })
    }

    pub fn set_route_info(&mut self, cluster: Option<String>, route_name: Option<String>) {
        self.cluster = cluster;
        self.route_name = route_name;
    }

    pub fn set_has_body(&mut self, has_body: bool) {
        self.has_body = has_body;
    }

    pub fn has_body(&self) -> bool {
        self.has_body
    }

    pub fn set_peer_certificate_sha256(&mut self, digest: Option<String>) {
        self.peer_certificate_sha256 = digest.filter(|d| !d.is_empty());
    }

    pub fn set_connection(&mut self, connection: crate::ext_authz::grpc::Connection) {
        self.connection = connection;
    }

    pub fn set_body_received(&mut self, bytes: usize) {
        self.connection.body_received = bytes;
    }

    pub fn connection(&self) -> &crate::ext_authz::grpc::Connection {
        &self.connection
    }

    pub fn peer_certificate_sha256(&self) -> Option<&str> {
        self.peer_certificate_sha256.as_deref()
    }

    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    pub fn route_name(&self) -> Option<&str> {
        self.route_name.as_deref()
    }

    /// Applies header edits, so a later stage sees the request as the
    /// earlier stages left it.
    pub fn apply(&mut self, ops: &[crate::response::HeaderOp]) {
        use crate::response::HeaderOp;
        for op in ops {
            match op {
                HeaderOp::SetSecret(name, value) => {
                    self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
                    self.headers
                        .push((name.to_ascii_lowercase(), value.expose().to_string()));
                }
                HeaderOp::Set(name, value) => match name.as_str() {
                    ":path" => self.path = value.clone(),
                    ":method" => self.method = value.clone(),
                    ":authority" => self.authority = value.clone(),
                    _ => {
                        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
                        self.headers
                            .push((name.to_ascii_lowercase(), value.clone()));
                    }
                },
                HeaderOp::Append(name, value) => self
                    .headers
                    .push((name.to_ascii_lowercase(), value.clone())),
                HeaderOp::Remove(name) => {
                    self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name))
                }
            }
        }
    }
}

/// `%XX` escapes decoded, for comparing names: `access%5Ftoken` is the
/// parameter `access_token` to whatever decodes the query upstream.
fn percent_decoded(text: &str) -> std::borrow::Cow<'_, str> {
    match crate::vocab::hex::percent_decode(text) {
        std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(text),
        std::borrow::Cow::Owned(bytes) => {
            std::borrow::Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}

/// Rebuilds `path` with every query parameter named in `names` removed,
/// however the client escaped its name. Returns `None` when nothing was removed.
pub fn path_without_params(path: &str, names: &[&str]) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let drop = names.contains(&percent_decoded(key).as_ref());
            removed |= drop;
            !drop
        })
        .collect();
    if !removed {
        return None;
    }
    let mut out = base.to_string();
    let kept: Vec<&str> = kept.into_iter().filter(|p| !p.is_empty()).collect();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// Percent-encodes what may not stand as it is in a query name or value.
fn query_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$'()*+,;:@/?".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path` with the query edits of an `ext_authz` answer, as Envoy applies
/// them (`QueryParamsMulti`): the query read as a map sorted by name (the
/// values of one name in order), each of `set` replacing every value of its
/// name, then `remove`, then written back as `name=value` pairs. Names
/// compare decoded; what is set is escaped (Envoy writes it raw, which a
/// space or `&` would break).
pub fn path_with_query_edits(path: &str, set: &[(String, String)], remove: &[String]) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.entry(k.to_string()).or_default().push(v.to_string());
    }
    for (k, v) in set {
        params.retain(|name, _| percent_decoded(name) != k.as_str());
        params.insert(query_escaped(k), vec![query_escaped(v)]);
    }
    params.retain(|name, _| !remove.iter().any(|r| percent_decoded(name) == r.as_str()));
    let mut out = base.to_string();
    let mut delimiter = '?';
    for (name, values) in &params {
        for value in values {
            out.push(delimiter);
            out.push_str(name);
            out.push('=');
            out.push_str(value);
            delimiter = '&';
        }
    }
    out
}

/// Rebuilds a `Cookie` header value without the named cookies.
/// Returns `None` when nothing was removed; `Some("")` when nothing is left.
pub fn cookie_header_without(value: &str, names: &[&str]) -> Option<String> {
    let mut removed = false;
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k).trim();
            let drop = names.contains(&key);
            removed |= drop;
            !drop && !pair.is_empty()
        })
        .collect();
    removed.then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(path: &str, headers: &[(&str, &str)]) -> RequestView {
        let mut all = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), "gw.local".to_string()),
        ];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RequestView::new(all)
    }

    #[test]
    fn splits_path_and_query() {
        let v = view("/v1/chat?access_token=abc&x=1#frag", &[]);
        assert_eq!(v.path_without_query(), "/v1/chat");
        assert_eq!(v.query(), Some("access_token=abc&x=1"));
        assert_eq!(v.query_params("access_token").collect::<Vec<_>>(), ["abc"]);
        assert_eq!(v.query_params("missing").count(), 0);
    }

    #[test]
    fn headers_are_case_insensitive_and_multi_valued() {
        let v = view("/", &[("Authorization", "a"), ("authorization", "b")]);
        assert_eq!(v.header("AUTHORIZATION"), Some("a"));
        assert_eq!(
            v.header_values("authorization").collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        let v = RequestView::from_bytes(vec![("x-bin".into(), vec![0xff, b'a'])]);
        assert_eq!(v.header("x-bin"), Some("\u{fffd}a"));
    }

    #[test]
    fn cookies_are_found_across_headers() {
        let v = view("/", &[("cookie", "a=1; jwt=tok"), ("cookie", "b=2")]);
        assert_eq!(v.cookies("jwt").collect::<Vec<_>>(), ["tok"]);
        assert_eq!(v.cookies("b").collect::<Vec<_>>(), ["2"]);
    }

    #[test]
    fn pseudo_headers_keep_the_requests_order() {
        let v = RequestView::new(vec![
            (":authority".into(), "h".into()),
            ("x-a".into(), "1".into()),
            (":path".into(), "/p".into()),
            (":method".into(), "GET".into()),
        ]);
        assert_eq!(
            v.pseudo_headers().collect::<Vec<_>>(),
            [
                (":authority", "h"),
                (":path", "/p"),
                (":method", "GET"),
                (":scheme", "")
            ]
        );
    }

    #[test]
    fn applies_header_ops() {
        use crate::response::HeaderOp;
        let mut v = view(
            "/a?x=1",
            &[
                ("authorization", "a"),
                ("Authorization", "b"),
                ("x-keep", "k"),
            ],
        );
        v.apply(&[
            HeaderOp::remove("authorization"),
            HeaderOp::set(":path", "/a"),
            HeaderOp::set("x-keep", "k2"),
            HeaderOp::Append("x-new".into(), "n".into()),
        ]);
        assert_eq!(v.header("authorization"), None);
        assert_eq!(v.path(), "/a");
        assert_eq!(v.header_values("x-keep").collect::<Vec<_>>(), ["k2"]);
        assert_eq!(v.header("x-new"), Some("n"));
    }

    #[test]
    fn removes_query_params() {
        assert_eq!(
            path_without_params("/a?access_token=x&b=1", &["access_token"]).as_deref(),
            Some("/a?b=1")
        );
        assert_eq!(
            path_without_params("/a?access_token=x", &["access_token"]).as_deref(),
            Some("/a")
        );
        assert_eq!(path_without_params("/a?b=1", &["access_token"]), None);
        assert_eq!(
            path_without_params(
                "/a?access%5Ftoken=x&b=%41&%61ccess_token",
                &["access_token"]
            )
            .as_deref(),
            Some("/a?b=%41"),
            "an escaped name is the same parameter upstream"
        );
        assert_eq!(path_without_params("/a", &["access_token"]), None);
    }

    #[test]
    fn removes_cookies() {
        assert_eq!(
            cookie_header_without("a=1; jwt=t; b=2", &["jwt"]).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(
            cookie_header_without("jwt=t", &["jwt"]).as_deref(),
            Some("")
        );
        assert_eq!(cookie_header_without("a=1", &["jwt"]), None);
    }
}
