//! `ctscope doctor`: what this machine offers ctscope, and what the tuning
//! guide says about its conntrack settings.
//!
//! [`MachineState`] is everything gathered (by `commands/doctor.rs`); the
//! diagnosis is a pure function of it, so recorded states of other machines
//! are unit tests.

mod gather;
#[cfg(test)]
mod tests;

pub use gather::gather;
use serde::{Deserialize, Serialize};

use crate::{
    model::advice::{self, ChainFacts, Facts, NamespaceFill, Severity},
    probe::features::CauseProbes,
};

/// How nf_conntrack is present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conntrack {
    /// Compiled into the kernel.
    BuiltIn,
    /// A loaded module.
    Module,
    /// Neither loaded nor built in (nothing uses connection tracking).
    Absent,
}

/// What was learnt about the machine. Every field is a plain fact so that
/// states can be recorded and replayed in tests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineState {
    pub kernel: String,
    /// Effective uid.
    pub euid: u32,
    /// Capability names ctscope needs that the process lacks.
    pub missing_caps: Vec<String>,
    pub btf_vmlinux: bool,
    /// /sys/kernel/btf/nf_conntrack (split BTF of the module).
    pub btf_module: bool,
    pub conntrack: Option<Conntrack>,
    /// Users of the nf_conntrack module (/sys/module/nf_conntrack/refcnt).
    pub module_refcnt: Option<u64>,
    /// Why kprobes cannot be used; `None` when the kernel has them.
    pub kprobes_missing: Option<String>,
    /// The backend `--backend auto` picks, and why.
    pub backend: String,
    pub backend_reason: String,
    /// The kprobe backend would probe NAT's ICMP translation
    /// (`nf_nat_icmp_reply_translation` is in /proc/kallsyms: nf_nat is
    /// loaded), which tells a NAT hook's drop from a rule's before 6.7.
    #[serde(default)]
    pub nat_probed: bool,
    /// What the kernel's eBPF side offers (issue 16); `None` without BTF.
    #[serde(default)]
    pub features: Option<crate::probe::features::KernelFeatures>,
    /// Tracepoints with BTF (`btf_trace_*` types) ctscope needs, and whether
    /// each exists.
    pub tracepoints: Vec<(String, bool)>,
    /// /proc/kallsyms shows addresses.
    pub kallsyms_visible: bool,
    /// Loading and attaching the probes: Ok(description) or the error.
    /// `None` when not tried (not privileged, or --no-load).
    pub probes: Option<Result<String, String>>,
    /// Where the kernel's own counters come from (procfs or ctnetlink).
    pub counters: Option<String>,
    /// Why they could not be read, when `counters` is `None`.
    pub counters_error: Option<String>,
    /// Namespaces whose conntrack count could be read, and the counts.
    pub namespaces: Vec<NamespaceFill>,
    /// Namespaces found but not readable.
    pub unreadable_namespaces: usize,
    pub max: Option<u64>,
    pub buckets: Option<u64>,
    /// Whether nf_conntrack_buckets can be written (older kernels: only
    /// the module's hashsize parameter).
    pub buckets_writable: bool,
    /// /sys/module/nf_conntrack/parameters/hashsize, when it exists.
    pub hashsize_param: Option<u64>,
    pub tcp_timeout_established: Option<u64>,
    /// Slab object size of an entry.
    pub objsize: Option<u64>,
    /// Chain lengths, measured by a walk when probes loaded.
    pub chain_mean: Option<f64>,
    pub chain_max: Option<u32>,
    /// A global sysctl a ctscope run changed (its restore record), if any.
    #[serde(default)]
    pub left_changed: Option<LeftChanged>,
}

/// A global sysctl changed by a ctscope run, from its restore record
/// (`kernel::restore`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftChanged {
    pub sysctl: String,
    pub original: u64,
    pub set: u64,
    /// The command and pid of the run that changed it.
    pub command: String,
    pub pid: u32,
    /// held: that run is still going and will restore it; restored: it had
    /// died and this run put the original back; stuck: it died and the value
    /// could not be put back (`error` says why).
    pub state: LeftState,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftState {
    #[default]
    Held,
    Restored,
    Stuck,
}

