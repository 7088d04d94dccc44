//! The HTTP side of `ctscope serve`, built to outlast clients that connect
//! and never ask, ask half a question, or never read the answer: the
//! DaemonSet listens on the node's address, so anyone who can reach the node
//! can try. Three limits:
//!
//! - a request's header must arrive within the idle timeout of the
//!   connection opening or of the previous response (hyper's
//!   `header_read_timeout`, which hyper also starts on an idle keep-alive
//!   connection), and no connection lives longer than [`MAX_LIFETIME`];
//! - at most `max_connections` at once. A connection past the cap evicts the
//!   oldest one that has no request in progress (an idle or half-sent one),
//!   so a real scrape gets through while hostile connections hold the rest;
//!   when every connection is busy, it is closed at once;
//! - file descriptors for the collector: the soft RLIMIT_NOFILE is raised to
//!   the hard limit and the cap kept [`RESERVED_FDS`] below it, so table
//!   walks, /proc reads, netlink and namespace entry never see EMFILE
//!   because of clients.

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::Router;
use hyper::{body::Incoming, server::conn::http1, service::Service as _};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
};

/// File descriptors kept for the collector itself: eBPF programs and maps,
/// the ring buffer, netlink sockets, /proc files and namespace handles are a
/// few dozen at once; the rest is margin.
pub const RESERVED_FDS: u64 = 256;

/// No connection is kept longer than this, busy or not: a client that stops
/// reading a response cannot hold its connection for ever.
pub const MAX_LIFETIME: Duration = Duration::from_secs(120);

/// How long a connection asked to close may finish the response it is
/// writing.
const GRACE: Duration = Duration::from_secs(2);

/// How long a connection past the cap waits for an evicted one to let go.
const EVICT_WAIT: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit
/// in force afterwards.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes to the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// The connection cap that leaves [`RESERVED_FDS`] to the collector under a
/// soft fd limit of `fd_limit` (at least one connection, or nothing could
/// scrape).
pub fn connection_cap(requested: usize, fd_limit: u64) -> usize {
    let room = usize::try_from(fd_limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    requested.min(room).max(1)
}

/// One open connection, as the accept loop sees it.
struct Conn {
    opened: Instant,
    /// Requests inside the handler right now.
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

type Registry = Arc<Mutex<HashMap<u64, Conn>>>;

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let conns: Registry = Arc::default();
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: the cap should prevent them, but
                    // do not spin on them either.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let Some(permit) = admit(&permits, &conns).await else {
            // Every connection is in the middle of a request: close this one
            // at once rather than hold its descriptor.
            drop(stream);
            continue;
        };
        next_id += 1;
        let id = next_id;
        let busy = Arc::new(AtomicUsize::new(0));
        let evict = Arc::new(Notify::new());
        lock(&conns).insert(
            id,
            Conn {
                opened: Instant::now(),
                busy: busy.clone(),
                evict: evict.clone(),
            },
        );
        let (app, conns, stop) = (app.clone(), conns.clone(), stop.clone());
        tasks.spawn(async move {
            connection(stream, app, limits, busy, evict, stop).await;
            lock(&conns).remove(&id);
            drop(permit);
        });
    }
    // Connections saw `stop` too and finish their responses within GRACE.
    let _ = tokio::time::timeout(GRACE * 2, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// A permit for one more connection: at the cap, the oldest connection with
/// no request in progress is evicted to make room.
async fn admit(permits: &Arc<Semaphore>, conns: &Registry) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = permits.clone().try_acquire_owned() {
        return Some(p);
    }
    {
        let mut live = lock(conns);
        let oldest = live
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, c)| c.opened)
            .map(|(id, _)| *id)?;
        if let Some(c) = live.remove(&oldest) {
            c.evict.notify_one();
        }
    }
    tokio::time::timeout(EVICT_WAIT, permits.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

fn lock(conns: &Registry) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
    conns.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a request as in progress while it is alive.
struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn new(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::Relaxed);
        Self(busy.clone())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let router = TowerToHyperService::new(app);
    let in_service = busy.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = BusyGuard::new(&in_service);
        let response = router.call(req);
        async move {
            let response = response.await;
            drop(guard);
            Ok::<_, Infallible>(match response {
                Ok(r) => r,
                Err(never) => match never {},
            })
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        // Errors here are the client's (timeouts, resets, bad requests);
        // the connection is over either way.
        _ = conn.as_mut() => return,
        () = evict.notified() => return,
        () = tokio::time::sleep(MAX_LIFETIME) => {}
        _ = stop.changed() => {
            // Idle, or half a header: nothing worth waiting for.
            if busy.load(Ordering::Relaxed) == 0 {
                return;
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(GRACE, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_room_for_the_collector() {
        assert_eq!(connection_cap(64, 1024), 64);
        assert_eq!(connection_cap(64, 300), 44);
        assert_eq!(connection_cap(64, 100), 1, "always at least one");
        assert_eq!(connection_cap(10_000, 1 << 20), 10_000);
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let soft = raise_fd_limit().expect("getrlimit");
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes to the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(soft, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
