//! `ctscope top`: the live terminal view (the loop is in `tui`), with `r`
//! recording a trace (`live_record`). `ctscope demo` runs it beside a load.

use std::{
    io::{self, IsTerminal as _},
    path::PathBuf,
    time::Instant,
};

use conntrack_common::setting;
use tokio::sync::{mpsc, oneshot};

use super::{
    BadInput,
    live_record::{LiveRecorder, spawn_forwarder},
    tui::{self, AppEvent, Driver, Ended},
};
use crate::{
    cli::{ProbeArgs, StatsArgs, TopArgs},
    model::{Model, RunInfo},
    source::live::{LiveOptions, LiveSource, WALK_BUDGET},
    views::tui::{
        UiState,
        filter::Filter,
        state::{Action, Env},
    },
};

/// Like `drops`: only drop events stream, and they are bursty. A recording
/// adds allocations and frees while it runs.
const IDLE_EVENTS: u32 = setting::EVENTS_DROP;

/// Called on every tick: updates what the screen shows of a companion
/// (the demo's load), and ends the view when it returns a reason.
pub type OnTick = Box<dyn FnMut(&mut UiState) -> Option<String> + Send>;

/// Called after each sample is applied: updates the figures of a companion
/// that must be of the same moment as the kernel's counters (the demo's
/// flows sent and refused beside the drops counted).
pub type OnSample = Box<dyn FnMut(&mut UiState) + Send>;

/// What `ctscope demo` adds to the live view.
#[derive(Default)]
pub struct Extras {
    /// The `/` filter to start with.
    pub filter: Option<Filter>,
    /// A message for the footer at start.
    pub greeting: Option<String>,
    /// Told once the screen is up.
    pub on_ready: Option<oneshot::Sender<()>>,
    pub on_tick: Option<OnTick>,
    pub on_sample: Option<OnSample>,
}

pub async fn run(args: &TopArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    if !io::stdout().is_terminal() {
        eprintln!(
            "ctscope: stdout is not a terminal, so printing `ctscope stats` lines instead of \
             the live view (use `ctscope stats --json` in scripts)"
        );
        let stats = StatsArgs {
            json: false,
            interval: args.interval,
            count: None,
            duration: None,
            ready_file: args.ready_file.clone(),
            buckets: false,
        };
        return super::stats::run(&stats, probe).await;
    }
    let app = tui::channel();
    tui::spawn_signals(&app.0)?;
    run_live(args, probe, Extras::default(), app).await
}

/// The live view until the user quits or a signal arrives (in `app`'s
/// channel: install the signal handlers before calling this).
pub async fn run_live(
    args: &TopArgs,
    probe: &ProbeArgs,
    mut extras: Extras,
    app: (mpsc::Sender<AppEvent>, mpsc::Receiver<AppEvent>),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let record_dir = record_dir(args)?;
    super::check_ready_file(args.ready_file.as_deref())?;
    let (kernel_tx, kernel_rx) = mpsc::channel(64);
    let opts = probe.options(4);
    let ring_bytes = opts.ring_bytes;
    // Attach before touching the terminal, so errors print normally.
    let live = LiveSource::start(
        LiveOptions {
            probe: opts,
            sample_every: args.interval,
            kernel_stats: probe.kernel_stats.into(),
            events: IDLE_EVENTS,
            // The buckets panel: histogram, heat strip, longest chain.
            buckets: Some(0),
            holders: true,
            walk_budget: WALK_BUDGET,
        },
        kernel_tx,
    )
    .await?;
    let model = Model::new(RunInfo {
        backend: live.info.backend.to_owned(),
        kernel: live.info.kernel.clone(),
    });
    let mut ui = UiState::new(Env {
        interval: args.interval,
        objsize: read_objsize(),
        conntrack_module: conntrack_is_module(),
        color: tui::color_allowed(),
        bucket_walker: true,
        ..Env::default()
    });
    if let Some(filter) = extras.filter.take() {
        ui.filter = filter;
    }
    if let Some(text) = extras.greeting.take() {
        ui.say(text);
    }
    let (tee_tx, tee_rx) = mpsc::unbounded_channel();
    spawn_forwarder(kernel_rx, app.0.clone(), tee_rx);
    let mut driver = LiveDriver {
        recorder: LiveRecorder::new(
            &live,
            tee_tx,
            record_dir,
            IDLE_EVENTS,
            args.interval,
            ring_bytes,
        ),
        on_tick: extras.on_tick.take(),
        on_sample: extras.on_sample.take(),
    };
    if let Some(ready) = extras.on_ready.take() {
        let _ = ready.send(());
    }
    let ended = tui::on_screen(
        model,
        ui,
        &mut driver,
        app,
        args.ready_file.as_deref(),
        started,
    )
    .await;
    // Whatever happened on screen, a recording is closed properly and the
    // probes detach before ctscope exits.
    let reason = match ended {
        Ok(Ended::Signal(_)) => "signal",
        _ => "stopped",
    };
    let closing = driver.recorder.close(reason);
    let stopped = live.stop().await;
    if let Some(closing) = closing {
        match closing.wait().await {
            Ok(saved) => say(&format!(
                "recorded {} to {}",
                saved.describe(),
                saved.path.display()
            )),
            Err(e) => say(&format!("the recording could not be finished: {e:#}")),
        }
    }
    let ended = ended?;
    stopped?;
    if let Some(message) = ended.message() {
        say(&message);
    }
    Ok(())
}