impl LeftChanged {
    /// From what the start of this run found (`None` when nothing is left).
    pub fn from_leftover(l: &crate::kernel::restore::Leftover) -> Option<Self> {
        use crate::kernel::restore::Leftover;
        let (r, state, error) = match l {
            Leftover::Clean | Leftover::Superseded { .. } => return None,
            Leftover::Held(r) => (r, LeftState::Held, None),
            Leftover::Restored(r) => (r, LeftState::Restored, None),
            Leftover::Stuck { record, error } => (record, LeftState::Stuck, Some(error.clone())),
        };
        Some(Self {
            sysctl: r.sysctl.clone(),
            original: r.original,
            set: r.set,
            command: r.command.clone(),
            pid: r.pid,
            state,
            error,
        })
    }
}

fn left_changed(l: &LeftChanged) -> Check {
    let (status, message) = match l.state {
        LeftState::Held => (
            Status::Info,
            format!(
                "{} is at {} for a running `{}` (pid {}), which puts {} back when it ends",
                l.sysctl, l.set, l.command, l.pid, l.original
            ),
        ),
        LeftState::Restored => (
            Status::Warning,
            format!(
                "{} had been left at {} by a `{}` (pid {}) that did not end cleanly; \
                 restored to {} now",
                l.sysctl, l.set, l.command, l.pid, l.original
            ),
        ),
        LeftState::Stuck => (
            Status::Critical,
            format!(
                "{} is still at {}, lowered by a `{}` (pid {}) that did not end cleanly, \
                 for every namespace of this machine ({}); restore it",
                l.sysctl,
                l.set,
                l.command,
                l.pid,
                l.error.as_deref().unwrap_or("not restored")
            ),
        ),
    };
    let mut c = check("restore", status, message);
    if l.state == LeftState::Stuck {
        c.commands.push(format!(
            "sysctl -w net.netfilter.{}={}",
            l.sysctl, l.original
        ));
    }
    c
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Info,
    Warning,
    Critical,
}

impl From<Severity> for Status {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => Status::Info,
            Severity::Warning => Status::Warning,
            Severity::Critical => Status::Critical,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    /// Exit status of `ctscope doctor`: 0 when nothing needs doing, 1 for
    /// warnings, 2 when ctscope cannot run or the table is in trouble.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok | Status::Info => 0,
            Status::Warning => 1,
            Status::Critical => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// Stable name: privileges, btf, conntrack, backend, tracepoints,
    /// features, causes, kallsyms, probes, counters, namespaces, restore, unload, hashsize, and the
    /// advice rules (raise-max, buckets, chain-mean, chain-too-long,
    /// tcp-timeout, persist).
    pub id: &'static str,
    pub status: Status,
    pub message: String,
    /// Commands that fix it, run as root, in order.
    pub commands: Vec<String>,
}

fn check(id: &'static str, status: Status, message: impl Into<String>) -> Check {
    Check {
        id,
        status,
        message: message.into(),
        commands: Vec::new(),
    }
}

/// Every check, in reading order: can ctscope run here, then how the table
/// is tuned.
pub fn diagnose(s: &MachineState) -> Vec<Check> {
    let mut out = vec![privileges(s), btf(s)];
    out.extend(conntrack(s));
    out.push(check(
        "backend",
        Status::Info,
        format!("{} backend: {}", s.backend, s.backend_reason),
    ));
    out.push(tracepoints(s));
    out.extend(features(s));
    out.push(if s.kallsyms_visible {
        check(
            "kallsyms",
            Status::Ok,
            "function addresses are visible in /proc/kallsyms",
        )
    } else {
        check(
            "kallsyms",
            Status::Critical,
            "/proc/kallsyms hides addresses; run as root or with CAP_SYSLOG",
        )
    });
    if let Some(p) = &s.probes {
        out.push(match p {
            Ok(what) => check("probes", Status::Ok, what.clone()),
            Err(e) => check(
                "probes",
                Status::Critical,
                format!("the probes did not load: {e}"),
            ),
        });
    }
    out.push(match &s.counters {
        Some(source) => check(
            "counters",
            Status::Ok,
            format!("the kernel's own conntrack counters are read through {source}"),
        ),
        None => check(
            "counters",
            Status::Warning,
            format!(
                "the kernel's own counters cannot be read ({}); ctscope's counts still work",
                s.counters_error.as_deref().unwrap_or("unknown error")
            ),
        ),
    });
    out.push(namespaces(s));
    out.extend(s.left_changed.as_ref().map(left_changed));
    out.extend(hashsize(s));
    out.extend(advice::advise(&facts(s)).into_iter().map(|f| Check {
        id: f.id,
        status: f.severity.into(),
        message: f.message,
        commands: f.commands,
    }));
    out
}

