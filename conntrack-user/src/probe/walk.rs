//! Finds the conntrack hash table, walks it in chunks with the `walk_chunk`
//! program, lists the entries of the hottest chains with `walk_bucket`, and
//! shares the validated address with the drop probe (`TABLE`).
//!
//! `nf_conntrack_hash` is a data symbol, missing from kallsyms on kernels
//! without CONFIG_KALLSYMS_ALL. Two locators find it (conntrack-ebpf
//! walk.rs): the iterator state of /proc/net/nf_conntrack, which ctscope
//! opens and closes itself (exact, works on an empty table, needs
//! CONFIG_NF_CONNTRACK_PROCFS), else a live entry carried by a packet (its
//! chain's nulls marker gives the bucket, `pprev` leads back to the head).
//! An address is used only after a walk in which every chain ended in its
//! own bucket's marker; a change of `nf_conntrack_buckets` (a resize moves
//! every entry to a new array) or a walk that fails that check makes the
//! walker find the table again.

use std::{
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{BtfTracePoint, RawTracePoint, RawTracePointRunOptions, TestRun as _},
};
use conntrack_common::{
    BucketEntries, ChainNode, Config, HolderChunk, Located, TableInfo, WALK_CHUNK, WalkChunk,
    located,
};

mod entries;
mod holders;
mod locate;

pub use entries::nearest_hz;
use entries::{addr, proto_name, tcp_state_names};

use super::{ProbeError, program, take_map};
use crate::{
    cli::Locate,
    kernel::{StatsSource, read_namespaces, sysctl::read_sysctl},
    model::{
        buckets::{BucketWalk, ChainEntry, HotBucket, summarize, warnings},
        holders::{HoldersBuilder, ROWS},
    },
};

/// How long a one-shot walk waits for a packet of a tracked flow when only
/// the entry locator can find the table.
pub const ENTRY_WAIT: Duration = Duration::from_secs(3);
/// Walks of one listing before its chain is reported as it was.
const LIST_TRIES: usize = 3;
/// Slices of the heat strip.
pub const HEAT_SLICES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(
        "could not find the conntrack hash table: /proc/net/nf_conntrack is not available \
         and no packet of a tracked flow was seen within {0:?}; retry while traffic flows"
    )]
    NotFound(Duration),
    #[error(
        "the conntrack hash table changed under every walk (chains that never ended in \
         their own bucket's marker); retry, or check for a resize loop"
    )]
    Unstable,
    #[error("reading net.netfilter.nf_conntrack_buckets: {0}")]
    Size(String),
    #[error("running eBPF program `{name}`: {source}")]
    Run {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the hash table walker could not be loaded on this kernel: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("reading an eBPF map: {0}")]
    Map(#[from] aya::maps::MapError),
}

impl WalkError {
    /// The machine, not ctscope, is at fault (exit status 2).
    pub fn is_environment(&self) -> bool {
        match self {
            Self::NotFound(_) | Self::Size(_) | Self::Unavailable(_) => true,
            Self::Probe(e) => e.is_environment(),
            _ => false,
        }
    }
}

/// A validated table address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Table {
    base: u64,
    size: u32,
    how: u32,
}

/// The raw result of walking every bucket once.
#[derive(Debug, Default)]
struct Pass {
    lens: Vec<u16>,
    nodes: u64,
    restarts: u64,
    unverified: u64,
    truncated: u64,
    cpu_ns: u64,
    /// Who holds the table, when the walk records it.
    holders: Option<HoldersBuilder>,
}

pub struct TableWalker {
    walk_out: Array<MapData, WalkChunk>,
    bucket_out: Array<MapData, BucketEntries>,
    holders_out: Array<MapData, HolderChunk>,
    /// Record the entries' holders in the next walks.
    holders: bool,
    tuple: holders::TupleOffsets,
    located: Array<MapData, Located>,
    shared: Array<MapData, TableInfo>,
    table: Option<Table>,
    /// The kernel's tick rate, measured once.
    hz: Option<u32>,
    /// `enum tcp_conntrack` names by value, from BTF.
    tcp_states: Vec<String>,
    chain_min: u32,
    seq_file: bool,
    from_entries: bool,
    /// Times the table had to be found again after the first time.
    relocations: u64,
    /// How long `walk` waits for the entry locator.
    entry_wait: Duration,
    /// The entry locator, while it is attached.
    skb_link: Option<aya::programs::tp_btf::BtfTracePointLinkId>,
}

