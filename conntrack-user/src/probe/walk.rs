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
//! Kernels without `bpf_loop` (before 5.17) run the bounded-loop twins of
//! both programs in passes, and find the table from kallsyms'
//! `nf_conntrack_hash` (or the /proc iterator where nf_conntrack's BTF
//! gives its offsets): the entry locator is a `bpf_loop` too.
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
    BucketEntries, CHAIN_CAP, ChainNode, Config, HolderChunk, LIST_PASS_STEPS, Located, TableInfo,
    WALK_CHUNK, WALK_PASS_STEPS, WalkChunk, located,
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
/// Passes of the bounded chunk walk at most: as many steps as one
/// `walk_chunk` run's `bpf_loop` budget (conntrack-ebpf walk.rs).
const CHUNK_PASSES: u32 = (1 << 20) / WALK_PASS_STEPS;
/// Passes of the bounded listing at most: the whole chain cap.
const LIST_PASSES: u32 = CHAIN_CAP / LIST_PASS_STEPS + 2;
/// `Config` offsets the kernel has no BTF for (`config::ABSENT`).
const ABSENT: u32 = u32::MAX;

/// What selects the walker's programs and locators on this kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkKernel {
    /// No `bpf_loop` (before 5.17): the bounded-loop programs, run in
    /// passes, and no entry locator.
    pub bounded: bool,
    /// Addresses of `nf_conntrack_hash` and `nf_conntrack_htable_size`
    /// from kallsyms (data symbols, CONFIG_KALLSYMS_ALL); 0 if absent.
    pub hash_sym: u64,
    pub size_sym: u64,
}

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
    /// The walk and listing programs: `walk_chunk`/`walk_bucket`, or their
    /// bounded twins, which go in passes (`bounded`).
    chunk_prog: &'static str,
    bucket_prog: &'static str,
    bounded: bool,
    /// kallsyms' `nf_conntrack_hash` and `nf_conntrack_htable_size`, used
    /// by `locate_sym` when `from_symbol`.
    from_symbol: bool,
    hash_sym: u64,
    size_sym: u64,
}

impl TableWalker {
    /// Loads the walk and locator programs of an already loaded object.
    pub fn new(
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        cfg: &Config,
        locate: Locate,
        kernel: WalkKernel,
    ) -> Result<Self, ProbeError> {
        let (chunk_prog, bucket_prog) = if kernel.bounded {
            ("walk_chunk_bounded", "walk_bucket_bounded")
        } else {
            ("walk_chunk", "walk_bucket")
        };
        for name in [chunk_prog, bucket_prog] {
            let p: &mut RawTracePoint = program(ebpf, name)?;
            p.load()
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        let proc_file = std::path::Path::new("/proc/net/nf_conntrack").exists();
        let (seq_file, from_entries, from_symbol) = if kernel.bounded {
            // The entry locator follows chains with bpf_loop; the iterator
            // needs `struct ct_iter_state` from nf_conntrack's BTF (none on
            // 5.10, where modules publish no BTF).
            (
                locate != Locate::Entry
                    && proc_file
                    && cfg.iter_hash != ABSENT
                    && cfg.iter_size != ABSENT,
                false,
                locate == Locate::Auto && kernel.hash_sym != 0,
            )
        } else {
            (
                locate != Locate::Entry && proc_file,
                locate != Locate::Proc,
                false,
            )
        };
        if kernel.bounded && !seq_file && !from_symbol {
            return Err(ProbeError::Unsupported(format!(
                "without the bpf_loop helper (Linux 5.17 and later) the hash table is found \
                 through kallsyms' nf_conntrack_hash (a data symbol, listed with \
                 CONFIG_KALLSYMS_ALL{}) or the iterator of /proc/net/nf_conntrack (whose \
                 offsets need nf_conntrack's BTF), and neither is available here",
                if locate == Locate::Auto {
                    ""
                } else {
                    "; only with --locate auto"
                }
            )));
        }
        let mut locators = Vec::new();
        if seq_file || !kernel.bounded {
            locators.push(("locate_seq", "kfree"));
        }
        if !kernel.bounded {
            locators.push(("locate_skb", "consume_skb"));
        }
        for (name, tp) in locators {
            let p: &mut BtfTracePoint = program(ebpf, name)?;
            p.load(tp, btf)
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        if from_symbol {
            let p: &mut RawTracePoint = program(ebpf, "locate_sym")?;
            p.load().map_err(|source| ProbeError::Program {
                name: "locate_sym",
                source,
            })?;
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
            seq_file,
            from_entries,
            relocations: 0,
            entry_wait: ENTRY_WAIT,
            skb_link: None,
            chunk_prog,
            bucket_prog,
            bounded: kernel.bounded,
            from_symbol,
            hash_sym: kernel.hash_sym,
            size_sym: kernel.size_sym,
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
        let mut start = 0u32;
        while start < table.size {
            let count = WALK_CHUNK.min(table.size - start);
            let cpu0 = thread_cpu_ns();
            let args = [
                table.base,
                u64::from(table.size),
                u64::from(start),
                u64::from(count),
                u64::from(pass.holders.is_some()),
            ];
            let (name, passes) = (self.chunk_prog, self.passes(CHUNK_PASSES));
            run_passes(ebpf, name, &args, passes)?;
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
                located::SYMBOL => "kallsyms",
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
        let args = [base, u64::from(size), u64::from(bucket)];
        run_passes(ebpf, self.bucket_prog, &args, self.passes(LIST_PASSES))?;
        Ok(self.bucket_out.get(&0, 0)?)
    }

    /// Test runs of one walk: one for a `bpf_loop` program, up to `bounded`
    /// for a bounded one.
    fn passes(&self, bounded: u32) -> u32 {
        if self.bounded { bounded } else { 1 }
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

/// Runs program `name` with `args`, then, while it asks for another pass
/// (a bounded program writes 1 to `PASS_RESULT`) and fewer than `passes`
/// runs were made, again with one more argument, 1: resume where the last
/// pass stopped.
fn run_passes(
    ebpf: &mut Ebpf,
    name: &'static str,
    args: &[u64],
    passes: u32,
) -> Result<(), WalkError> {
    let mut resume = 0;
    for _ in 0..passes {
        let mut opts = RawTracePointRunOptions::new();
        opts.args[..args.len()].copy_from_slice(args);
        opts.args[args.len()] = resume;
        let prog: &mut RawTracePoint = program(ebpf, name)?;
        prog.test_run(opts)
            .map_err(|source| WalkError::Run { name, source })?;
        if passes == 1 || super::pass_result(ebpf)? != 1 {
            break;
        }
        resume = 1;
    }
    Ok(())
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