/// A line on stderr after the screen (see `say_after_screen`).
fn say(message: &str) {
    super::say_after_screen(&format!("ctscope: {message}"));
}

fn record_dir(args: &TopArgs) -> anyhow::Result<PathBuf> {
    let dir = match &args.record_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|e| {
            BadInput(format!(
                "the current directory is not usable ({e}); use --record-dir"
            ))
        })?,
    };
    if !dir.is_dir() {
        return Err(BadInput(format!(
            "--record-dir {}: not a directory; create it or choose another",
            dir.display()
        ))
        .into());
    }
    Ok(dir)
}

struct LiveDriver<'a> {
    recorder: LiveRecorder<'a>,
    on_tick: Option<OnTick>,
    on_sample: Option<OnSample>,
}

impl Driver for LiveDriver<'_> {
    fn sampled(&mut self, ui: &mut UiState) {
        if let Some(f) = self.on_sample.as_mut() {
            f(ui);
        }
    }

    fn tick(&mut self, ui: &mut UiState) -> Option<String> {
        self.recorder.tick(ui);
        self.on_tick.as_mut().and_then(|f| f(ui))
    }

    fn act(&mut self, action: Action, ui: &mut UiState) {
        if action == Action::Record {
            self.recorder.toggle(ui);
        }
    }
}

/// Bytes each conntrack entry takes in its slab: `slab_size` (the object
/// plus SLUB's metadata, 256 here for a 248-byte `struct nf_conn`), which
/// is what /proc/slabinfo calls objsize. Read once.
pub fn read_objsize() -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string("/sys/kernel/slab/nf_conntrack/slab_size")
        && let Ok(bytes) = text.trim().parse()
    {
        return Some(bytes);
    }
    slabinfo_objsize(&std::fs::read_to_string("/proc/slabinfo").ok()?)
}

/// The `<objsize>` column of the `nf_conntrack` row of /proc/slabinfo.
fn slabinfo_objsize(text: &str) -> Option<u64> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"nf_conntrack"))
        .and_then(|f| f.get(3)?.parse().ok())
}

/// A loadable module has `initstate` under /sys/module; a built-in one has
/// only its parameters there.
pub fn conntrack_is_module() -> Option<bool> {
    let dir = std::path::Path::new("/sys/module/nf_conntrack");
    if !dir.exists() {
        return None;
    }
    Some(dir.join("initstate").exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slabinfo_row_gives_objsize() {
        let text = "slabinfo - version: 2.1\n\
            # name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>\n\
            nf_conntrack_expect      0      0    256   16    1 : tunables    0    0    0\n\
            nf_conntrack         144    144    320   12    1 : tunables    0    0    0\n";
        assert_eq!(slabinfo_objsize(text), Some(320));
        assert_eq!(slabinfo_objsize("slabinfo - version: 2.1\n"), None);
    }

    #[test]
    fn this_machine_has_a_conntrack_slab() {
        // nf_conntrack is built in on the build machines (platform.md).
        if std::path::Path::new("/sys/kernel/slab/nf_conntrack").exists() {
            let bytes = read_objsize().expect("objsize");
            assert!((128..=1024).contains(&bytes), "{bytes}");
        }
    }
}
