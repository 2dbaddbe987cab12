//! A small HTTP/1.1 client and server over std::net, with timeouts on every
//! read and write so no test can hang.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut raw =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n")
            .into_bytes();
    for (k, v) in headers {
        raw.extend_from_slice(k.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(v.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        raw.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    request_raw(port, &raw)
}

/// A chat-completion-shaped POST; panics if the gateway cannot be reached.
pub fn post_json(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = headers.to_vec();
    all.push(("content-type", "application/json"));
    request(
        port,
        "POST",
        path,
        &all,
        br#"{"model":"gpt-4o-mini","messages":[]}"#,
    )
    .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    request(port, "GET", path, headers, b"")
}

/// Sends bytes as they are (for headers that are not UTF-8) and reads one response.
pub fn request_raw(port: u16, raw: &[u8]) -> Result<Response, String> {
    let stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    writer.write_all(raw).map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader)
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line.is_empty() {
        return Err("connection closed".into());
    }
    Ok(String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

fn read_headers(r: &mut impl BufRead) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() > 500 {
            return Err("too many headers".into());
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

fn read_body(
    r: &mut impl BufRead,
    headers: &[(String, String)],
    until_close: bool,
) -> Result<Vec<u8>, String> {
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        for _ in 0..100_000 {
            match read_chunk(r)? {
                Some(chunk) => body.extend(chunk),
                None => return Ok(body),
            }
        }
        return Err("too many chunks".into());
    }
    if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| "bad content-length".to_string())?;
        let mut body = vec![0; len];
        r.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if until_close {
        r.read_to_end(&mut body).map_err(|e| e.to_string())?;
    }
    Ok(body)
}

/// One chunk of a chunked body; `None` after the last (trailers read).
fn read_chunk(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, String> {
    let size_line = read_line(r)?;
    let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
        .map_err(|_| format!("bad chunk size {size_line:?}"))?;
    if size == 0 {
        read_headers(r)?;
        return Ok(None);
    }
    let mut chunk = vec![0; size];
    r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
    read_line(r)?;
    Ok(Some(chunk))
}

/// A response read as it arrives: the head at once, then the chunks of its
/// body one by one (to see that a stream is not held back).
pub struct StreamingResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    pub received: Vec<u8>,
}

impl StreamingResponse {
    /// Sends a request and reads the response's head.
    pub fn open(
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<StreamingResponse, String> {
        let mut raw =
            format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len())
                .into_bytes();
        for (k, v) in headers {
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
        let stream =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
        stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        writer.write_all(&raw).map_err(|e| format!("write: {e}"))?;
        let mut reader = BufReader::new(stream);
        let status_line = read_line(&mut reader)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers = read_headers(&mut reader)?;
        Ok(StreamingResponse {
            status,
            headers,
            reader,
            received: Vec::new(),
        })
    }

    /// Reads chunks until the body so far contains `needle` (each read
    /// bounded by the I/O timeout); `Err` if the body ends first.
    pub fn read_until(&mut self, needle: &str) -> Result<(), String> {
        for _ in 0..10_000 {
            if String::from_utf8_lossy(&self.received).contains(needle) {
                return Ok(());
            }
            match read_chunk(&mut self.reader)? {
                Some(chunk) => self.received.extend(chunk),
                None => return Err(format!("the body ended without {needle:?}")),
            }
        }
        Err("too many chunks".into())
    }

    /// Reads the rest of the body.
    pub fn read_to_end(&mut self) -> Result<(), String> {
        for _ in 0..10_000 {
            match read_chunk(&mut self.reader)? {
                Some(chunk) => self.received.extend(chunk),
                None => return Ok(()),
            }
        }
        Err("too many chunks".into())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

/// A latch a test opens for a server that waits on it (bounded).
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn open(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Waits until the gate is open or `limit` passes; whether it opened.
    pub fn wait(&self, limit: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let guard = lock.lock().unwrap();
        let (guard, _) = cv.wait_timeout_while(guard, limit, |open| !*open).unwrap();
        *guard
    }
}

pub fn read_response(r: &mut impl BufRead) -> Result<Response, String> {
    let status_line = read_line(r)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = read_headers(r)?;
    let body = read_body(r, &headers, true)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A request as a server saw it.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Everything the server received, as text, for "is this secret anywhere" checks.
    pub fn all_text(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.path);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&String::from_utf8_lossy(&self.body));
        s
    }
}

/// What a scripted server does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Wait, then respond.
    Delay(Duration, Box<Action>),
    /// Answer with `transfer-encoding: chunked`, writing each chunk as it
    /// comes with `gap` between them (server-sent events).
    Stream {
        status: u16,
        headers: Vec<(String, String)>,
        chunks: Vec<Vec<u8>>,
        gap: Duration,
    },
    /// Close the connection without answering.
    Close,
    /// Write bytes that are not HTTP, then close.
    Garbage(Vec<u8>),
    /// A chunked response: `first` at once, `rest` once the gate opens (or
    /// after the I/O timeout): a stream a test can watch arrive.
    GatedStream {
        status: u16,
        headers: Vec<(String, String)>,
        first: Vec<u8>,
        gate: Gate,
        rest: Vec<u8>,
    },
    /// Write `bytes` as they are (a status line and headers of our own
    /// making), then end the connection as `then` says. The misbehaving
    /// services of `crate::misbehaving` are made of this and `Trickle`.
    Raw { bytes: Vec<u8>, then: End },
    /// Write `head`, then `chunk` every `every` until `during` has passed
    /// or the peer is gone, then close.
    Trickle {
        head: Vec<u8>,
        chunk: Vec<u8>,
        every: Duration,
        during: Duration,
    },
}

/// How a `Raw` answer ends.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// Close the connection (FIN).
    Close,
    /// Reset the connection (RST: SO_LINGER 0, then close).
    Reset,
    /// Say nothing more for this long, then close.
    Stall(Duration),
}

impl Action {
    pub fn status(status: u16) -> Action {
        Action::Respond {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Action {
        Action::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn with_header(self, name: &str, value: &str) -> Action {
        match self {
            Action::Respond {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.into(), value.into()));
                Action::Respond {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }
}

pub type Handler = Arc<dyn Fn(&Recorded) -> Action + Send + Sync>;

/// A threaded HTTP/1.1 server on 127.0.0.1 with a port the OS picks; it
/// records every request and answers with the handler's action.
pub struct Server {
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Mutex<Handler>>,
    stop: Arc<AtomicBool>,
    /// Request heads received, counted before their bodies are read.
    heads: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(handler: impl Fn(&Recorded) -> Action + Send + Sync + 'static) -> Server {
        Self::start_on(0, handler)
    }

    /// On a given port (0: the OS picks one).
    /// On a given port (0: the OS picks one) of 127.0.0.1.
    pub fn start_on(
        port: u16,
        handler: impl Fn(&Recorded) -> Action + Send + Sync + 'static,
    ) -> Server {
        Self::start_on_addr("127.0.0.1", port, handler)
    }

    /// On a given address and port (the demo services in containers bind 0.0.0.0).
    pub fn start_on_addr(
        addr: &str,
        port: u16,
        handler: impl Fn(&Recorded) -> Action + Send + Sync + 'static,
    ) -> Server {
        let listener =
            TcpListener::bind((addr, port)).unwrap_or_else(|e| panic!("bind {addr}:{port}: {e}"));
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Arc::new(handler)));
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(AtomicUsize::new(0));
        let (reqs, h, st, hd) = (
            requests.clone(),
            handler.clone(),
            stop.clone(),
            heads.clone(),
        );
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, h, hd) = (reqs.clone(), h.clone(), hd.clone());
                thread::spawn(move || serve_connection(conn, reqs, h, hd));
            }
        });
        Server {
            port,
            requests,
            handler,
            stop,
            heads,
        }
    }

    /// An upstream that echoes what it received as JSON, with status 200.
    pub fn echo() -> Server {
        Server::start(|r| {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            Action::json(
                200,
                &serde_json::json!({"method": r.method, "path": r.path, "headers": headers}),
            )
        })
    }

    /// An upstream that records what it received and answers 200 without
    /// echoing anything back (a provider never returns its key).
    pub fn recorder() -> Server {
        Server::start(|_| {
            Action::json(
                200,
                &serde_json::json!({"object": "chat.completion", "choices": []}),
            )
        })
    }

    pub fn set_handler(&self, handler: impl Fn(&Recorded) -> Action + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.requests.lock().unwrap().last().cloned()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// How many request heads arrived, counted as soon as a head is read
    /// and before its body: a request whose body is still on its way counts.
    pub fn heads_seen(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_connection(
    conn: TcpStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Mutex<Handler>>,
    heads: Arc<AtomicUsize>,
) {
    conn.set_read_timeout(Some(Duration::from_secs(60))).ok();
    conn.set_write_timeout(Some(IO_TIMEOUT)).ok();
    conn.set_nodelay(true).ok();
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let Ok(line) = read_line(&mut reader) else {
            return;
        };
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let Ok(headers) = read_headers(&mut reader) else {
            return;
        };
        heads.fetch_add(1, Ordering::SeqCst);
        let Ok(body) = read_body(&mut reader, &headers, false) else {
            return;
        };
        let recorded = Recorded {
            method: method.into(),
            path: path.into(),
            headers,
            body,
        };
        requests.lock().unwrap().push(recorded.clone());
        let h = handler.lock().unwrap().clone();
        let mut action = h(&recorded);
        loop {
            match action {
                Action::Delay(d, next) => {
                    thread::sleep(d);
                    action = *next;
                }
                Action::Close => return,
                Action::Garbage(bytes) => {
                    let _ = writer.write_all(&bytes);
                    return;
                }
                Action::Stream {
                    status,
                    headers,
                    chunks,
                    gap,
                } => {
                    if write_stream(&mut writer, status, &headers, &chunks, gap).is_err() {
                        return;
                    }
                    break;
                }
                Action::Raw { bytes, then } => {
                    let _ = writer.write_all(&bytes);
                    let _ = writer.flush();
                    match then {
                        End::Close => {}
                        End::Reset => reset(&writer),
                        End::Stall(d) => thread::sleep(d),
                    }
                    return;
                }
                Action::Trickle {
                    head,
                    chunk,
                    every,
                    during,
                } => {
                    let until = std::time::Instant::now() + during;
                    if writer.write_all(&head).is_err() {
                        return;
                    }
                    while std::time::Instant::now() < until {
                        if writer.write_all(&chunk).is_err() {
                            return;
                        }
                        thread::sleep(every);
                    }
                    return;
                }
                Action::GatedStream {
                    status,
                    headers,
                    first,
                    gate,
                    rest,
                } => {
                    let sent = write_stream_head(&mut writer, status, &headers)
                        .and_then(|_| write_chunk(&mut writer, &first))
                        .and_then(|_| {
                            gate.wait(IO_TIMEOUT);
                            write_chunk(&mut writer, &rest)
                        })
                        .and_then(|_| writer.write_all(b"0\r\n\r\n"));
                    if sent.is_err() {
                        return;
                    }
                    break;
                }
                Action::Respond {
                    status,
                    headers,
                    body,
                } => {
                    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
                    for (k, v) in &headers {
                        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                    }
                    out.extend_from_slice(
                        format!("content-length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    out.extend_from_slice(&body);
                    if writer.write_all(&out).is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

fn write_stream(
    writer: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    chunks: &[Vec<u8>],
    gap: Duration,
) -> std::io::Result<()> {
    write_stream_head(writer, status, headers)?;
    for (i, chunk) in chunks.iter().filter(|c| !c.is_empty()).enumerate() {
        if i > 0 {
            thread::sleep(gap);
        }
        write_chunk(writer, chunk)?;
    }
    writer.write_all(b"0\r\n\r\n")
}

fn write_stream_head(
    writer: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("transfer-encoding: chunked\r\n\r\n");
    writer.write_all(head.as_bytes())
}

/// One chunk of a chunked body, sent at once.
fn write_chunk(writer: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    writer.write_all(&out)?;
    writer.flush()
}

/// Makes the coming close a TCP reset rather than an orderly FIN.
fn reset(conn: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a live, correctly sized option.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
