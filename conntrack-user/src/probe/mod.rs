//! Loads and attaches the eBPF programs, and reads what they collect.
//!
//! Start-up is two loads of the same object: the first runs the discovery
//! programs (find the `nf_conntrack` slab and `struct nf_conntrack_net`, whose
//! addresses are not in kallsyms), the second bakes what they found into the
//! read-only `CONFIG` so the hot probes compare against constants. All links
//! are owned by this process and nothing is pinned, so the kernel detaches
//! everything when ctscope exits, however it exits (SIGKILL included).

pub mod backend;
pub mod config;
mod error;
pub mod features;
mod kprobes;
mod progstats;
pub mod walk;

use std::{
    thread,
    time::{Duration, Instant},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        BtfTracePoint, RawTracePoint, RawTracePointRunOptions, TestRun as _,
        tp_btf::BtfTracePointLinkId,
    },
};
use conntrack_common::{
    ChainNode, Config, Discovery, NetnsCounters, NetnsList, RESOLVE_BATCH, ResolveBatch,
    SysctlSlot, counter,
};
pub use error::ProbeError;
pub use walk::WalkError;

use self::backend::{Backend, BackendRequest, Choice, KernelSymbols};
use crate::{
    btf::KernelBtf, event::Counters, kallsyms::Kallsyms, model::buckets::BucketWalk,
    probe::walk::TableWalker,
};

/// The eBPF object built by build.rs from conntrack-ebpf.
pub static EBPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/conntrack.bpf.o"));
/// Fingerprint of [`EBPF_OBJECT`], shown by `--version`.
pub const EBPF_BUILD_ID: &str = env!("CTSCOPE_EBPF_BUILD_ID");

/// The hot probes of the tracepoint backend: (program, tracepoint, the
/// do-nothing program on the same hook for `--floor`). One program per
/// hook: each runs for every object of the machine's slabs (or every freed
/// packet), and its dispatch is most of what it costs.
const ALLOC_PROBE: (&str, &str, &str) = ("ct_alloc", "kmem_cache_alloc", "noop_alloc");
const FREE_PROBE: (&str, &str, &str) = ("ct_free", "kmem_cache_free", "noop_free");
const DROP_PROBE: (&str, &str, &str) = ("ct_drop", "kfree_skb", "noop_drop");
/// The drop probe of kernels without drop reasons (before 5.17): a
/// netfilter drop is a packet freed by `nf_hook_slow` (legacy.rs).
const DROP_PROBE_LOC: (&str, &str, &str) = ("ct_drop_loc", "kfree_skb", "noop_drop");

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// `--backend`.
    pub backend: BackendRequest,
    /// Count frees per namespace (the slab free hook), from which
    /// allocations are derived: every mode that reports counts. The
    /// allocation hook is attached only while allocation events are wanted
    /// ([`Probes::set_ct_events`]).
    pub count: bool,
    /// Classify and count drops (the `kfree_skb` hook).
    pub drops: bool,
    /// Attach programs that return at once instead of the real ones, to the
    /// same hooks (`--floor`: what the dispatch alone costs).
    pub floor: bool,
    /// How the walker finds the hash table.
    pub locate: crate::cli::Locate,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            ring_bytes: 16 << 20,
            backend: BackendRequest::Auto,
            count: true,
            drops: true,
            floor: false,
            locate: crate::cli::Locate::Auto,
        }
    }
}

impl ProbeOptions {
    /// Whether any probe is attached (`ctscope buckets` loads only the
    /// walker).
    pub fn hot(&self) -> bool {
        self.count || self.drops
    }
}

/// What start-up found, for headers and `doctor`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeInfo {
    pub backend: &'static str,
    /// Why that backend (and which kprobe hooks fell back).
    pub backend_reason: String,
    pub kernel: String,
    pub ct_cache: u64,
    pub cnet_id: u32,
    /// Whether drops can be checked against the namespace's live count.
    pub table_full_exact: bool,
    /// Whether nftables rule drops can be told apart by their location.
    pub rule_location_known: bool,
    pub caches_walked: u32,
    /// What the kernel offers that selects programs (issue 16).
    pub features: features::KernelFeatures,
}

