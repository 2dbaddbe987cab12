//! A small closed-loop HTTP/1.1 load generator for the benchmark: N
//! keep-alive connections, each sending the same request and waiting for
//! its response before sending the next, driven by a `poll(2)` loop on one
//! thread (or a few).
//!
//! Cheap per request so that, on a small machine, the proxy stays the
//! bottleneck: no thread switch per request, the request bytes are built
//! once (unless a [`RequestMaker`] makes each one, as DPoP proofs need), each connection reads into one reused buffer, and responses are
//! parsed in place (status line, `Content-Length`, `Connection: close`)
//! without allocating. Every connection's wait for a response has a
//! timeout; an I/O or protocol failure ends that connection and is
//! reported, never hidden.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Makes the bytes of each request anew (a fresh DPoP proof per request):
/// called on the load generator's thread, so its cost shows in the
/// client's CPU, not the proxy's.
#[derive(Clone)]
pub struct RequestMaker(pub Arc<dyn Fn() -> Vec<u8> + Send + Sync>);

impl std::fmt::Debug for RequestMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestMaker(..)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub path: String,
    /// Sent after `host`, in this order.
    pub headers: Vec<(String, String)>,
    /// A request body: sent as a POST with its `content-length`; empty: a GET.
    pub body: Vec<u8>,
    pub connections: usize,
    /// Poll loops (threads) the connections are spread over.
    pub threads: usize,
    /// Load before the measured window (connections open, caches warm).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Limit of every connect and of every wait for a response.
    pub io_timeout: Duration,
    /// When set, each request is made by it instead of `request_bytes()`.
    pub request_maker: Option<RequestMaker>,
}

impl Config {
    pub fn new(port: u16, path: &str) -> Config {
        Config {
            port,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            connections: 16,
            threads: 1,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(3),
            io_timeout: Duration::from_secs(5),
            request_maker: None,
        }
    }

    /// The raw request every connection sends: a GET, or a POST of `body`.
    pub fn request_bytes(&self) -> Vec<u8> {
        let method = if self.body.is_empty() { "GET" } else { "POST" };
        let mut raw = format!(
            "{method} {} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n",
            self.path, self.port
        )
        .into_bytes();
        for (k, v) in &self.headers {
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(v.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() {
            raw.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&self.body);
        raw
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Responses completed inside the measured window (2xx and not).
    pub requests: u64,
    /// Non-2xx responses inside the measured window.
    pub errors: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Responses over the whole run, warm-up included.
    pub total_requests: u64,
    /// Non-2xx responses over the whole run, warm-up included.
    pub total_errors: u64,
    /// The status of one non-2xx response, if there was any.
    pub sample_error_status: Option<u16>,
    /// I/O and protocol failures (connect, timeout, closed, unparsable
    /// response), one per connection that ended with one.
    pub failures: Vec<String>,
}

impl Report {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Every response of the run was a 2xx and no connection failed.
    pub fn is_clean(&self) -> bool {
        self.total_errors == 0 && self.failures.is_empty() && self.total_requests > 0
    }
}

/// Counters of one poll loop, on a cache line of their own.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    last_non_2xx_status: AtomicU64,
}

/// Runs the load: warm-up, then the measured window. Every request sent is
/// answered (or failed) before this returns.
pub fn run(cfg: &Config) -> Report {
    run_measured(cfg, || {})
}

/// Like [`run`], calling `at_window_edge` right before the measured window
/// opens and right after it closes (to sample, for example, the proxy's CPU
/// time over exactly the window).
pub fn run_measured(cfg: &Config, mut at_window_edge: impl FnMut()) -> Report {
    let fixed: Arc<[u8]> = cfg.request_bytes().into();
    let maker = cfg.request_maker.clone();
    let request: Arc<dyn Fn() -> Arc<[u8]> + Send + Sync> = match maker {
        Some(RequestMaker(make)) => Arc::new(move || make().into()),
        None => Arc::new(move || fixed.clone()),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], cfg.port));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let connections = cfg.connections.max(1);
    let threads = cfg.threads.clamp(1, connections);
    let slots: Arc<[Slot]> = (0..threads).map(|_| Slot::default()).collect();
    let mut handles = Vec::new();
    for t in 0..threads {
        // Connections t, t + threads, t + 2 * threads, ...
        let share = (t..connections).step_by(threads).count();
        let (request, stop, failed, slots) = (
            request.clone(),
            stop.clone(),
            failures.clone(),
            slots.clone(),
        );
        let timeout = cfg.io_timeout;
        let spawned = thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || {
                if let Some(slot) = slots.get(t) {
                    let errors = poll_loop(addr, share, timeout, &*request, slot, &stop);
                    if let Ok(mut f) = failed.lock() {
                        f.extend(errors.into_iter().map(|e| format!("loop {t}: {e}")));
                    }
                }
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                if let Ok(mut f) = failures.lock() {
                    f.push(format!("cannot start thread {t}: {e}"));
                }
            }
        }
    }
    let sum = |slots: &[Slot]| {
        slots.iter().fold((0u64, 0u64), |(ok, bad), s| {
            (
                ok + s.ok.load(Ordering::Relaxed),
                bad + s.non_2xx.load(Ordering::Relaxed),
            )
        })
    };

    thread::sleep(cfg.warmup);
    at_window_edge();
    let (ok0, bad0) = sum(&slots);
    let t0 = Instant::now();
    thread::sleep(cfg.duration);
    let (ok1, bad1) = sum(&slots);
    let elapsed = t0.elapsed();
    at_window_edge();

    stop.store(true, Ordering::Relaxed);
    for h in handles {
        if h.join().is_err() {
            if let Ok(mut f) = failures.lock() {
                f.push("a load generator thread panicked".into());
            }
        }
    }
    let (ok, bad) = sum(&slots);
    let sample_error_status = slots
        .iter()
        .map(|s| s.last_non_2xx_status.load(Ordering::Relaxed))
        .find(|&s| s != 0)
        .map(|s| s as u16);
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    Report {
        requests: (ok1 + bad1) - (ok0 + bad0),
        errors: bad1 - bad0,
        elapsed,
        total_requests: ok + bad,
        total_errors: bad,
        sample_error_status,
        failures,
    }
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// One keep-alive connection with at most one request in flight.
struct Conn {
    stream: TcpStream,
    reader: ResponseReader,
    /// The request in flight.
    request: Arc<[u8]>,
    /// Bytes of the current request already written; `None`: nothing in flight.
    written: Option<usize>,
    sent_at: Instant,
}

