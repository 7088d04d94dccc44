//! `ctscope demo`: `top` while `load` runs, so a new user sees the table
//! fill (and, squeezed, drop) within seconds.
//!
//! The load namespace, the squeezed limit and the probes are all undone on
//! every exit path: q, Ctrl-C (a key in raw mode), SIGINT, SIGTERM, SIGHUP
//! and errors end the screen's loop or return early, and the guards drop.
//! Signal handlers are installed before anything is changed.

use std::{
    io::{self, IsTerminal as _},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{Notify, oneshot},
};

use super::{
    top::{self, Extras},
    tui,
};
use crate::{
    cli::{DemoArgs, ProbeArgs, StatsArgs},
    loadgen::{self, LoadNamespace, LoadPlan, LoadReport, Progress, Squeeze},
    views::tui::{UiState, feed::DemoView, filter::Filter, text},
};

/// The load rises to its rate over this long.
const RAMP: Duration = Duration::from_secs(5);

pub async fn run(args: &DemoArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    super::check_ready_file(args.top.ready_file.as_deref())?;
    if !io::stdout().is_terminal() {
        return headless(args, probe).await;
    }
    let app = tui::channel();
    tui::spawn_signals(&app.0)?;
    let ns = LoadNamespace::create()?;
    let squeeze = squeeze(args)?;
    let plan = plan(args);
    let progress = Arc::new(Progress::default());
    let (go, ready) = oneshot::channel();
    let load = spawn_load(ns, plan.clone(), progress.clone(), ready);
    let netns = load.netns;
    let extras = Extras {
        filter: Filter::parse(&format!("netns {netns}")).ok(),
        greeting: Some(greeting(&plan, netns, squeeze.is_some())),
        on_ready: Some(go),
        on_tick: Some(Box::new(companion(&plan, netns, args.squeeze))),
        on_sample: Some(Box::new(load_figures(progress.clone()))),
    };
    let shown = top::run_live(&args.top, probe, extras, app).await;
    let report = load.stop(&progress).await;
    drop(squeeze);
    if let Some(report) = report? {
        super::say_after_screen(&format!("ctscope demo: {}", describe(&report)));
    }
    shown
}

/// Stdout is not a terminal: the same load, with `ctscope stats` lines.
async fn headless(args: &DemoArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    eprintln!(
        "ctscope demo: stdout is not a terminal, so printing `ctscope stats` lines instead of \
         the live view{}",
        args.duration.map_or_else(
            || " until interrupted".to_owned(),
            |d| format!(" for {}", text::duration(d))
        )
    );
    let stop = Arc::new(Notify::new());
    let progress = Arc::new(Progress::default());
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        let mut sig = signal(kind).context("handling signals")?;
        let (stop, progress) = (stop.clone(), progress.clone());
        tokio::spawn(async move {
            if sig.recv().await.is_some() {
                progress.stop.store(true, Ordering::Relaxed);
                stop.notify_one();
            }
        });
    }
    let ns = LoadNamespace::create()?;
    let squeeze = squeeze(args)?;
    let plan = plan(args);
    eprintln!(
        "ctscope demo: {}",
        greeting(&plan, ns.inum(), squeeze.is_some())
    );
    // The load starts once the probes are attached, as on screen.
    let (go, ready) = oneshot::channel();
    let load = spawn_load(ns, plan, progress.clone(), ready);
    let stats = StatsArgs {
        json: false,
        interval: args.top.interval,
        count: None,
        duration: args.duration,
        ready_file: args.top.ready_file.clone(),
        buckets: false,
    };
    let printed = super::stats::run_until(&stats, probe, &stop, Some(go)).await;
    let report = load.stop(&progress).await;
    drop(squeeze);
    if let Some(report) = report? {
        eprintln!("ctscope demo: {}", describe(&report));
    }
    printed
}

fn squeeze(args: &DemoArgs) -> anyhow::Result<Option<Squeeze>> {
    args.squeeze
        .map(|max| Squeeze::apply(max, "ctscope demo"))
        .transpose()
        .map_err(Into::into)
}

pub fn plan(args: &DemoArgs) -> LoadPlan {
    LoadPlan {
        kind: args.kind,
        rate: Some(args.rate).filter(|r| *r > 0),
        count: None,
        duration: args.duration,
        threads: 1,
        ramp: Some(RAMP),
    }
}

/// The footer's first message.
pub fn greeting(plan: &LoadPlan, netns: u32, squeezed: bool) -> String {
    let rate = plan.rate.map_or_else(
        || "as many new flows as possible".to_owned(),
        |r| format!("{} new {} flows/s", text::thousands(r), plan.kind.name()),
    );
    let hint = if squeezed {
        ""
    } else {
        "; --squeeze 5000 makes it drop"
    };
    format!("demo: {rate} in netns {netns}, shown alone (/ changes it); q ends it{hint}")
}

/// What the header shows of the load, set on the first tick; ends the
/// view once the demo's --duration has passed.
fn companion(
    plan: &LoadPlan,
    netns: u32,
    squeezed: Option<u64>,
) -> impl FnMut(&mut UiState) -> Option<String> + Send + 'static {
    let started = Instant::now();
    let (kind, rate, duration) = (plan.kind.name(), plan.rate, plan.duration);
    move |ui: &mut UiState| {
        ui.demo.get_or_insert(DemoView {
            kind,
            rate,
            netns,
            squeezed,
            sent: 0,
            refused: 0,
        });
        duration
            .filter(|d| started.elapsed() >= *d)
            .map(|d| format!("the demo ran its {}", text::duration(d)))
    }
}

