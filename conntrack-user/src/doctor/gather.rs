//! Gathers a [`MachineState`] from the running machine.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use super::{Conntrack, MachineState};
use crate::{
    btf::{KernelBtf, NF_CONNTRACK_MODULE, VMLINUX},
    kallsyms::Kallsyms,
    kernel::{
        netns::{StatsSource, StatsSourceUsed, read_namespaces},
        sysctl::Sysctls,
    },
    model::advice::NamespaceFill,
    probe::{
        ProbeOptions, Probes,
        backend::{BackendRequest, choose, kprobes_available},
        kernel_release,
    },
};

/// Capabilities ctscope uses, with their numbers (include/uapi/linux/capability.h).
const CAPS: [(&str, u32); 4] = [
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYSLOG", 34),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
];

/// Tracepoints the tracepoint backend attaches to.
const TRACEPOINTS: [&str; 3] = ["kmem_cache_alloc", "kmem_cache_free", "kfree_skb"];

/// Reads everything; `load` also loads and attaches the probes for a moment
/// (and walks the hash table once) to prove they work here.
pub fn gather(load: bool, backend: BackendRequest) -> MachineState {
    let mut s = MachineState {
        kernel: kernel_release(),
        // SAFETY: geteuid has no preconditions.
        euid: unsafe { libc::geteuid() },
        missing_caps: missing_caps(),
        btf_vmlinux: Path::new(VMLINUX).exists(),
        btf_module: Path::new(NF_CONNTRACK_MODULE).exists(),
        conntrack: Some(conntrack_presence()),
        module_refcnt: read_u64("/sys/module/nf_conntrack/refcnt"),
        kprobes_missing: kprobes_available().err(),
        kallsyms_visible: Kallsyms::load().is_ok(),
        hashsize_param: read_u64("/sys/module/nf_conntrack/parameters/hashsize"),
        buckets_writable: fs::metadata("/proc/sys/net/netfilter/nf_conntrack_buckets")
            .is_ok_and(|m| m.permissions().mode() & 0o200 != 0),
        objsize: read_u64("/sys/kernel/slab/nf_conntrack/slab_size"),
        ..MachineState::default()
    };
    match choose(backend) {
        Ok(choice) => {
            s.backend = choice.backend.name().to_owned();
            s.backend_reason = choice.reason;
            s.nat_probed = choice.hooks & conntrack_common::kprobe_hook::NAT_ICMP != 0;
        }
        Err(e) => {
            s.backend = "none".to_owned();
            s.backend_reason = e.0;
        }
    }
    s.features = KernelBtf::load()
        .ok()
        .map(|btf| crate::probe::features::KernelFeatures::from_btf(&btf));
    s.tracepoints = match KernelBtf::load() {
        Ok(btf) => TRACEPOINTS
            .iter()
            .map(|t| ((*t).to_owned(), btf.has_type(&format!("btf_trace_{t}"))))
            .collect(),
        Err(_) => TRACEPOINTS
            .iter()
            .map(|t| ((*t).to_owned(), false))
            .collect(),
    };
    let sysctls = Sysctls::read();
    s.max = sysctls.nf_conntrack_max;
    s.buckets = sysctls.nf_conntrack_buckets;
    s.tcp_timeout_established = sysctls.nf_conntrack_tcp_timeout_established;

    let readings = read_namespaces(StatsSource::Auto);
    s.counters = readings
        .iter()
        .find_map(|r| r.source_used)
        .map(|used| match used {
            StatsSourceUsed::Procfs => "/proc/net/stat/nf_conntrack".to_owned(),
            StatsSourceUsed::Ctnetlink => "ctnetlink (as conntrack -S)".to_owned(),
        });
    if s.counters.is_none() {
        s.counters_error = Some(
            readings
                .iter()
                .find_map(|r| r.error.clone())
                .unwrap_or_else(|| "no namespace could be read".to_owned()),
        );
    }
    for r in &readings {
        match r.count {
            Some(entries) => s.namespaces.push(NamespaceFill {
                inum: r.inum,
                name: r.name.clone(),
                entries,
                enter: r.enter.clone(),
                tcp_timeout_established: r.tcp_timeout_established,
            }),
            None => s.unreadable_namespaces += 1,
        }
    }

    let can_load = s
        .missing_caps
        .iter()
        .all(|c| c != "CAP_BPF" && c != "CAP_PERFMON");
    if load && can_load && s.conntrack != Some(Conntrack::Absent) {
        s.probes = Some(try_probes(&mut s, backend));
    }
    s
}

/// Loads and attaches the probes, walks the table once, detaches.
fn try_probes(s: &mut MachineState, backend: BackendRequest) -> Result<String, String> {
    let opts = ProbeOptions {
        // Nothing streams: the smallest ring.
        ring_bytes: 1 << 16,
        backend,
        ..ProbeOptions::default()
    };
    let mut probes = Probes::attach(&opts).map_err(|e| e.to_string())?;
    let mut what = if probes.info.caches_walked > 0 {
        format!(
            "the {} probes load and attach (found the nf_conntrack slab after walking {} caches)",
            probes.info.backend, probes.info.caches_walked
        )
    } else {
        // No slab discovery (kernels without bpf_loop use kallsyms).
        format!("the {} probes load and attach", probes.info.backend)
    };
    match probes.walk_buckets(0) {
        Ok(walk) if walk.buckets > 0 => {
            s.chain_mean = Some(walk.mean);
            s.chain_max = Some(walk.max);
            what.push_str(&format!(
                "; a walk of the hash table ({} buckets) took {:.1} ms",
                walk.buckets,
                walk.duration_ns as f64 / 1e6
            ));
        }
        Ok(_) => what.push_str("; the hash table was not located (no entries yet)"),
        Err(e) => what.push_str(&format!("; the hash table walk failed: {e}")),
    }
    Ok(what)
}

fn conntrack_presence() -> Conntrack {
    if !Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
        Conntrack::Absent
    } else if Path::new("/sys/module/nf_conntrack/initstate").exists()
        || Path::new("/sys/module/nf_conntrack/refcnt").exists()
    {
        // Only loadable modules have initstate/refcnt.
        Conntrack::Module
    } else {
        Conntrack::BuiltIn
    }
}

fn missing_caps() -> Vec<String> {
    let eff = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    CAPS.iter()
        .filter(|(_, bit)| eff & (1 << bit) == 0)
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

fn read_u64(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}