impl Conn {
    fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, String> {
        Ok(Conn {
            stream: connect(addr, timeout)?,
            reader: ResponseReader::new(),
            request: Arc::from(Vec::new()),
            written: None,
            sent_at: Instant::now(),
        })
    }

    /// Starts a request and writes what the socket takes now.
    fn send(&mut self, request: Arc<[u8]>) -> Result<(), String> {
        self.request = request;
        self.written = Some(0);
        self.sent_at = Instant::now();
        self.flush()
    }

    fn flush(&mut self) -> Result<(), String> {
        while let Some(done) = self.written.filter(|&w| w < self.request.len()) {
            match self
                .stream
                .write(self.request.get(done..).unwrap_or_default())
            {
                Ok(0) => return Err("write: connection closed".into()),
                Ok(n) => self.written = Some(done + n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    fn wants_write(&self) -> bool {
        self.written.is_some_and(|w| w < self.request.len())
    }
}

/// Drives `count` connections until `stop`, then until every request in
/// flight is answered. Returns the failures.
fn poll_loop(
    addr: SocketAddr,
    count: usize,
    timeout: Duration,
    request: &(dyn Fn() -> Arc<[u8]> + Send + Sync),
    slot: &Slot,
    stop: &AtomicBool,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut conns: Vec<Conn> = Vec::with_capacity(count);
    for i in 0..count {
        match Conn::open(addr, timeout).and_then(|mut c| c.send(request()).map(|()| c)) {
            Ok(c) => conns.push(c),
            Err(e) => failures.push(format!("connection {i}: {e}")),
        }
    }
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(count);
    let (mut ok, mut non_2xx) = (0u64, 0u64);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            conns.retain(|c| c.written.is_some());
        }
        if conns.is_empty() {
            return failures;
        }
        fds.clear();
        fds.extend(conns.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLIN | if c.wants_write() { libc::POLLOUT } else { 0 },
            revents: 0,
        }));
        // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()`
        // pollfd structs for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                failures.push(format!("poll: {e}"));
                return failures;
            }
            continue;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < conns.len() {
            let revents = fds.get(i).map_or(0, |f| f.revents);
            let result = match conns.get_mut(i) {
                Some(c) if revents != 0 => {
                    let mut result = c.flush().map(|()| None);
                    if result.is_ok() && revents & !libc::POLLOUT != 0 {
                        result = c.reader.read_available(&mut c.stream);
                    }
                    result
                }
                Some(c) if now.duration_since(c.sent_at) > timeout => {
                    Err(format!("no response within {timeout:?}"))
                }
                _ => Ok(None),
            };
            match result {
                Ok(None) => i += 1,
                Ok(Some(head)) => {
                    if (200..300).contains(&head.status) {
                        ok += 1;
                        slot.ok.store(ok, Ordering::Relaxed);
                    } else {
                        non_2xx += 1;
                        slot.last_non_2xx_status
                            .store(u64::from(head.status), Ordering::Relaxed);
                        slot.non_2xx.store(non_2xx, Ordering::Relaxed);
                    }
                    let next = if head.close {
                        Conn::open(addr, timeout).map(|fresh| {
                            if let Some(old) = conns.get_mut(i) {
                                *old = fresh;
                            }
                        })
                    } else {
                        Ok(())
                    };
                    let sent = match (next, conns.get_mut(i)) {
                        (Ok(()), Some(c)) if !stop.load(Ordering::Relaxed) => c.send(request()),
                        (Ok(()), Some(c)) => {
                            c.written = None;
                            Ok(())
                        }
                        (Ok(()), None) => Ok(()),
                        (Err(e), _) => Err(e),
                    };
                    match sent {
                        Ok(()) => i += 1,
                        Err(e) => {
                            failures.push(e);
                            conns.swap_remove(i);
                            fds.swap_remove(i);
                        }
                    }
                }
                Err(e) => {
                    failures.push(e);
                    conns.swap_remove(i);
                    fds.swap_remove(i);
                }
            }
        }
    }
}