pub struct Probes {
    ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    netns: PerCpuHashMap<MapData, u64, NetnsCounters>,
    netns_list: Array<MapData, NetnsList>,
    resolve: Array<MapData, ResolveBatch>,
    settings: Array<MapData, u32>,
    /// Programs whose recursion misses are losses: every attached probe.
    hot: Vec<&'static str>,
    /// The allocation probe's link while it is attached, and the program
    /// attached (the real one, or the do-nothing one with `--floor`).
    alloc_link: Option<(&'static str, BtfTracePointLinkId)>,
    /// Whether the allocation probe may be attached at all: the tracepoint
    /// backend counting (the kprobe backend has its own).
    alloc_hook: Option<&'static str>,
    /// `Err` when the walker could not be loaded on this kernel: live runs
    /// go on without bucket walks (and without chain_too_long).
    walker: Result<TableWalker, String>,
    /// The namespace sampler loaded: `sample_netns`, or its bounded-loop
    /// twin on kernels without `bpf_loop`.
    sample_prog: &'static str,
    pub info: ProbeInfo,
}

impl Probes {
    /// Checks the environment, discovers addresses, loads and attaches.
    pub fn attach(opts: &ProbeOptions) -> Result<Self, ProbeError> {
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        preflight()?;
        let choice = backend::choose(opts.backend)?;
        match Self::attach_with(opts, &choice) {
            Err(e) if opts.backend == BackendRequest::Auto && kprobes::is_refusal(&e) => {
                let fallback = Choice {
                    backend: Backend::Tracepoint,
                    hooks: 0,
                    reason: format!("the kernel refused a kprobe ({e})"),
                };
                Self::attach_with(opts, &fallback)
            }
            other => other,
        }
    }

    fn attach_with(opts: &ProbeOptions, choice: &Choice) -> Result<Self, ProbeError> {
        eprintln!(
            "ctscope: using the {} backend: {}",
            choice.backend.name(),
            choice.reason
        );
        let kernel_btf = KernelBtf::load()?;
        let syms = Kallsyms::load()?;
        let ncpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))? as u32;
        let mut cfg = config::from_btf(&kernel_btf, ncpus)?;
        config::add_symbols(&mut cfg, &syms);
        let kernel_syms = KernelSymbols::load().unwrap_or_default();
        kprobes::configure(&mut cfg, &kernel_btf, choice, Some(&kernel_syms))?;
        let aya_btf = Btf::from_sys_fs().map_err(ProbeError::AyaBtf)?;
        let feats = features::KernelFeatures::from_btf(&kernel_btf);
        // The kprobes on conntrack's own functions replace the slab hooks.
        let kp_alloc = choice.hooks & conntrack_common::kprobe_hook::ALLOC != 0;
        let kp_free = choice.hooks & conntrack_common::kprobe_hook::FREE != 0;
        if opts.count && !(kp_alloc && kp_free) {
            feats.tracepoint_counting().map_err(|why| {
                ProbeError::Unsupported(format!(
                    "{why}. Use --backend kprobe (this kernel's conntrack functions must be \
                     probeable: `ctscope doctor` says)"
                ))
            })?;
        }
        if opts.drops && !feats.drop_reasons && cfg.loc_hook_lo == 0 {
            return Err(ProbeError::Unsupported(
                "this kernel's kfree_skb tracepoint has no drop reason, and nf_hook_slow is \
                 not in /proc/kallsyms, so netfilter's drops cannot be told from other freed \
                 packets"
                    .into(),
            ));
        }

