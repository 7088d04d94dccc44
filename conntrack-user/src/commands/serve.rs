//! `ctscope serve`: Prometheus / OpenMetrics on /metrics, and /healthz.

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
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    cli::{ProbeArgs, ServeArgs},
    event::Message,
    kernel::netns::own_netns_inode,
    model::{Model, RunInfo},
    probe::EBPF_BUILD_ID,
    source::live::{LiveOptions, LiveSource},
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
    // Bind first: a busy port is the user's mistake, reported before the
    // probes attach.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {}; is another exporter using it? (--listen)",
                args.listen
            )
        })?;
    let (tx, mut rx) = mpsc::channel(64);
    let live = LiveSource::start(
        LiveOptions {
            probe: probe.options(1),
            sample_every: args.interval,
            kernel_stats: probe.kernel_stats.into(),
            events: 0,
            // The chain-length histogram metrics.
            buckets: Some(0),
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
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.changed().await;
            })
            .await
    });
    eprintln!("ctscope: serving metrics on http://{}/metrics", args.listen);
    super::write_ready_file(args.ready_file.as_deref())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
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
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    let _ = stop_tx.send(true);
    live.stop().await?;
    server
        .await
        .context("the HTTP server task panicked")?
        .context("serving HTTP")?;
    Ok(())
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