/// The worst status of all checks.
pub fn worst(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
}

fn privileges(s: &MachineState) -> Check {
    let lacks = |cap: &str| s.missing_caps.iter().any(|c| c == cap);
    if lacks("CAP_BPF") || lacks("CAP_PERFMON") {
        let mut c = check(
            "privileges",
            Status::Critical,
            format!(
                "ctscope cannot load eBPF programs without {}: run it as root",
                s.missing_caps.join(", ")
            ),
        );
        c.commands.push("sudo ctscope doctor".into());
        return c;
    }
    if lacks("CAP_SYS_ADMIN") {
        return check(
            "privileges",
            Status::Warning,
            "without CAP_SYS_ADMIN ctscope cannot enter other namespaces to read the kernel's \
             own counters there",
        );
    }
    check(
        "privileges",
        Status::Ok,
        format!(
            "running as uid {} with the capabilities ctscope needs",
            s.euid
        ),
    )
}

fn btf(s: &MachineState) -> Check {
    if !s.btf_vmlinux {
        return check(
            "btf",
            Status::Critical,
            "the kernel publishes no BTF (/sys/kernel/btf/vmlinux); ctscope reads every struct \
             offset from it. Use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        );
    }
    // Before 5.13 (5.10: no module BTF at all) the count is in `struct
    // net` and the entry's layout in vmlinux's BTF: nothing needed is in
    // the module's own types.
    let module_types_needed = s.features.is_none_or(|f| f.cnet_count);
    if s.conntrack == Some(Conntrack::Module) && !s.btf_module && !module_types_needed {
        return check(
            "btf",
            Status::Ok,
            "kernel BTF is available (nf_conntrack has none of its own; on this kernel \
             ctscope needs only vmlinux's)",
        );
    }
    if s.conntrack == Some(Conntrack::Module) && !s.btf_module {
        return check(
            "btf",
            Status::Critical,
            "nf_conntrack is a module without BTF (/sys/kernel/btf/nf_conntrack); its struct \
             layouts are unknown. Use a kernel built with CONFIG_DEBUG_INFO_BTF_MODULES=y",
        );
    }
    check("btf", Status::Ok, "kernel BTF is available")
}

fn conntrack(s: &MachineState) -> Vec<Check> {
    match s.conntrack {
        Some(Conntrack::BuiltIn) => vec![check(
            "conntrack",
            Status::Ok,
            "nf_conntrack is built into the kernel",
        )],
        Some(Conntrack::Module) => vec![check(
            "conntrack",
            Status::Ok,
            "nf_conntrack is a loaded module",
        )],
        Some(Conntrack::Absent) | None => vec![check(
            "conntrack",
            Status::Info,
            "nf_conntrack is not loaded: nothing uses connection tracking, and there is nothing \
             to observe or tune",
        )],
    }
}

/// The kernel features that select programs, and how exact each drop
/// cause is here with the backend `auto` picks (docs/drop-causes.md).
fn features(s: &MachineState) -> Vec<Check> {
    let Some(f) = &s.features else {
        return Vec::new();
    };
    let (have, lack): (Vec<_>, Vec<_>) = f.list().into_iter().partition(|(_, on)| *on);
    let names = |v: Vec<(&str, bool)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>().join(", ");
    let mut line = format!("kernel features present: {}", names(have));
    if !lack.is_empty() {
        line.push_str(&format!("; missing: {}", names(lack)));
    }
    let probes = if s.backend == "kprobe" {
        CauseProbes::Kprobe { nat: s.nat_probed }
    } else {
        CauseProbes::Tracepoint
    };
    let causes = f.cause_exactness(probes);
    let exact: Vec<&str> = causes
        .iter()
        .filter(|(_, why)| why.is_none())
        .map(|(c, _)| *c)
        .collect();
    let mut msg = format!(
        "exact drop causes with the {} backend: {}",
        s.backend,
        exact.join(", ")
    );
    for (cause, why) in causes {
        if let Some(why) = why {
            msg.push_str(&format!("; {cause}: {why}"));
        }
    }
    vec![
        check("features", Status::Info, line),
        check("causes", Status::Info, msg),
    ]
}

fn tracepoints(s: &MachineState) -> Check {
    let missing: Vec<&str> = s
        .tracepoints
        .iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| name.as_str())
        .collect();
    if missing.is_empty() {
        check(
            "tracepoints",
            Status::Ok,
            "kmem_cache_alloc, kmem_cache_free and kfree_skb tracepoints have BTF",
        )
    } else if s.kprobes_missing.is_none() {
        check(
            "tracepoints",
            Status::Warning,
            format!(
                "tracepoints missing: {}; the kprobe backend is needed",
                missing.join(", ")
            ),
        )
    } else {
        check(
            "tracepoints",
            Status::Critical,
            format!(
                "tracepoints missing: {} and no kprobes: ctscope cannot observe this kernel",
                missing.join(", ")
            ),
        )
    }
}

