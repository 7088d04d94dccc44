//! Live capture: owns the probes, drains the ring buffer, completes
//! allocation events (resolve.rs), and takes a [`Sample`] every interval,
//! with per-namespace counts derived from the kernel's readings (netns.rs).
//! It only sends messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use conntrack_common::{AllocRecord, ChainNode, Event, counter, setting};
use tokio::{
    io::unix::AsyncFd,
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior, interval, interval_at},
};

use super::{
    netns::NetnsTracker,
    resolve::{AllocResolver, EntryReader},
};
use crate::{
    event::{Message, Sample},
    kernel::{
        netns::{OpenStats, StatsSource},
        sysctl::Sysctls,
    },
    model::buckets::BucketWalk,
    probe::{ProbeError, ProbeInfo, ProbeOptions, Probes, WalkError},
};

/// How often the ring buffer is drained: the probes wake the reader only
/// once the ring is an eighth full (conntrack-ebpf maps.rs `wake_flag`), so
/// a busy machine pays no wake-up per event. At 25 ms, even 500k events/s
/// fill 1.6 MB of the 16 MiB ring between two drains.
const POLL_EVERY: Duration = Duration::from_millis(25);
/// How often held allocation events are completed (resolve.rs).
const RESOLVE_EVERY: Duration = Duration::from_millis(100);
/// Events sent to the model in one message at most.
const BATCH: usize = 4096;
/// How often the hash table is walked when no one asked for bucket
/// statistics: the drop probe needs its validated address and the latest
/// longest chain to tell chain-too-long insert failures (probe/walk.rs).
const TRACK_TABLE_EVERY: Duration = Duration::from_secs(5);
/// The share of one core that table walks may take in live modes: after a
/// walk that took `t`, the next waits at least `t / WALK_BUDGET` (a 1M-entry
/// table walked in ~0.35 s is then walked every ~7 s, a 10k-entry one at
/// every sample). Between walks the model keeps the latest one.
pub const WALK_BUDGET: f64 = 0.05;
/// The walks' share while recording: `record` already spends most of its CPU
/// completing and writing every allocation event, and a trace's bucket and
/// holder snapshots are studied later, not watched. With holders a walk
/// costs ~0.4 µs of CPU per node (docs/holders.md): a table of 200k entries
/// is then walked about every 10 s, one of 1M about every 75 s.
pub const RECORD_WALK_BUDGET: f64 = 0.02;

#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub probe: ProbeOptions,
    pub sample_every: Duration,
    pub kernel_stats: StatsSource,
    /// Event classes to stream (`setting::EVENTS_*`); counters are always on.
    pub events: u32,
    /// Walk the hash table before every sample and send the walk, listing
    /// the entries of this many of the longest chains.
    pub buckets: Option<usize>,
    /// Those walks also find who holds the table (`BucketWalk::holders`);
    /// their cost counts in the walks' budget.
    pub holders: bool,
    /// Share of one core the walks may take ([`WALK_BUDGET`] or
    /// [`RECORD_WALK_BUDGET`]).
    pub walk_budget: f64,
}

enum Control {
    SampleNow,
    Setting(u32, u32),
    Stop,
}

pub struct LiveSource {
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<anyhow::Result<()>>,
    pub info: ProbeInfo,
}

impl LiveSource {
    /// Attaches the probes (errors come back before anything runs), sends
    /// the baseline sample the first interval is measured from, then keeps
    /// sending to `out`. When this returns, everything from now on is counted.
    pub async fn start(opts: LiveOptions, out: mpsc::Sender<Message>) -> anyhow::Result<Self> {
        let mut probes = Probes::attach(&opts.probe)?;
        probes.set_setting(setting::EVENTS, opts.events)?;
        probes.set_ct_events(opts.events & setting::EVENTS_CT != 0)?;
        let mut ring = probes
            .take_events()
            .ok_or(ProbeError::MissingMap("EVENTS"))?;
        let info = probes.info.clone();
        // Find the hash table before anything is counted, so the drop probe
        // can tell chain-too-long failures from the first packet on.
        let mut walker = WalkState {
            failing: false,
            not_before: None,
            budget: opts.walk_budget.clamp(0.001, 1.0),
        };
        if let Some(walk) = walker.walk(&mut probes, opts.buckets.unwrap_or(0), opts.holders)
            && opts.buckets.is_some()
        {
            let _ = out.send(Message::Buckets(Box::new(walk))).await;
        }
        let mut state = State {
            tracker: NetnsTracker::new(opts.probe.count),
            resolver: AllocResolver::default(),
            open_stats: OpenStats::default(),
        };
        sample(&mut probes, &mut ring, &mut state, &opts, &out).await?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(probes, ring, opts, out, control_rx, walker, state));
        Ok(Self {
            control,
            task,
            info,
        })
    }

    /// Asks for a sample now (the end of a `--duration`).
    pub fn sample_now(&self) {
        let _ = self.control.send(Control::SampleNow);
    }

    /// Changes a probe setting (`conntrack_common::setting`) while running.
    pub fn set(&self, index: u32, value: u32) {
        let _ = self.control.send(Control::Setting(index, value));
    }

    /// Stops capture; the probes detach when the task drops them.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.control.send(Control::Stop);
        self.task.await.context("the capture task panicked")?
    }
}

