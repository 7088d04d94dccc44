//! Loading side of the kprobe backend (conntrack-ebpf/src/kprobe.rs):
//! the `CONFIG` fields it reads and attaching its programs.

use aya::{
    Ebpf,
    programs::{KProbe, ProgramError},
};
use conntrack_common::Config;

use super::{
    ProbeError,
    backend::{Choice, HOOKS, KernelSymbols},
    program,
};
use crate::btf::{BtfError, KernelBtf};

/// Marker the eBPF side treats as "member absent".
const ABSENT: u32 = u32::MAX;

/// Fields for the kprobe hooks, and for reading this CPU's conntrack
/// counters (`net->ct.stat`), which both backends use where the kernel
/// lists `__per_cpu_offset`.
pub fn configure(
    cfg: &mut Config,
    btf: &KernelBtf,
    choice: &Choice,
    syms: Option<&KernelSymbols>,
) -> Result<(), BtfError> {
    let opt =
        |path: &str| -> Result<u32, BtfError> { Ok(btf.optional_offset(path)?.unwrap_or(ABSENT)) };
    cfg.kp_hooks = choice.hooks;
    cfg.per_cpu_offset = syms.map_or(0, |s| s.per_cpu_offset);
    cfg.bpf_prog_active = syms.map_or(0, |s| s.bpf_prog_active);
    cfg.current_kprobe = syms.map_or(0, |s| s.current_kprobe);
    cfg.net_ct_stat = opt("net.ct.stat")?;
    cfg.stat_insert_failed = opt("ip_conntrack_stat.insert_failed")?;
    cfg.stat_chaintoolong = opt("ip_conntrack_stat.chaintoolong")?;
    if cfg.net_ct_stat == ABSENT || cfg.stat_insert_failed == ABSENT {
        cfg.per_cpu_offset = 0;
    }
    Ok(())
}

/// Names of every kprobe program of the chosen hooks.
pub fn programs(choice: &Choice) -> impl Iterator<Item = &'static str> + '_ {
    HOOKS
        .iter()
        .filter(move |h| choice.hooks & h.bit != 0)
        .flat_map(|h| h.programs.iter().map(|(name, _)| *name))
}

/// Loads and attaches the programs of every chosen hook.
pub fn attach(ebpf: &mut Ebpf, choice: &Choice, syms: &KernelSymbols) -> Result<(), ProbeError> {
    for hook in HOOKS.iter().filter(|h| choice.hooks & h.bit != 0) {
        let target = syms.probe_target(hook.function);
        for (name, _ret) in hook.programs {
            let prog: &mut KProbe = program(ebpf, name)?;
            prog.load()
                .map_err(|source| ProbeError::Program { name, source })?;
            prog.attach(target.as_str(), 0)
                .map_err(|source| ProbeError::Kprobe {
                    name,
                    function: hook.function,
                    source,
                })?;
        }
    }
    Ok(())
}

/// `nf_conntrack_buckets`, the size of the occupancy array (1 when the
/// insert hook is not used or the sysctl cannot be read).
pub fn buckets_size(choice: &Choice) -> u32 {
    if choice.hooks & conntrack_common::kprobe_hook::INSERT == 0 {
        return 1;
    }
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Room for the entries in the table (their buckets), only when the
/// insert hook is used: the map is preallocated.
pub fn inserted_size(choice: &Choice) -> u32 {
    if choice.hooks & conntrack_common::kprobe_hook::INSERT == 0 {
        return 1;
    }
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(1 << 18, |max| max.clamp(1024, 1 << 20))
}

/// Whether an attach error is the kernel refusing the kprobe (so `auto`
/// can fall back to the tracepoints) rather than a bug.
pub fn is_refusal(err: &ProbeError) -> bool {
    match err {
        ProbeError::Kprobe { .. } => true,
        ProbeError::Program {
            name,
            source: ProgramError::LoadError { .. },
        } => name.starts_with("kp_"),
        _ => false,
    }
}