/// What the load generator needs of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: usize,
    /// `Connection: close`: the server ends the connection after this response.
    pub close: bool,
}

/// Reads `Content-Length` framed responses from a stream into one buffer,
/// blocking or not.
pub struct ResponseReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The response whose body is being skipped, and how much of it is left.
    pending: Option<(Head, usize)>,
}

const BUF_SIZE: usize = 64 * 1024;

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    pub fn new() -> Self {
        ResponseReader {
            buf: vec![0; BUF_SIZE],
            start: 0,
            end: 0,
            pending: None,
        }
    }

    /// One read from the stream into the buffer; `Ok(false)`: it would block.
    fn fill(&mut self, stream: &mut impl Read) -> Result<bool, String> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(format!("response head larger than {BUF_SIZE} bytes"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let free = self.buf.get_mut(self.end..).unwrap_or_default();
        loop {
            return match stream.read(free) {
                Ok(0) => Err("connection closed by the server".into()),
                Ok(n) => {
                    self.end += n;
                    Ok(true)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(format!("read: {e}")),
            };
        }
    }

    /// The next whole response in the buffer, if there is one; consumes it.
    fn take_response(&mut self) -> Result<Option<Head>, String> {
        loop {
            if let Some((head, left)) = self.pending {
                let take = (self.end - self.start).min(left);
                self.start += take;
                if take < left {
                    self.pending = Some((head, left - take));
                    return Ok(None);
                }
                self.pending = None;
                return Ok(Some(head));
            }
            let buffered = self.buf.get(self.start..self.end).unwrap_or_default();
            let Some(head_len) = find_head_end(buffered) else {
                return Ok(None);
            };
            let head = parse_head(buffered.get(..head_len).unwrap_or_default())?;
            self.start += head_len;
            self.pending = Some((head, head.content_length));
        }
    }

    /// Reads what a non-blocking stream has; returns a response once one is whole.
    pub fn read_available(&mut self, stream: &mut impl Read) -> Result<Option<Head>, String> {
        loop {
            if let Some(head) = self.take_response()? {
                return Ok(Some(head));
            }
            if !self.fill(stream)? {
                return Ok(None);
            }
        }
    }

    /// Reads one whole response (head and body) from a blocking stream.
    pub fn read(&mut self, stream: &mut impl Read) -> Result<Head, String> {
        loop {
            if let Some(head) = self.take_response()? {
                return Ok(head);
            }
            if !self.fill(stream)? {
                return Err("read: would block".into());
            }
        }
    }
}

/// Length of the head including its terminating blank line.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let show = || String::from_utf8_lossy(head.get(..head.len().min(200)).unwrap_or_default());
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', a, b, c, ..]
            if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(format!("bad status line in {:?}", show())),
    };
    let mut head_out = Head {
        status,
        content_length: 0,
        close: false,
    };
    let mut framed = false;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let mut n: usize = 0;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(format!("bad content-length in {:?}", show()));
            }
            for d in value {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(usize::from(d - b'0')))
                    .ok_or_else(|| format!("content-length too large in {:?}", show()))?;
            }
            head_out.content_length = n;
            framed = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(format!(
                "transfer-encoding is not supported by the load generator: {:?}",
                show()
            ));
        } else if name.eq_ignore_ascii_case(b"connection") {
            head_out.close = value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    // Without Content-Length only bodiless responses can be delimited.
    let bodiless = status == 204 || status == 304 || (100..200).contains(&status);
    if !framed && !bodiless {
        return Err(format!("response without content-length: {:?}", show()));
    }
    Ok(head_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    const TWO: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nContent-Type: text/plain\r\n\r\nok\
HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\nconnection: keep-alive, close\r\n\r\nnope!";

    #[test]
    fn reads_back_to_back_responses_whatever_the_read_sizes() {
        for step in [1, 2, 3, 7, 64, 4096] {
            let mut s = Trickle { data: TWO, step };
            let mut r = ResponseReader::new();
            let a = r.read(&mut s).unwrap();
            assert_eq!(
                a,
                Head {
                    status: 200,
                    content_length: 2,
                    close: false
                }
            );
            let b = r.read(&mut s).unwrap();
            assert_eq!(
                b,
                Head {
                    status: 401,
                    content_length: 5,
                    close: true
                }
            );
            assert!(r.read(&mut s).unwrap_err().contains("closed"));
        }
    }

    #[test]
    fn bodies_larger_than_the_buffer() {
        let body = vec![b'x'; 3 * BUF_SIZE + 17];
        let mut data =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        data.extend_from_slice(&body);
        data.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        let mut s = Cursor::new(data);
        let mut r = ResponseReader::new();
        assert_eq!(r.read(&mut s).unwrap().content_length, body.len());
        assert_eq!(r.read(&mut s).unwrap().status, 204);
    }

    #[test]
    fn refuses_what_it_cannot_frame() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\nbody until close",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let mut s = Cursor::new(bad);
            assert!(ResponseReader::new().read(&mut s).is_err());
        }
    }

    #[test]
    fn counts_against_a_real_server() {
        let ok = crate::http::Server::start(|r| {
            if r.header("x-fail").is_some() {
                crate::http::Action::status(503)
            } else {
                crate::http::Action::status(200)
            }
        });
        let mut cfg = Config::new(ok.port, "/x");
        cfg.connections = 2;
        cfg.warmup = Duration::from_millis(50);
        cfg.duration = Duration::from_millis(200);
        let mut edges = 0;
        let r = run_measured(&cfg, || edges += 1);
        assert_eq!(edges, 2);
        assert!(r.is_clean(), "{r:?}");
        assert!(r.requests > 0 && r.requests <= r.total_requests, "{r:?}");
        cfg.headers.push(("x-fail".into(), "1".into()));
        let r = run(&cfg);
        assert!(!r.is_clean());
        assert_eq!(r.total_errors, r.total_requests, "{r:?}");
        assert_eq!(r.sample_error_status, Some(503));
    }

    #[test]
    fn reconnects_after_connection_close_and_spreads_over_threads() {
        let server = crate::http::Server::start(|_| {
            crate::http::Action::status(204).with_header("connection", "close")
        });
        let mut cfg = Config::new(server.port, "/");
        cfg.connections = 3;
        cfg.threads = 2;
        cfg.warmup = Duration::from_millis(50);
        cfg.duration = Duration::from_millis(200);
        let r = run(&cfg);
        assert!(r.is_clean(), "{r:?}");
        assert!(r.total_requests > 3, "{r:?}");
    }

    #[test]
    fn a_silent_server_is_a_failure_not_a_hang() {
        let server = crate::http::Server::start(|_| {
            crate::http::Action::Delay(
                Duration::from_secs(3),
                Box::new(crate::http::Action::status(200)),
            )
        });
        let mut cfg = Config::new(server.port, "/");
        cfg.connections = 2;
        cfg.warmup = Duration::from_millis(10);
        cfg.duration = Duration::from_millis(10);
        cfg.io_timeout = Duration::from_millis(300);
        let t = Instant::now();
        let r = run(&cfg);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(r.failures.len(), 2, "{r:?}");
        assert!(r.failures[0].contains("no response within"), "{r:?}");
        assert!(!r.is_clean());
    }
}