/// What the capture task keeps between messages.
struct State {
    tracker: NetnsTracker,
    resolver: AllocResolver,
    /// Namespaces' stat files kept open between samples (kernel/netns.rs).
    open_stats: OpenStats,
}

/// The probes as the resolver's reader of entries.
struct ProbeReader<'a>(&'a mut Probes);

impl EntryReader for ProbeReader<'_> {
    fn read(&mut self, cts: &[u64]) -> anyhow::Result<(u64, Vec<(u64, ChainNode)>)> {
        Ok(self.0.resolve_entries(cts)?)
    }
}

async fn run(
    mut probes: Probes,
    ring: RingBuf<MapData>,
    opts: LiveOptions,
    out: mpsc::Sender<Message>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut walker: WalkState,
    mut state: State,
) -> anyhow::Result<()> {
    // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as
    // long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(std::io::Error::from)
        .context("polling the event ring buffer")?;
    let mut poll = interval(POLL_EVERY);
    poll.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut resolve = interval(RESOLVE_EVERY);
    resolve.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tick = interval_at(Instant::now() + opts.sample_every, opts.sample_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut track = interval_at(Instant::now() + TRACK_TABLE_EVERY, TRACK_TABLE_EVERY);
    track.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            ctl = control.recv() => match ctl {
                Some(Control::SampleNow) => {
                    if !sample(&mut probes, ring.get_mut(), &mut state, &opts, &out).await? {
                        return Ok(());
                    }
                }
                Some(Control::Setting(index, value)) => {
                    probes.set_setting(index, value)?;
                    if index == setting::EVENTS {
                        probes.set_ct_events(value & setting::EVENTS_CT != 0)?;
                    }
                }
                Some(Control::Stop) | None => {
                    // Allocation events still held go out before the end.
                    drain(ring.get_mut(), &mut state.resolver, &out).await;
                    let rest = state.resolver.flush(&mut ProbeReader(&mut probes));
                    if !rest.is_empty() {
                        let _ = out.send(Message::Events(rest)).await;
                    }
                    return Ok(());
                }
            },
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the event ring buffer")?;
                let open = drain(guard.get_inner_mut(), &mut state.resolver, &out).await;
                guard.clear_ready();
                if !open {
                    return Ok(());
                }
            }
            _ = poll.tick() => {
                if !drain(ring.get_mut(), &mut state.resolver, &out).await {
                    return Ok(());
                }
            }
            _ = resolve.tick(), if !state.resolver.is_empty() => {
                let ready = state.resolver.round(monotonic_ns(), &mut ProbeReader(&mut probes))?;
                if !ready.is_empty() && out.send(Message::Events(ready)).await.is_err() {
                    return Ok(());
                }
            }
            _ = track.tick(), if opts.buckets.is_none() && walker.due() => {
                walker.walk(&mut probes, 0, false);
            }
            _ = tick.tick() => {
                if let Some(top) = opts.buckets
                    && walker.due()
                    && let Some(walk) = walker.walk(&mut probes, top, opts.holders)
                    && out.send(Message::Buckets(Box::new(walk))).await.is_err()
                {
                    return Ok(());
                }
                if !sample(&mut probes, ring.get_mut(), &mut state, &opts, &out).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// Runs hash table walks, no more often than the walk budget allows, and
/// reports a failing walker once, not every interval: counting goes on
/// without it.
struct WalkState {
    failing: bool,
    /// No walk before this instant.
    not_before: Option<std::time::Instant>,
    /// Share of one core the walks may take.
    budget: f64,
}

impl WalkState {
    fn due(&self) -> bool {
        self.not_before
            .is_none_or(|t| std::time::Instant::now() >= t)
    }

    fn walk(&mut self, probes: &mut Probes, top: usize, holders: bool) -> Option<BucketWalk> {
        let start = std::time::Instant::now();
        // BPF_PROG_TEST_RUN runs the walk on this thread; with holders, the
        // decoding and counting too, so the pacing below includes them.
        let result = tokio::task::block_in_place(|| probes.walk_buckets_with(top, holders));
        self.not_before = Some(start + start.elapsed().div_f64(self.budget));
        match result {
            Ok(walk) => {
                self.failing = false;
                Some(walk)
            }
            // Not found yet: the entry locator stays attached and a later
            // walk picks up what it saw; nothing to report.
            Err(WalkError::NotFound(_)) => None,
            // Said once when the probes loaded.
            Err(WalkError::Unavailable(_)) => None,
            Err(e) => {
                if !self.failing {
                    eprintln!("ctscope: walking the conntrack hash table: {e}");
                }
                self.failing = true;
                None
            }
        }
    }
}

/// Reads everything counted, after flushing the events that precede it.
/// Returns false once the receiver is gone.
async fn sample(
    probes: &mut Probes,
    ring: &mut RingBuf<MapData>,
    state: &mut State,
    opts: &LiveOptions,
    out: &mpsc::Sender<Message>,
) -> anyhow::Result<bool> {
    let source = opts.kernel_stats;
    let open = std::mem::take(&mut state.open_stats);
    let (kernel, open) = tokio::task::spawn_blocking(move || open.read(source))
        .await
        .context("reading the kernel's conntrack counters")?;
    state.open_stats = open;
    let sysctls = Sysctls::read();
    if !drain(ring, &mut state.resolver, out).await {
        return Ok(false);
    }
    // The probes' counters, then the live counts, back to back: the
    // allocations derived from them are short by the frees in between at
    // most, and only until the next sample (netns.rs).
    let mut counters = probes.counters()?;
    let per_netns = probes.netns_counters()?;
    let list = probes.sample_netns()?;
    let mono_ns = monotonic_ns();
    let reading = state.tracker.update(&list, &per_netns, mono_ns);
    for key in &reading.retired {
        probes.forget_netns(*key)?;
    }
    if opts.probe.count {
        counters.0[counter::ALLOC as usize] = state.tracker.total_alloc();
    }
    counters.0[counter::UNRESOLVED as usize] = state.resolver.unresolved;
    let sample = Sample {
        mono_ns,
        wall_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        counters,
        netns: reading.rows,
        kernel,
        sysctls,
    };
    Ok(out.send(Message::Sample(Box::new(sample))).await.is_ok())
}

/// Moves every event in the ring buffer to the model, holding allocation
/// events until they are complete. Returns false once the receiver is gone.
async fn drain(
    ring: &mut RingBuf<MapData>,
    resolver: &mut AllocResolver,
    out: &mpsc::Sender<Message>,
) -> bool {
    loop {
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some(item) = ring.next() else { break };
            if let Some(ev) = parse_event(&item) {
                batch.push(ev);
            }
        }
        if batch.is_empty() {
            return true;
        }
        let full = batch.len() == BATCH;
        let ready = resolver.push(batch);
        if !ready.is_empty() && out.send(Message::Events(ready)).await.is_err() {
            return false;
        }
        if !full {
            return true;
        }
    }
}

/// A ring record: an [`Event`], or the tracepoint backend's short
/// [`AllocRecord`] of an allocation (told apart by length). `None` for a
/// record of neither size, which the eBPF side never writes.
fn parse_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() == std::mem::size_of::<AllocRecord>() {
        // SAFETY: AllocRecord is plain old data of this size; the read is
        // unaligned-safe.
        let rec = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<AllocRecord>()) };
        return Some(rec.event());
    }
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: Event is plain old data of this size; the read is unaligned-safe.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use conntrack_common::{AllocRecord, Event, kind};

    use super::parse_event;

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-old-data value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn short_allocation_records_become_allocation_events() {
        let rec = AllocRecord {
            ct: 0xffff_8880_1234_5600,
            ts_ns: 42,
            cpu: 3,
            _pad: 0,
        };
        let ev = parse_event(&bytes(&rec)).expect("a short record parses");
        assert_eq!(ev.kind, kind::ALLOC);
        assert_eq!(
            (ev.ct, ev.ts_ns, ev.alloc_ts_ns, ev.cpu),
            (rec.ct, 42, 42, 3)
        );
        assert_eq!(ev.flags, 0, "not complete: the resolver must read it");
    }

    #[test]
    fn whole_events_parse_and_odd_sizes_do_not() {
        let ev = Event {
            kind: kind::FREE,
            ct: 7,
            ..Event::default()
        };
        assert_eq!(parse_event(&bytes(&ev)), Some(ev));
        assert_eq!(parse_event(&[0u8; 16]), None);
        assert_eq!(parse_event(&[0u8; 100]), None);
    }
}