fn namespaces(s: &MachineState) -> Check {
    let active = s.namespaces.iter().filter(|n| n.entries > 0).count();
    let total: u64 = s.namespaces.iter().map(|n| n.entries).sum();
    let mut msg = format!(
        "{} network namespaces read, {active} with conntrack entries ({total} entries in all)",
        s.namespaces.len()
    );
    if s.unreadable_namespaces > 0 {
        msg.push_str(&format!(
            "; {} could not be entered",
            s.unreadable_namespaces
        ));
    }
    check("namespaces", Status::Info, msg)
}

/// Kernels whose nf_conntrack_buckets is read-only take the hash size as a
/// module parameter (the tuning guide's `hashsize`); and a module nothing
/// uses can simply be unloaded (the guide's first solution).
fn hashsize(s: &MachineState) -> Vec<Check> {
    let mut out = Vec::new();
    if !s.buckets_writable
        && let Some(size) = s.hashsize_param
    {
        let mut c = check(
            "hashsize",
            Status::Info,
            format!(
                "nf_conntrack_buckets is read-only on this kernel; the table size ({size}) is \
                 the module's hashsize parameter"
            ),
        );
        c.commands.push(format!(
            "echo {} > /sys/module/nf_conntrack/parameters/hashsize",
            s.max.unwrap_or(size).max(size)
        ));
        out.push(c);
    }
    let unused = s.namespaces.iter().all(|n| n.entries == 0);
    if s.conntrack == Some(Conntrack::Module) && s.module_refcnt == Some(0) && unused {
        let mut c = check(
            "unload",
            Status::Info,
            "nothing uses nf_conntrack (no module depends on it, no entries): unloading it \
             removes the table and its limits altogether",
        );
        c.commands.push("modprobe -r nf_conntrack".into());
        out.push(c);
    }
    out
}

/// The advice rules' view of the machine.
fn facts(s: &MachineState) -> Facts {
    let fullest = NamespaceFill::fullest(s.namespaces.iter().cloned());
    let entries_total =
        (!s.namespaces.is_empty()).then(|| s.namespaces.iter().map(|n| n.entries).sum());
    let chain = match (s.chain_mean, entries_total, s.buckets) {
        (Some(mean), ..) => Some(ChainFacts {
            mean,
            max: s.chain_max,
            measured: true,
        }),
        (None, Some(entries), Some(buckets)) if buckets > 0 => Some(ChainFacts {
            mean: 2.0 * entries as f64 / buckets as f64,
            max: None,
            measured: false,
        }),
        _ => None,
    };
    Facts {
        max: s.max,
        buckets: s.buckets,
        tcp_timeout_established: s.tcp_timeout_established,
        fullest,
        entries_total,
        chain,
        objsize: s.objsize,
        conntrack_module: s.conntrack.map(|c| c == Conntrack::Module),
        ..Facts::default()
    }
}