/// The flows sent and refused, read as each sample is applied: the
/// refused sends are the namespace's table-full drops, and read on every
/// tick they ran up to an interval ahead of the drop counts beside them
/// (`863 refused` over `full 183`: issue 18).
fn load_figures(progress: Arc<Progress>) -> impl FnMut(&mut UiState) + Send + 'static {
    move |ui: &mut UiState| {
        if let Some(d) = &mut ui.demo {
            d.sent = progress.sent.load(Ordering::Relaxed);
            d.refused = progress.refused.load(Ordering::Relaxed);
        }
    }
}

fn describe(r: &LoadReport) -> String {
    format!(
        "{} {} flows in {:.1} s ({} refused by the kernel); the namespace is removed",
        r.flows + r.refused,
        r.kind,
        r.seconds,
        r.refused
    )
}

/// The load generator on blocking threads; it owns the namespace, which
/// goes away when the generator returns.
struct Load {
    netns: u32,
    task: tokio::task::JoinHandle<Option<LoadReport>>,
}

fn spawn_load(
    ns: LoadNamespace,
    plan: LoadPlan,
    progress: Arc<Progress>,
    go: oneshot::Receiver<()>,
) -> Load {
    let netns = ns.inum();
    let task = tokio::spawn(async move {
        // Nothing is sent before the screen is up (or at all, if it never
        // comes up): the charts start from zero.
        go.await.ok()?;
        tokio::task::spawn_blocking(move || loadgen::run(&ns, &plan, &progress))
            .await
            .ok()
    });
    Load { netns, task }
}

impl Load {
    async fn stop(self, progress: &Progress) -> anyhow::Result<Option<LoadReport>> {
        progress.stop.store(true, Ordering::Relaxed);
        self.task.await.context("the load generator panicked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cli::TopArgs, loadgen::FlowKind};

    fn args(rate: u64, squeeze: Option<u64>) -> DemoArgs {
        DemoArgs {
            rate,
            duration: None,
            squeeze,
            kind: FlowKind::Udp,
            top: TopArgs::default(),
        }
    }

    #[test]
    fn the_plan_ramps_to_the_rate_until_stopped() {
        let p = plan(&args(2000, None));
        assert_eq!(p.rate, Some(2000));
        assert_eq!(p.ramp, Some(RAMP));
        assert_eq!((p.count, p.duration), (None, None), "until q");
        assert_eq!(plan(&args(0, None)).rate, None, "0: as fast as possible");
    }

    #[test]
    fn the_greeting_says_how_to_see_drops_when_not_squeezed() {
        let p = plan(&args(2000, None));
        let text = greeting(&p, 4_026_532_001, false);
        assert!(
            text.starts_with("demo: 2,000 new udp flows/s in netns 4026532001"),
            "{text}"
        );
        assert!(text.contains("--squeeze"), "{text}");
        assert!(!greeting(&p, 1, true).contains("--squeeze"));
    }

    #[test]
    fn the_companion_shows_the_load_and_ends_after_the_duration() {
        let progress = Arc::new(Progress::default());
        progress.sent.store(1234, Ordering::Relaxed);
        let mut p = plan(&args(2000, Some(300)));
        let mut ui = UiState::default();
        let mut tick = companion(&p, 7, Some(300));
        let mut sampled = load_figures(progress.clone());
        assert_eq!(tick(&mut ui), None, "no duration: until q");
        sampled(&mut ui);
        let view = ui.demo.clone().expect("demo view");
        assert_eq!((view.sent, view.squeezed, view.netns), (1234, Some(300), 7));
        p.duration = Some(Duration::ZERO);
        let mut tick = companion(&p, 7, None);
        assert!(tick(&mut ui).is_some_and(|why| why.contains("ran its")));
    }

    /// Issue 18: `863 refused` stood over `full 183`: the flows were read
    /// on every tick, the kernel's drop counts at each sample. They are
    /// now read with the sample, and ticks leave them alone.
    #[test]
    fn sent_and_refused_are_read_with_the_sample_not_on_ticks() {
        let progress = Arc::new(Progress::default());
        let p = plan(&args(2000, Some(300)));
        let mut ui = UiState::default();
        let mut tick = companion(&p, 7, Some(300));
        let mut sampled = load_figures(progress.clone());
        tick(&mut ui);
        progress.refused.store(183, Ordering::Relaxed);
        sampled(&mut ui);
        // The load goes on between samples; ticks redraw the header.
        progress.refused.store(863, Ordering::Relaxed);
        progress.sent.store(40, Ordering::Relaxed);
        tick(&mut ui);
        tick(&mut ui);
        let view = ui.demo.clone().expect("demo view");
        assert_eq!((view.refused, view.sent), (183, 0), "as of the sample");
        sampled(&mut ui);
        let view = ui.demo.clone().expect("demo view");
        assert_eq!((view.refused, view.sent), (863, 40));
    }
}
