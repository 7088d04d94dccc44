//! `ctscope serve`: Prometheus / OpenMetrics on /metrics, and /healthz.

mod http;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::sync::{mpsc, watch};

use super::BadInput;
use crate::{
    cli::{ProbeArgs, ServeArgs},
    event::Message,
    kernel::netns::own_netns_inode,
    model::{Model, RunInfo},
    probe::EBPF_BUILD_ID,
    source::live::{LiveOptions, LiveSource, WALK_BUDGET},
    views::metrics::{CONTENT_TYPE, render},
};

/// The page served, re-rendered after every sample.
struct Page {
    body: String,
    at: Instant,
    interval: Duration,
}

type Shared = watch::Receiver<Arc<Page>>;

pub async fn run(args: &ServeArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    // Bind first: a busy port, a foreign address or a ready file that cannot
    // be written is the user's mistake, reported (exit status 2) before the
    // probes attach.
    super::check_ready_file(args.ready_file.as_deref())?;
    let listener = bind(args.listen).await?;
    // Before attaching: a signal from then on ends the run cleanly.
    let mut signals = super::signals::Signals::install()?;
    let fd_limit = http::raise_fd_limit().context("reading the open-file limit (RLIMIT_NOFILE)")?;
    let requested = args.max_connections as usize;
    let limits = http::Limits {
        max_connections: http::connection_cap(requested, fd_limit),
        idle_timeout: args.idle_timeout,
    };
    if limits.max_connections < requested {
        eprintln!(
            "ctscope: the open-file limit is {fd_limit}; serving at most {} connections at once \
             so {} descriptors stay free for collection (raise `ulimit -Hn` for more)",
            limits.max_connections,
            http::RESERVED_FDS
        );
    }
    let (tx, mut rx) = mpsc::channel(64);
    let live = LiveSource::start(
        LiveOptions {
            probe: probe.options(1),
            sample_every: args.interval,
            kernel_stats: probe.kernel_stats.into(),
            events: 0,
            // The chain-length histogram metrics.
            buckets: Some(0),
            holders: true,
            walk_budget: WALK_BUDGET,
        },
        tx,
    )
    .await?;
    let own_netns = own_netns_inode().unwrap_or(0);
    let backend = live.info.backend;
    let build = [
        ("version", crate::version::SHORT),
        ("ebpf_build_id", EBPF_BUILD_ID),
        ("backend", backend),
    ];
    let mut model = Model::new(RunInfo {
        backend: backend.to_owned(),
        kernel: live.info.kernel.clone(),
    });
    let (page_tx, page_rx) = watch::channel(Arc::new(Page {
        body: String::new(),
        at: Instant::now(),
        interval: args.interval,
    }));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(page_rx);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(listener, app, limits, stop_rx));
    eprintln!("ctscope: serving metrics on http://{}/metrics", args.listen);
    super::write_ready_file(args.ready_file.as_deref())?;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let is_sample = matches!(msg, Message::Sample(_));
                model.apply(msg);
                if is_sample {
                    let body = render(&model, own_netns, &build);
                    let _ = page_tx.send(Arc::new(Page { body, at: Instant::now(), interval: args.interval }));
                }
            }
            _ = signals.recv() => break,
        }
    }
    let _ = stop_tx.send(true);
    live.stop().await?;
    server.await.context("the HTTP server task panicked")?;
    Ok(())
}

/// Binds `--listen`, with what to do about the two mistakes people make.
async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let what = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => format!(
                "port {} is already in use on {} (another exporter, or an earlier \
                 ctscope serve?); choose another with --listen",
                addr.port(),
                addr.ip()
            ),
            Some(libc::EADDRNOTAVAIL) => format!(
                "{} is not an address of this machine; --listen takes one of its own \
                 addresses, or 0.0.0.0 / [::] for all of them",
                addr.ip()
            ),
            Some(libc::EACCES) => format!(
                "port {} is privileged (below 1024) and ctscope may not bind it; \
                 choose another with --listen",
                addr.port()
            ),
            _ => return anyhow::Error::new(e).context(format!("listening on {addr} (--listen)")),
        };
        BadInput(format!("listening on {addr}: {what}")).into()
    })
}

async fn metrics(State(page): State<Shared>) -> impl IntoResponse {
    let page = page.borrow().clone();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], page.body.clone())
}

/// Healthy while samples keep coming: the probes are attached and read.
async fn healthz(State(page): State<Shared>) -> impl IntoResponse {
    let page = page.borrow().clone();
    if !page.body.is_empty() && page.at.elapsed() < page.interval * 3 + Duration::from_secs(1) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no recent sample\n")
    }
}

/// Used by the CLI's default: loopback only, so metrics are not exposed to
/// the network unless asked.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Parses `--listen` (address:port).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address:port, e.g. 127.0.0.1:9464 or [::]:9464"))
}