        let found = if feats.bpf_loop {
            discover(&cfg, &aya_btf)?
        } else {
            // The discovery programs need bpf_loop. Without it (before
            // 5.17) the kprobe backend needs no slab address, the count is
            // in `struct net` (cnet_in_net), and the sysctls' addresses are
            // data symbols in kallsyms (CONFIG_KALLSYMS_ALL, as on Debian).
            Found {
                // SAFETY: Discovery is plain old data: all zeroes is valid.
                discovery: unsafe { std::mem::zeroed() },
                max_ptr: kernel_syms.max_ptr,
                size_ptr: kernel_syms.size_ptr,
            }
        };
        cfg.ct_cache = found.discovery.ct_cache;
        cfg.cnet_id = found.discovery.cnet_id;
        cfg.max_ptr = found.max_ptr;
        cfg.size_ptr = found.size_ptr;

        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&aya_btf))
            .override_global("CONFIG", &cfg, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("BUCKETS", kprobes::buckets_size(choice))
            .map_max_entries("INSERTED", kprobes::inserted_size(choice));
        if !opts.hot() {
            // The walker alone needs none of the event maps' room.
            loader.map_max_entries("NETNS", 1);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(ProbeError::Load)?;
        let mut hot: Vec<&'static str> = if opts.hot() && !opts.floor {
            kprobes::programs(choice).collect()
        } else {
            Vec::new()
        };
        let pick = |(real, tracepoint, noop): (&'static str, &'static str, &'static str)| {
            (if opts.floor { noop } else { real }, tracepoint)
        };
        let mut attach_now = Vec::new();
        if opts.count && !kp_free {
            attach_now.push(pick(FREE_PROBE));
        }
        if opts.drops {
            attach_now.push(pick(if feats.drop_reasons {
                DROP_PROBE
            } else {
                DROP_PROBE_LOC
            }));
        }
        for (name, tracepoint) in attach_now {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            prog.load(tracepoint, &aya_btf)
                .map_err(|source| ProbeError::Program { name, source })?;
            prog.attach()
                .map_err(|source| ProbeError::Attach { name, source })?;
            hot.push(name);
        }
        let alloc_hook = (opts.count && !kp_alloc).then(|| {
            let (name, _) = pick(ALLOC_PROBE);
            name
        });
        if let Some(name) = alloc_hook {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            prog.load(ALLOC_PROBE.1, &aya_btf)
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        if opts.hot() && !opts.floor {
            kprobes::attach(&mut ebpf, choice, &kernel_syms)?;
        }
        // Without bpf_loop: the bounded sampler, and no resolver (it serves
        // only the slab allocation tracepoint, which such kernels cannot use).
        let sample_prog = if feats.bpf_loop {
            "sample_netns"
        } else {
            "sample_netns_bounded"
        };
        let mut runs = vec![sample_prog];
        if feats.bpf_loop {
            runs.push("resolve_ct");
        }
        for name in runs {
            let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?;
        let netns = PerCpuHashMap::try_from(take_map(&mut ebpf, "NETNS")?)?;
        let netns_list = Array::try_from(take_map(&mut ebpf, "NETNS_LIST")?)?;
        let resolve = Array::try_from(take_map(&mut ebpf, "RESOLVE")?)?;
        let settings = Array::try_from(take_map(&mut ebpf, "SETTINGS")?)?;
        // Without bpf_loop (before 5.17) the walker runs its bounded-loop
        // programs in passes and finds the table through kallsyms.
        let walker = TableWalker::new(
            &mut ebpf,
            &aya_btf,
            &cfg,
            opts.locate,
            walk::WalkKernel {
                bounded: !feats.bpf_loop,
                hash_sym: kernel_syms.hash_ptr,
                size_sym: kernel_syms.size_ptr,
            },
        );
        let walker = match walker {
            Ok(mut walker) => {
                if opts.hot() {
                    // A live run walks again and again; it must not block on traffic.
                    walker.set_entry_wait(std::time::Duration::ZERO);
                }
                Ok(walker)
            }
            // Counting and drops do not need the walker; `ctscope buckets`
            // reports the error when it walks.
            Err(e) if opts.hot() => {
                eprintln!("ctscope: no hash table walks on this kernel: {e}");
                Err(e.to_string())
            }
            Err(e) => return Err(e),
        };
        let info = ProbeInfo {
            backend: choice.backend.name(),
            backend_reason: choice.reason.clone(),
            kernel: kernel_release(),
            ct_cache: cfg.ct_cache,
            cnet_id: cfg.cnet_id,
            table_full_exact: (cfg.cnet_id != 0 || cfg.cnet_in_net != 0) && cfg.max_ptr != 0,
            rule_location_known: cfg.loc_nft_lo != 0,
            caches_walked: found.discovery.caches_walked,
            features: feats,
        };
        Ok(Self {
            ebpf,
            events: Some(events),
            counters,
            netns,
            netns_list,
            resolve,
            settings,
            hot,
            alloc_link: None,
            alloc_hook,
            walker,
            sample_prog,
            info,
        })
    }

    /// Walks the conntrack hash table once (see [`walk`]) and lists the
    /// entries of the `top` longest chains. Blocks for the walk's length.
    pub fn walk_buckets(&mut self, top: usize) -> Result<BucketWalk, WalkError> {
        self.walk_buckets_with(top, false)
    }

    /// [`Self::walk_buckets`], with the table's holders when `holders` is
    /// set (`BucketWalk::holders`; the walk reads a little more per entry).
    pub fn walk_buckets_with(
        &mut self,
        top: usize,
        holders: bool,
    ) -> Result<BucketWalk, WalkError> {
        if let Ok(walker) = &mut self.walker {
            walker.set_holders(holders);
        }
        match &mut self.walker {
            Ok(walker) => walker.walk(&mut self.ebpf, &mut self.settings, top),
            Err(e) => Err(WalkError::Unavailable(e.clone())),
        }
    }

    /// Hands the ring buffer to the task that polls it.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Attaches the allocation probe while allocation events are wanted,
    /// and detaches it when they are not: counting derives allocations
    /// from frees and the live counts, so the probe on every slab
    /// allocation of the machine is paid only while recording.
    pub fn set_ct_events(&mut self, on: bool) -> Result<(), ProbeError> {
        let Some(name) = self.alloc_hook else {
            return Ok(());
        };
        match (on, self.alloc_link.take()) {
            (true, None) => {
                let prog: &mut BtfTracePoint = program(&mut self.ebpf, name)?;
                let link = prog
                    .attach()
                    .map_err(|source| ProbeError::Attach { name, source })?;
                self.alloc_link = Some((name, link));
                if !self.hot.contains(&name) {
                    self.hot.push(name);
                }
            }
            (false, Some((name, link))) => {
                let prog: &mut BtfTracePoint = program(&mut self.ebpf, name)?;
                prog.detach(link)
                    .map_err(|source| ProbeError::Attach { name, source })?;
            }
            (_, keep) => self.alloc_link = keep,
        }
        Ok(())
    }

    /// Every network namespace on the kernel's list, with its live count
    /// (`sample_netns`, BPF_PROG_TEST_RUN).
    pub fn sample_netns(&mut self) -> Result<NetnsList, ProbeError> {
        let name = self.sample_prog;
        let prog: &mut RawTracePoint = program(&mut self.ebpf, name)?;
        if name == "sample_netns" {
            prog.test_run(RawTracePointRunOptions::new())
                .map_err(|source| ProbeError::Program { name, source })?;
            return Ok(self.netns_list.get(&0, 0)?);
        }
        // The bounded sampler (no bpf_loop) goes in passes: 1 asks for
        // another, 2 for a fresh start (a namespace it stopped at left the
        // list between passes), 0 says done (in `PASS_RESULT`: the test
        // run's return value is always 0).
        const PASSES: u32 =
            conntrack_common::MAX_NETNS_SAMPLED / conntrack_common::NETNS_PASS_STEPS + 2;
        'sample: for _ in 0..3 {
            let mut opts = RawTracePointRunOptions::new();
            for _ in 0..PASSES {
                let prog: &mut RawTracePoint = program(&mut self.ebpf, name)?;
                prog.test_run(opts)
                    .map_err(|source| ProbeError::Program { name, source })?;
                match pass_result(&self.ebpf)? {
                    1 => {
                        opts = RawTracePointRunOptions::new();
                        opts.args[0] = 1;
                    }
                    2 => continue 'sample,
                    _ => break 'sample,
                }
            }
            break;
        }
        Ok(self.netns_list.get(&0, 0)?)
    }

    /// Reads the namespace key and the fields of each entry in `cts` (at
    /// most [`RESOLVE_BATCH`]), as `resolve_ct` found them at the returned
    /// time (CLOCK_MONOTONIC ns). `ct` is 0 in the nodes of entries that
    /// were not published (or could not be read).
    pub fn resolve_entries(
        &mut self,
        cts: &[u64],
    ) -> Result<(u64, Vec<(u64, ChainNode)>), ProbeError> {
        let n = cts.len().min(RESOLVE_BATCH as usize);
        // SAFETY: ResolveBatch is plain old data (aya::Pod): all zeroes is
        // a valid value. Boxed: it is 90 KB.
        let mut batch: Box<ResolveBatch> = unsafe { Box::new_zeroed().assume_init() };
        batch.len = n as u32;
        batch.cts[..n].copy_from_slice(&cts[..n]);
        self.resolve.set(0, batch.as_ref(), 0)?;
        let prog: &mut RawTracePoint = program(&mut self.ebpf, "resolve_ct")?;
        prog.test_run(RawTracePointRunOptions::new())
            .map_err(|source| ProbeError::Program {
                name: "resolve_ct",
                source,
            })?;
        let out = self.resolve.get(&0, 0)?;
        let read = (0..n).map(|i| (out.keys[i], out.out[i])).collect();
        Ok((out.ktime_ns, read))
    }

    /// Forgets a namespace's counters (it is gone and userspace has folded
    /// its final counts). A probe that still counts for it re-creates it.
    pub fn forget_netns(&mut self, key: u64) -> Result<(), ProbeError> {
        // A namespace that never freed an entry has no counters in the map:
        // aya reports that as the syscall's ENOENT, not as KeyNotFound.
        match self.netns.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Changes a runtime setting (`conntrack_common::setting`).
    pub fn set_setting(&mut self, index: u32, value: u32) -> Result<(), ProbeError> {
        self.settings.set(index, value, 0)?;
        Ok(())
    }

    /// Machine-wide counters summed over CPUs, plus the probes' recursion
    /// misses in `counter::PROBE_MISSES`.
    pub fn counters(&self) -> Result<Counters, ProbeError> {
        let mut out = Counters::default();
        for (index, slot) in out.0.iter_mut().enumerate() {
            let values = self.counters.get(&(index as u32), 0)?;
            *slot = values.iter().sum();
        }
        let misses: u64 = self
            .hot
            .iter()
            .filter_map(|name| self.ebpf.program(name))
            .filter_map(|p| p.fd().ok())
            .map(|fd| progstats::recursion_misses(fd).unwrap_or(0))
            .sum();
        out.0[counter::PROBE_MISSES as usize] = misses;
        Ok(out)
    }

    /// Per-namespace counters summed over CPUs, by namespace key.
    pub fn netns_counters(&self) -> Result<Vec<(u64, NetnsCounters)>, ProbeError> {
        let mut out = Vec::new();
        for item in self.netns.iter() {
            let (key, per_cpu) = item?;
            let mut sum = NetnsCounters::default();
            for v in per_cpu.iter() {
                // Written by the CPU that created the entry only.
                sum.inum = sum.inum.max(v.inum);
                sum.alloc += v.alloc;
                sum.free += v.free;
                for (total, d) in sum.drops.iter_mut().zip(v.drops) {
                    *total += d;
                }
            }
            out.push((key, sum));
        }
        out.sort_by_key(|(key, _)| *key);
        Ok(out)
    }
}

/// Addresses found by the discovery programs.
struct Found {
    discovery: Discovery,
    max_ptr: u64,
    size_ptr: u64,
}

/// Runs the discovery programs on a throwaway load of the object.
fn discover(cfg: &Config, btf: &Btf) -> Result<Found, ProbeError> {
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .override_global("CONFIG", cfg, true)
        .map_max_entries("EVENTS", 4096)
        .map_max_entries("NETNS", 1)
        .map_max_entries("BUCKETS", 1)
        .map_max_entries("INSERTED", 1)
        .load(EBPF_OBJECT)
        .map_err(ProbeError::Load)?;

    let walk: &mut BtfTracePoint = program(&mut ebpf, "discover_cache")?;
    walk.load("kmem_cache_alloc", btf)
        .map_err(|source| ProbeError::Program {
            name: "discover_cache",
            source,
        })?;
    let link = walk.attach().map_err(|source| ProbeError::Attach {
        name: "discover_cache",
        source,
    })?;
    let net: &mut RawTracePoint = program(&mut ebpf, "discover_net")?;
    net.load().map_err(|source| ProbeError::Program {
        name: "discover_net",
        source,
    })?;
    net.test_run(RawTracePointRunOptions::new())
        .map_err(|source| ProbeError::Program {
            name: "discover_net",
            source,
        })?;

    // Any slab allocation on the machine runs the walk; there are thousands
    // a second, so this takes microseconds.
    let map: Array<_, Discovery> = Array::try_from(
        ebpf.map("DISCOVERY")
            .ok_or(ProbeError::MissingMap("DISCOVERY"))?,
    )?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let discovery = loop {
        let d = map.get(&0, 0)?;
        if d.cache_walk_done != 0 || Instant::now() > deadline {
            break d;
        }
        thread::sleep(Duration::from_millis(2));
    };
    let walk: &mut BtfTracePoint = program(&mut ebpf, "discover_cache")?;
    walk.detach(link).map_err(|source| ProbeError::Attach {
        name: "discover_cache",
        source,
    })?;
    if discovery.ct_cache == 0 {
        return Err(ProbeError::CacheNotFound {
            walked: discovery.caches_walked,
        });
    }

    let sysctls: Array<_, SysctlSlot> = Array::try_from(
        ebpf.map("SYSCTLS")
            .ok_or(ProbeError::MissingMap("SYSCTLS"))?,
    )?;
    let (mut max_ptr, mut size_ptr) = (0, 0);
    for i in 0..discovery.sysctl_count {
        let slot = sysctls.get(&i, 0)?;
        let name = procname(&slot);
        if name != "nf_conntrack_max" && name != "nf_conntrack_buckets" {
            continue;
        }
        // Trust the address only if it holds the value /proc/sys shows.
        let shown = std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if shown == Some(slot.value & 0xffff_ffff) {
            if name == "nf_conntrack_max" {
                max_ptr = slot.data;
            } else {
                size_ptr = slot.data;
            }
        }
    }
    Ok(Found {
        discovery,
        max_ptr,
        size_ptr,
    })
}

fn procname(slot: &SysctlSlot) -> &str {
    let end = slot
        .procname
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(slot.procname.len());
    std::str::from_utf8(&slot.procname[..end]).unwrap_or("")
}

/// What the latest pass of a bounded program asked for next
/// (`PASS_RESULT`, conntrack-ebpf legacy.rs).
pub(crate) fn pass_result(ebpf: &Ebpf) -> Result<u32, ProbeError> {
    let map: Array<_, u32> = Array::try_from(
        ebpf.map("PASS_RESULT")
            .ok_or(ProbeError::MissingMap("PASS_RESULT"))?,
    )?;
    Ok(map.get(&0, 0)?)
}

pub(crate) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?;
    prog.try_into()
        .map_err(|source| ProbeError::Program { name, source })
}

pub(crate) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))
}

/// Clear answers for the common reasons ctscope cannot start.
fn preflight() -> Result<(), ProbeError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 && !has_bpf_caps() {
        return Err(ProbeError::NotPrivileged);
    }
    if !std::path::Path::new(crate::btf::VMLINUX).exists() {
        return Err(ProbeError::Btf(crate::btf::BtfError::Missing(
            crate::btf::VMLINUX.into(),
        )));
    }
    if !std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
        return Err(ProbeError::NoConntrack);
    }
    Ok(())
}

/// CAP_BPF (39) and CAP_PERFMON (38) in the effective set, read from
/// /proc/self/status so no capability library is needed.
fn has_bpf_caps() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 39) != 0 && caps & (1 << 38) != 0)
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
