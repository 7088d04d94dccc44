//! A conntrack load generator that never leaves the machine: new flows over
//! loopback inside a network namespace ctscope creates (or one it is given).
//!
//! Each flow has a fresh tuple (destination address in 127.0.0.0/8 and port
//! advance together), so each creates one conntrack entry. Traffic stays on
//! the namespace's loopback; nothing is routed anywhere else.

mod netns;
mod squeeze;
mod traffic;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

pub use netns::{LoadNamespace, NamespaceError};
use serde::Serialize;
pub use squeeze::Squeeze;
pub use traffic::{FlowKind, TupleCursor};

/// What to generate.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    pub kind: FlowKind,
    /// New flows per second over all threads; `None` = as fast as possible.
    pub rate: Option<u64>,
    /// Stop after this many flows.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub threads: usize,
    /// Rise linearly from nothing to `rate` over this long (a demo's
    /// charts climb instead of jumping).
    pub ramp: Option<Duration>,
}

/// Live progress, shared with the threads.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    /// Sends the kernel refused (e.g. EPERM when netfilter dropped it at
    /// OUTPUT: table full).
    pub refused: AtomicU64,
    pub stop: AtomicBool,
}

/// The outcome of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadReport {
    pub kind: String,
    pub netns: u32,
    pub flows: u64,
    pub refused: u64,
    pub seconds: f64,
    /// Flows per second achieved.
    pub rate: f64,
}

/// Runs the plan inside `ns` until done or until `progress.stop` is set.
pub fn run(ns: &LoadNamespace, plan: &LoadPlan, progress: &Arc<Progress>) -> LoadReport {
    let start = Instant::now();
    let threads = plan.threads.max(1);
    let per_thread_count = plan.count.map(|c| c.div_ceil(threads as u64));
    let per_thread_rate = plan.rate.map(|r| (r / threads as u64).max(1));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let progress = Arc::clone(progress);
            let ns = ns.handle();
            let kind = plan.kind;
            let duration = plan.duration;
            let total = plan.count;
            let ramp = plan.ramp;
            thread::spawn(move || -> Result<(), NamespaceError> {
                ns.enter()?;
                let mut cursor = TupleCursor::new(i as u32, threads as u32);
                let mut pacer = traffic::Pacer::new(per_thread_rate, ramp);
                let mut generator = traffic::Generator::new(kind)?;
                let mut mine = 0u64;
                loop {
                    if progress.stop.load(Ordering::Relaxed)
                        || duration.is_some_and(|d| start.elapsed() >= d)
                        || per_thread_count.is_some_and(|c| mine >= c)
                        || total.is_some_and(|t| progress.sent.load(Ordering::Relaxed) >= t)
                    {
                        return Ok(());
                    }
                    pacer.wait();
                    match generator.flow(cursor.next_tuple()) {
                        Ok(()) => progress.sent.fetch_add(1, Ordering::Relaxed),
                        Err(_) => progress.refused.fetch_add(1, Ordering::Relaxed),
                    };
                    mine += 1;
                }
            })
        })
        .collect();
    let mut failures = 0;
    for h in handles {
        if !matches!(h.join(), Ok(Ok(()))) {
            failures += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let flows = progress.sent.load(Ordering::Relaxed);
    let refused = progress.refused.load(Ordering::Relaxed);
    LoadReport {
        kind: plan.kind.name().to_owned(),
        netns: ns.inum(),
        flows,
        refused: refused + failures,
        seconds,
        rate: if seconds > 0.0 {
            (flows + refused) as f64 / seconds
        } else {
            0.0
        },
    }
}