impl TableWalker {
    /// Loads the walk and locator programs of an already loaded object.
    pub fn new(
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        cfg: &Config,
        locate: Locate,
    ) -> Result<Self, ProbeError> {
        for name in ["walk_chunk", "walk_bucket"] {
            let p: &mut RawTracePoint = program(ebpf, name)?;
            p.load()
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        for (name, tp) in [("locate_seq", "kfree"), ("locate_skb", "consume_skb")] {
            let p: &mut BtfTracePoint = program(ebpf, name)?;
            p.load(tp, btf)
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        Ok(Self {
            walk_out: Array::try_from(take_map(ebpf, "WALK_OUT")?)?,
            bucket_out: Array::try_from(take_map(ebpf, "BUCKET_OUT")?)?,
            holders_out: Array::try_from(take_map(ebpf, "HOLDERS_OUT")?)?,
            holders: false,
            tuple: holders::TupleOffsets::from_config(cfg),
            located: Array::try_from(take_map(ebpf, "LOCATED")?)?,
            shared: Array::try_from(take_map(ebpf, "TABLE")?)?,
            table: None,
            hz: None,
            tcp_states: tcp_state_names(),
            chain_min: cfg.chain_min,
            seq_file: locate != Locate::Entry
                && std::path::Path::new("/proc/net/nf_conntrack").exists(),
            from_entries: locate != Locate::Proc,
            relocations: 0,
            entry_wait: ENTRY_WAIT,
            skb_link: None,
        })
    }

    /// Whether walks also find who holds the table (`BucketWalk::holders`).
    pub fn set_holders(&mut self, on: bool) {
        self.holders = on;
    }

    /// How long a walk waits for a packet of a tracked flow to lead to the
    /// table (when the proc iterator is not available). Zero for a live run:
    /// the locator stays attached and a later walk finds what it saw.
    pub fn set_entry_wait(&mut self, wait: Duration) {
        self.entry_wait = wait;
    }

    /// One full walk: finds (or re-checks) the table, walks every bucket,
    /// lists the entries of the `top` longest chains.
    pub fn walk(
        &mut self,
        ebpf: &mut Ebpf,
        settings: &mut Array<MapData, u32>,
        top: usize,
    ) -> Result<BucketWalk, WalkError> {
        // Listed entries' timeouts are in jiffies; HZ is measured once, and
        // not as part of the walk's cost.
        if (top > 0 || self.holders) && self.hz.is_none() {
            self.hz = Some(self.measure_hz(ebpf)?);
        }
        let started = Instant::now();
        for _attempt in 0..3 {
            let size = buckets_sysctl()?;
            if self.table.is_some_and(|t| t.size != size) {
                self.forget()?;
            }
            let fresh = self.table.is_none();
            if fresh {
                self.table = self.locate(ebpf, settings, size)?;
            }
            let Some(table) = self.table else {
                // Nothing led to the table. If no namespace holds an entry,
                // the table is empty: that needs no address.
                if total_entries() == 0 {
                    let mut walk = BucketWalk::empty(u64::from(size));
                    walk.duration_ns = started.elapsed().as_nanos() as u64;
                    walk.ts_ms = wall_ms();
                    walk.chain_limit = self.chain_min;
                    if self.holders {
                        walk.holders = Some(HoldersBuilder::default().finish(ROWS, &[]));
                    }
                    return Ok(walk);
                }
                return Err(WalkError::NotFound(self.entry_wait));
            };
            let pass = self.pass(ebpf, table)?;
            let size_after = buckets_sysctl()?;
            let empty_but_counted = pass.nodes == 0 && !fresh && total_entries() > 0;
            if pass.unverified > 0 || size_after != table.size || empty_but_counted {
                // Resized, freed, or never the table: find it again.
                self.forget()?;
                continue;
            }
            let mut walk = self.assemble(ebpf, table, &pass, top)?;
            walk.duration_ns = started.elapsed().as_nanos() as u64;
            self.shared.set(
                0,
                TableInfo {
                    base: table.base,
                    size: table.size,
                    max_chain: walk.max,
                },
                0,
            )?;
            return Ok(walk);
        }
        Err(WalkError::Unstable)
    }

    /// Drops the current address (and the drop probe's copy).
    fn forget(&mut self) -> Result<(), WalkError> {
        if self.table.take().is_some() {
            self.relocations += 1;
        }
        self.shared.set(0, TableInfo::default(), 0)?;
        Ok(())
    }

    /// Walks every bucket once, in chunks.
    fn pass(&mut self, ebpf: &mut Ebpf, table: Table) -> Result<Pass, WalkError> {
        let mut pass = Pass {
            lens: Vec::with_capacity(table.size as usize),
            holders: self.holders.then(HoldersBuilder::default),
            ..Pass::default()
        };
        let hz = self.hz.unwrap_or(0);
        let prog: &mut RawTracePoint = program(ebpf, "walk_chunk")?;
        let mut start = 0u32;
        while start < table.size {
            let count = WALK_CHUNK.min(table.size - start);
            let mut opts = RawTracePointRunOptions::new();
            opts.args[..5].copy_from_slice(&[
                table.base,
                u64::from(table.size),
                u64::from(start),
                u64::from(count),
                u64::from(pass.holders.is_some()),
            ]);
            let cpu0 = thread_cpu_ns();
            prog.test_run(opts).map_err(|source| WalkError::Run {
                name: "walk_chunk",
                source,
            })?;
            let chunk = self.walk_out.get(&0, 0)?;
            let mut done = chunk.done.min(count);
            if chunk.start != start || done == 0 {
                // No progress: not a table the walker can read.
                pass.unverified += 1;
                return Ok(pass);
            }
            if let Some(b) = &mut pass.holders {
                done = holders::take(&self.holders_out, &self.tuple, hz, done, b)?;
            }
            // Decoding and counting the holders is part of the walk's cost.
            pass.cpu_ns += thread_cpu_ns().saturating_sub(cpu0);
            let lens = &chunk.lens[..done as usize];
            pass.lens.extend_from_slice(lens);
            // From the lengths: a chunk cut short by its iteration budget
            // also counted chains beyond `done`, which the next run walks again.
            pass.nodes += lens.iter().map(|&l| u64::from(l)).sum::<u64>();
            pass.restarts += u64::from(chunk.restarts);
            pass.unverified += u64::from(chunk.unverified);
            pass.truncated += u64::from(chunk.truncated);
            start += done;
        }
        Ok(pass)
    }

    fn assemble(
        &mut self,
        ebpf: &mut Ebpf,
        table: Table,
        pass: &Pass,
        top: usize,
    ) -> Result<BucketWalk, WalkError> {
        let summary = summarize(&pass.lens, top, HEAT_SLICES);
        let mut hottest = Vec::new();
        let hz = self.hz.unwrap_or(0);
        for &(index, len) in &summary.hottest {
            if len == 0 {
                break;
            }
            let entries = self.list(ebpf, table, index as u32, hz)?;
            hottest.push(HotBucket {
                index,
                len,
                entries,
            });
        }
        let mut walk = BucketWalk {
            ts_ms: wall_ms(),
            buckets: u64::from(table.size),
            entries: pass.nodes / 2,
            nodes: pass.nodes,
            histogram: summary.histogram,
            mean: summary.mean,
            mean_nonempty: summary.mean_nonempty,
            max: summary.max,
            p99: summary.p99,
            hottest,
            heat: summary.heat,
            duration_ns: 0,
            cpu_ns: pass.cpu_ns,
            restarts: pass.restarts,
            warnings: Vec::new(),
            located_by: match table.how {
                located::SEQ_FILE => "seq_file",
                _ => "entry",
            }
            .to_owned(),
            relocations: self.relocations,
            truncated: pass.truncated,
            chain_limit: self.chain_min,
            holders: pass
                .holders
                .as_ref()
                .map(|b| b.finish(ROWS, &self.tcp_states)),
        };
        walk.warnings = warnings(&walk);
        Ok(walk)
    }

    /// The entries on one chain, walked again until it ends in its own
    /// marker (entries move while ctscope looks).
    fn list(
        &mut self,
        ebpf: &mut Ebpf,
        table: Table,
        bucket: u32,
        hz: u32,
    ) -> Result<Vec<ChainEntry>, WalkError> {
        let mut out = self.run_bucket(ebpf, table.base, table.size, bucket)?;
        for _ in 1..LIST_TRIES {
            if out.verified != 0 {
                break;
            }
            out = self.run_bucket(ebpf, table.base, table.size, bucket)?;
        }
        let listed = (out.listed as usize).min(out.nodes.len());
        Ok(out.nodes[..listed]
            .iter()
            .map(|n| self.entry(n, out.jiffies, hz))
            .collect())
    }

    fn run_bucket(
        &mut self,
        ebpf: &mut Ebpf,
        base: u64,
        size: u32,
        bucket: u32,
    ) -> Result<BucketEntries, WalkError> {
        let prog: &mut RawTracePoint = program(ebpf, "walk_bucket")?;
        let mut opts = RawTracePointRunOptions::new();
        opts.args[..3].copy_from_slice(&[base, u64::from(size), u64::from(bucket)]);
        prog.test_run(opts).map_err(|source| WalkError::Run {
            name: "walk_bucket",
            source,
        })?;
        Ok(self.bucket_out.get(&0, 0)?)
    }

    fn entry(&self, n: &ChainNode, jiffies: u64, hz: u32) -> ChainEntry {
        let t = &n.tuple;
        let (src, dst) = (addr(t.family, &t.src), addr(t.family, &t.dst));
        // nf_ct_expires(): the timeout of a confirmed entry is absolute, in
        // the low 32 bits of jiffies (nfct_time_stamp).
        let left = n.timeout.wrapping_sub(jiffies as u32) as i32;
        let state = if t.proto == 6 {
            self.tcp_states
                .get(usize::from(n.tcp_state))
                .cloned()
                .unwrap_or_else(|| n.tcp_state.to_string())
        } else {
            String::new()
        };
        ChainEntry {
            direction: if n.dir == 0 { "original" } else { "reply" }.to_owned(),
            proto: proto_name(t.proto),
            src,
            sport: t.sport,
            dst,
            dport: t.dport,
            state,
            netns: n.netns,
            timeout_s: i64::from(left) / i64::from(hz.max(1)),
            zone: n.zone,
            mark: n.mark,
        }
    }

    /// The kernel's HZ: jiffies counted against CLOCK_MONOTONIC over 200 ms,
    /// rounded to the nearest value Kconfig offers (kernel/Kconfig.hz).
    fn measure_hz(&mut self, ebpf: &mut Ebpf) -> Result<u32, WalkError> {
        let a = self.run_bucket(ebpf, 0, 0, 0)?;
        thread::sleep(Duration::from_millis(200));
        let b = self.run_bucket(ebpf, 0, 0, 0)?;
        let secs = b.ktime_ns.saturating_sub(a.ktime_ns) as f64 / 1e9;
        let rate = b.jiffies.saturating_sub(a.jiffies) as f64 / secs.max(1e-3);
        Ok(nearest_hz(rate))
    }
}

fn buckets_sysctl() -> Result<u32, WalkError> {
    match read_sysctl("nf_conntrack_buckets") {
        Ok(Some(v)) => u32::try_from(v).map_err(|_| WalkError::Size(format!("{v} is too large"))),
        Ok(None) => Err(WalkError::Size("the sysctl does not exist".into())),
        Err(e) => Err(WalkError::Size(e.to_string())),
    }
}

/// Entries the kernel counts over every namespace ctscope can enter
/// (`nf_conntrack_count`; includes entries not yet inserted).
fn total_entries() -> u64 {
    read_namespaces(StatsSource::Auto)
        .iter()
        .filter_map(|r| r.count)
        .sum()
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
