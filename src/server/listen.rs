//! The HTTP/1 accept loop, in place of `axum::serve` (which takes no configuration): every
//! connection is hyper's with
//! - a header-read timeout (`--read-timeout`): a client that opens a connection and sends its
//!   headers slowly, partly or never -- or leaves a keep-alive connection idle, since the timer
//!   restarts for each request's headers -- is closed after it, so such connections cannot pile
//!   up until the process runs out of file descriptors (the body has its own deadline:
//!   `routes::read_body`);
//! - a read buffer of [`MAX_BUF`] bytes (hyper's default lets one connection's headers take
//!   ~400 KB);
//! - at most `--max-connections` open at once: past that the loop stops accepting and new
//!   connections wait in the kernel's backlog until one closes, instead of failing `accept` (and
//!   every file the process opens) for want of descriptors.
//!
//! Stopping: no new connections; each open one finishes the request it is answering and closes
//! (hyper closes those between requests at once). Connections that hold no request up -- a
//! stalled reader of a finished answer, a half-sent request -- are given [`DRAIN_GRACE`] once
//! nothing is left to answer (no handler running, nothing queued or generating: `busy`), then
//! closed, so that a stop never waits on a client.
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// A connection's read buffer (the most a request's headers may take): 64 KiB.
const MAX_BUF: usize = 64 << 10;

/// How long a stop waits, once nothing is being answered, for the connections still open (a
/// stream's last bytes on their way to a slow reader) before closing them.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The least time between two notes about failing `accept`s.
const NOTE_EVERY: Duration = Duration::from_secs(10);

/// How often a stop checks whether anything is still being answered.
const BUSY_POLL: Duration = Duration::from_millis(50);

pub struct Limits {
    /// How long a client has for a request's headers (and an idle keep-alive connection stays).
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stopping` turns true, then drains as the module says.
/// `busy`: whether any request is still being answered (handled or generated).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stopping: watch::Receiver<bool>,
    busy: impl Fn() -> bool,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut stop = stopping.clone();
    let mut noted = None;
    loop {
        // A free slot before the next accept: at the cap, connections wait in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e, &mut noted).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        // Streamed chunks go out as they are written, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut conn_stop = stopping.clone();
        let header_timeout = limits.header_timeout;
        conns.spawn(async move {
            let _slot = permit;
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(MAX_BUF);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                // Errors (a client that left, a header timeout, malformed HTTP) end only this
                // connection; hyper has answered what it could.
                _ = conn.as_mut() => return,
                _ = conn_stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
        // Finished connections' results, so that the set holds only open ones.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let all_closed = async { while conns.join_next().await.is_some() {} };
    let nothing_left = async {
        loop {
            while busy() {
                tokio::time::sleep(BUSY_POLL).await;
            }
            tokio::time::sleep(DRAIN_GRACE).await;
            if !busy() {
                return;
            }
        }
    };
    let drained = tokio::select! {
        _ = all_closed => true,
        _ = nothing_left => false,
    };
    if !drained {
        eprintln!(
            "qwen-aot serve: closing {} connection(s) with no request in progress after {} s",
            conns.len(),
            DRAIN_GRACE.as_secs()
        );
        conns.shutdown().await;
    }
}

/// An `accept` that failed: a connection reset before it was taken is nothing; out of file
/// descriptors (another part of the process holds them) or memory, wait a little rather than
/// spin on the error, and say so at most every [`NOTE_EVERY`] (`noted`: when it last did).
async fn accept_failed(e: &std::io::Error, noted: &mut Option<Instant>) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted) {
        return;
    }
    if noted.is_none_or(|t| t.elapsed() >= NOTE_EVERY) {
        eprintln!("qwen-aot serve: accepting a connection failed ({e}); retrying");
        *noted = Some(Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}
