//! What the demo services (`src/bin/`) share: their command line, the
//! address they listen on, and a clean end on SIGTERM or SIGINT. As PID 1 in
//! a container a process gets no default action for SIGTERM, so without a
//! handler `docker stop` waits its whole grace period and then kills it.

use crate::http::{Action, Recorded, Server};

/// The port in the first argument, or the usage line and exit code 2.
pub fn port_arg(usage: &str) -> u16 {
    std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: {usage}");
            std::process::exit(2);
        })
}

/// Serves on `$BIND_ADDR` (127.0.0.1 by default; 0.0.0.0 in containers)
/// until SIGTERM or SIGINT. Call [`block_termination`] first in `main`.
pub fn serve(name: &str, port: u16, handler: impl Fn(&Recorded) -> Action + Send + Sync + 'static) {
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
    let server = Server::start_on_addr(&bind, port, handler);
    eprintln!("{name}: listening on {bind}:{}", server.port);
    let signal = wait();
    eprintln!("{name}: signal {signal}, stopping");
}

/// Blocks SIGTERM and SIGINT in this thread and every thread it starts
/// afterwards (call it first in `main`), so that [`wait`] receives them.
pub fn block_termination() {
    // SAFETY: plain libc calls on a signal set owned by this frame.
    unsafe {
        let set = termination_set();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGTERM or SIGINT (blocked by [`block_termination`]) and
/// returns its number.
pub fn wait() -> i32 {
    // SAFETY: plain libc calls on a signal set owned by this frame.
    unsafe {
        let set = termination_set();
        let mut signal = 0;
        while libc::sigwait(&set, &mut signal) != 0 {}
        signal
    }
}

unsafe fn termination_set() -> libc::sigset_t {
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigaddset(&mut set, libc::SIGTERM);
    libc::sigaddset(&mut set, libc::SIGINT);
    set
}
