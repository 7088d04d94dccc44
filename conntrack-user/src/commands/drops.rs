//! `ctscope drops`: every dropped packet as it happens, then a summary.

use std::{
    io::{self, Write as _},
    time::Duration,
};

use conntrack_common::setting;
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until, timeout},
};

use super::{signals::Signals, stdout_err};
use crate::{
    cli::{DropsArgs, ProbeArgs},
    event::Message,
    model::{Model, RunInfo},
    probe::ProbeOptions,
    source::live::{LiveOptions, LiveSource, WALK_BUDGET},
    views::drops::{SummaryInput, json, line, summary_json, summary_text},
};

/// Above this many drop events a second, the kernel starts sending one in N
/// (counts stay exact); below a tenth of it, sampling is relaxed again.
const MAX_DETAILED_PER_SEC: f64 = 50_000.0;
/// How often counters are read (for the summary and the sampling decision).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub async fn run(args: &DropsArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    super::check_ready_file(args.ready_file.as_deref())?;
    let mut signals = Signals::install()?;
    let (tx, mut rx) = mpsc::channel(256);
    let live = LiveSource::start(
        LiveOptions {
            // Drops only: no probe on the machine's slab frees.
            probe: ProbeOptions {
                count: false,
                ..probe.options(4)
            },
            sample_every: SAMPLE_EVERY,
            kernel_stats: probe.kernel_stats.into(),
            events: setting::EVENTS_DROP,
            // The drop probe needs the table only to tell chain_too_long.
            buckets: None,
            holders: false,
            walk_budget: WALK_BUDGET,
        },
        tx,
    )
    .await?;
    super::write_ready_file(args.ready_file.as_deref())?;
    let mut model = Model::with_drop_filter(
        RunInfo {
            backend: live.info.backend.to_owned(),
            kernel: live.info.kernel.clone(),
        },
        args.filter.drop_filter(),
    );
    // Names the code that dropped packets of cause `other`; the probes
    // have loaded, so kallsyms was readable a moment ago.
    let syms = crate::kallsyms::Kallsyms::load().ok();
    let mut out = io::stdout();
    // A write error on stdout (the reader went away, `| head -1`).
    let mut write_error = None;
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut sampling = Sampling::default();
    let mut shown = 0u64;
    'run: loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let is_sample = matches!(msg, Message::Sample(_));
                model.apply(msg);
                if is_sample {
                    if let Some(rate) = sampling.update(model.drops.received) {
                        live.set(setting::DROP_SAMPLE, rate);
                        eprintln!(
                            "ctscope: {:.0} drops/s; showing 1 in {rate} (counts stay exact)",
                            sampling.last_rate
                        );
                    }
                    continue;
                }
                match show_fresh(&model, args, syms.as_ref(), &mut out, &mut shown) {
                    Ok(Shown::More) => {}
                    Ok(Shown::Enough) => break 'run,
                    Err(e) => {
                        write_error = Some(e);
                        break 'run;
                    }
                }
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
            _ = signals.recv() => break,
        }
    }
    // Read the counters once more so the summary covers the whole run; the
    // drops still on their way are shown too (unless the count was reached
    // or stdout is gone), or the lines would fall short of the summary.
    live.sample_now();
    let mut showing = write_error.is_none() && args.count.is_none_or(|n| shown < n);
    let _ = timeout(Duration::from_secs(2), async {
        while let Some(msg) = rx.recv().await {
            let is_sample = matches!(msg, Message::Sample(_));
            model.apply(msg);
            if is_sample {
                break;
            }
            if showing {
                match show_fresh(&model, args, syms.as_ref(), &mut out, &mut shown) {
                    Ok(Shown::More) => {}
                    Ok(Shown::Enough) => showing = false,
                    Err(e) => {
                        write_error = Some(e);
                        showing = false;
                    }
                }
            }
        }
    })
    .await;
    live.stop().await?;
    if let Some(e) = write_error {
        // Nobody is left to read the summary.
        return Err(stdout_err(e));
    }
    let input = SummaryInput {
        sample_rate: sampling.rate,
        top: args.top,
    };
    let summary = if args.json {
        summary_json(&model, &input).to_string()
    } else {
        summary_text(&model, &input).trim_end().to_owned()
    };
    writeln!(out, "{summary}")
        .and_then(|()| out.flush())
        .map_err(stdout_err)
}

/// Whether to go on showing drops after [`show_fresh`].
enum Shown {
    More,
    /// `--count` reached.
    Enough,
}

/// Writes the drops of the model's latest batch, one line each.
fn show_fresh(
    model: &Model,
    args: &DropsArgs,
    syms: Option<&crate::kallsyms::Kallsyms>,
    out: &mut io::Stdout,
    shown: &mut u64,
) -> io::Result<Shown> {
    for d in &model.drops.fresh {
        let text = if args.json {
            json(model, d, syms)
        } else {
            line(model, d, syms)
        };
        writeln!(out, "{text}")?;
        *shown += 1;
        if args.count.is_some_and(|n| *shown >= n) {
            out.flush()?;
            return Ok(Shown::Enough);
        }
    }
    let _ = out.flush();
    Ok(Shown::More)
}

/// Adapts the in-kernel sampling of drop details to the drop rate.
#[derive(Debug)]
struct Sampling {
    rate: u32,
    received: u64,
    at: std::time::Instant,
    last_rate: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            rate: 1,
            received: 0,
            at: std::time::Instant::now(),
            last_rate: 0.0,
        }
    }
}

impl Sampling {
    /// Given the drop events received so far, returns a new rate when it
    /// should change. The rate of events *received* is the rate of drops
    /// divided by the current sampling rate.
    fn update(&mut self, received: u64) -> Option<u32> {
        let secs = self.at.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let drops_per_sec =
            received.saturating_sub(self.received) as f64 * f64::from(self.rate) / secs;
        self.received = received;
        self.at = std::time::Instant::now();
        self.last_rate = drops_per_sec;
        let wanted = next_rate(self.rate, drops_per_sec);
        (wanted != self.rate).then(|| {
            self.rate = wanted;
            wanted
        })
    }
}

/// Powers of two, so sampled counts scale back simply.
fn next_rate(current: u32, drops_per_sec: f64) -> u32 {
    if drops_per_sec > MAX_DETAILED_PER_SEC {
        let need = (drops_per_sec / MAX_DETAILED_PER_SEC).ceil() as u32;
        need.next_power_of_two().max(current)
    } else if drops_per_sec < MAX_DETAILED_PER_SEC / 10.0 && current > 1 {
        (current / 2).max(1)
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_rises_under_a_flood_and_relaxes_after() {
        assert_eq!(next_rate(1, 1_000.0), 1);
        assert_eq!(next_rate(1, 1_000_000.0), 32);
        assert_eq!(next_rate(32, 1_000_000.0), 32);
        assert_eq!(next_rate(32, 100.0), 16);
        assert_eq!(next_rate(1, 100.0), 1);
    }
}
