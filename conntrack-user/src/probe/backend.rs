//! Which probes ctscope uses, and why.
//!
//! * `kprobe`: conntrack's own functions (`__nf_conntrack_alloc`,
//!   `nf_conntrack_free`, `__nf_conntrack_confirm`, ...). Needs a kernel with
//!   kprobes, which distribution kernels have; exact table-full and
//!   confirm-failure attribution, no pending queue; and, with nf_nat
//!   loaded, NAT's refusal of an ICMP error (`nf_nat_icmp_reply_translation`)
//!   told from a rule's drop before 6.7.
//! * `tracepoint`: the slab and `kfree_skb` tracepoints only; works on
//!   kernels without kprobes (such as the build machines').
//!
//! `auto` picks kprobe when the kernel has kprobes and conntrack's functions
//! are in /proc/kallsyms (not inlined). Each kprobe hook whose function is
//! missing falls back to the tracepoint path on its own.

use std::{collections::HashMap, fs, path::Path};

use conntrack_common::kprobe_hook;

/// What the user asked for (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendRequest {
    #[default]
    Auto,
    Kprobe,
    Tracepoint,
}

/// The probes in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Kprobe,
    Tracepoint,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }
}

/// One conntrack function the kprobe backend probes.
#[derive(Debug)]
pub struct Hook {
    /// Bit of `Config::kp_hooks`.
    pub bit: u32,
    pub function: &'static str,
    /// eBPF programs attached to it: (name, is a return probe), the return
    /// probe first: a call that enters between the two attaches then has no
    /// entry frame, and its return is ignored, instead of leaving a frame
    /// that no return takes (conntrack_common::frames).
    pub programs: &'static [(&'static str, bool)],
    /// What ctscope does without it.
    pub without: &'static str,
}

pub const HOOKS: [Hook; 7] = [
    Hook {
        bit: kprobe_hook::ALLOC,
        function: "__nf_conntrack_alloc",
        programs: &[("kp_alloc_ret", true), ("kp_alloc", false)],
        without: "allocations from the kmem_cache_alloc tracepoint",
    },
    Hook {
        bit: kprobe_hook::FREE,
        function: "nf_conntrack_free",
        programs: &[("kp_free", false)],
        without: "frees from the kmem_cache_free tracepoint",
    },
    Hook {
        bit: kprobe_hook::CONFIRM,
        function: "__nf_conntrack_confirm",
        programs: &[("kp_confirm_ret", true), ("kp_confirm", false)],
        without: "insert failures recognised by the entry the packet carries",
    },
    Hook {
        bit: kprobe_hook::INSERT,
        function: "__nf_conntrack_hash_insert",
        programs: &[("kp_insert", false)],
        without: "no incremental bucket occupancy",
    },
    Hook {
        bit: kprobe_hook::DELETE,
        function: "nf_ct_delete",
        programs: &[("kp_delete_ret", true), ("kp_delete", false)],
        without: "bucket occupancy updated only when entries are freed",
    },
    Hook {
        bit: kprobe_hook::EARLY_DROP,
        function: "early_drop",
        programs: &[("kp_early_drop_ret", true)],
        without: "early drops from the kernel's counter only",
    },
    Hook {
        bit: kprobe_hook::NAT_ICMP,
        function: "nf_nat_icmp_reply_translation",
        programs: &[("kp_nat_icmp_ret", true), ("kp_nat_icmp", false)],
        without: "an ICMP error NAT refuses is told from a rule's drop only since 6.7 \
                  (nf_nat was not loaded when ctscope started)",
    },
];

/// The hooks without which the kprobe backend is not worth choosing.
const CORE: u32 = kprobe_hook::ALLOC | kprobe_hook::FREE | kprobe_hook::CONFIRM;

/// The backend chosen, the kprobe hooks it uses, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub backend: Backend,
    /// Bits of `conntrack_common::kprobe_hook` to attach.
    pub hooks: u32,
    /// One sentence for people: the stderr info line and `ctscope doctor`.
    pub reason: String,
}

/// Why `--backend kprobe` cannot be honoured.
#[derive(Debug, thiserror::Error)]
#[error("--backend kprobe: {0}. Use --backend tracepoint (or auto)")]
pub struct KprobeUnavailable(pub String);

/// What the running kernel offers, as far as the choice depends on it.
#[derive(Clone, Debug)]
pub struct KernelOffer {
    /// `Err(why)` when the kernel has no kprobes.
    pub kprobes: Result<(), String>,
    /// Which hook functions /proc/kallsyms lists.
    pub present: Vec<&'static str>,
}

/// The decision, as a pure function of what the kernel offers.
pub fn decide(request: BackendRequest, offer: &KernelOffer) -> Result<Choice, KprobeUnavailable> {
    let tracepoint = |reason: String| Choice {
        backend: Backend::Tracepoint,
        hooks: 0,
        reason,
    };
    if request == BackendRequest::Tracepoint {
        return Ok(tracepoint("--backend tracepoint was given".into()));
    }
    if let Err(why) = &offer.kprobes {
        return match request {
            BackendRequest::Kprobe => Err(KprobeUnavailable(why.clone())),
            _ => Ok(tracepoint(format!(
                "{why}; the tracepoints need no kprobes"
            ))),
        };
    }
    let mut hooks = 0;
    let mut missing = Vec::new();
    for hook in &HOOKS {
        if offer.present.contains(&hook.function) {
            hooks |= hook.bit;
        } else {
            missing.push(format!(
                "{} not in /proc/kallsyms: {}",
                hook.function, hook.without
            ));
        }
    }
    if hooks & CORE == 0 {
        let why = "none of __nf_conntrack_alloc, nf_conntrack_free, __nf_conntrack_confirm is in \
                   /proc/kallsyms (inlined, or nf_conntrack not loaded)";
        return match request {
            BackendRequest::Kprobe => Err(KprobeUnavailable(why.into())),
            _ => Ok(tracepoint(why.into())),
        };
    }
    let mut reason = if request == BackendRequest::Kprobe {
        "--backend kprobe was given".to_owned()
    } else {
        "the kernel has kprobes and conntrack's functions are probeable".to_owned()
    };
    if !missing.is_empty() {
        reason.push_str("; ");
        reason.push_str(&missing.join("; "));
    }
    Ok(Choice {
        backend: Backend::Kprobe,
        hooks,
        reason,
    })
}

/// Looks at the running kernel and decides.
pub fn choose(request: BackendRequest) -> Result<Choice, KprobeUnavailable> {
    if request == BackendRequest::Tracepoint {
        let offer = KernelOffer {
            kprobes: Ok(()),
            present: Vec::new(),
        };
        return decide(request, &offer);
    }
    let symbols = KernelSymbols::load();
    let offer = KernelOffer {
        kprobes: kprobes_available(),
        present: HOOKS
            .iter()
            .map(|h| h.function)
            .filter(|f| symbols.as_ref().is_some_and(|s| s.text.contains_key(*f)))
            .collect(),
    };
    decide(request, &offer)
}

/// Whether the kernel can create kprobes: the perf kprobe PMU (what aya
/// uses) or the tracefs kprobe_events file (CONFIG_KPROBE_EVENTS).
pub fn kprobes_available() -> Result<(), String> {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe");
    if pmu.exists() {
        return Ok(());
    }
    for events in [
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ] {
        if Path::new(events).exists() {
            return Ok(());
        }
    }
    Err(
        "this kernel has no kprobes (no /sys/bus/event_source/devices/kprobe; \
         CONFIG_KPROBES or CONFIG_KPROBE_EVENTS is not set)"
            .into(),
    )
}

/// The /proc/kallsyms entries the kprobe backend needs: the hook functions
/// (with their module, since a static name can exist in several) and the
/// `__per_cpu_offset` array, a data symbol listed only with
/// CONFIG_KALLSYMS_ALL (as on distribution kernels).
#[derive(Debug, Default)]
pub struct KernelSymbols {
    /// Function name -> modules it appears in ("" for vmlinux).
    pub text: HashMap<String, Vec<String>>,
    pub per_cpu_offset: u64,
    /// The per-CPU variables `bpf_prog_active` and `current_kprobe` (data
    /// symbols too; 0 when not listed).
    pub bpf_prog_active: u64,
    pub current_kprobe: u64,
    /// `nf_conntrack_max` and `nf_conntrack_htable_size` (the sysctls'
    /// data), where kallsyms lists data symbols: on kernels without
    /// `bpf_loop` they replace the sysctl discovery program. 0 if absent.
    pub max_ptr: u64,
    pub size_ptr: u64,
    /// `nf_conntrack_hash` (the pointer to the hash table), listed with
    /// data symbols: how kernels without `bpf_loop` (no entry locator)
    /// find the table. 0 if absent.
    pub hash_ptr: u64,
}

impl KernelSymbols {
    pub fn load() -> Option<Self> {
        fs::read_to_string("/proc/kallsyms")
            .ok()
            .map(|t| Self::parse(&t))
    }

    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let mut f = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let data = matches!(kind, "D" | "d" | "R" | "r" | "B" | "b");
            // x86_64 kernels before 6.15 link per-CPU variables at offsets
            // from 0 and list them as absolute symbols ("0000000000030640 A
            // bpf_prog_active" on Debian's 5.10, 6.1 and 6.12); elsewhere
            // they are data symbols. Either way the address plus the CPU's
            // `__per_cpu_offset` entry is the CPU's copy.
            let per_cpu = data || matches!(kind, "A" | "a");
            let value = || u64::from_str_radix(addr, 16).unwrap_or(0);
            if data && name == "__per_cpu_offset" {
                out.per_cpu_offset = value();
            } else if per_cpu && name == "bpf_prog_active" {
                out.bpf_prog_active = value();
            } else if per_cpu && name == "current_kprobe" {
                out.current_kprobe = value();
            } else if data && name == "nf_conntrack_max" {
                out.max_ptr = value();
            } else if data && name == "nf_conntrack_htable_size" {
                out.size_ptr = value();
            } else if data && name == "nf_conntrack_hash" {
                out.hash_ptr = value();
            } else if matches!(kind, "t" | "T") && HOOKS.iter().any(|h| h.function == name) {
                let module = f
                    .next()
                    .map(|m| m.trim_matches(|c| c == '[' || c == ']').to_owned())
                    .unwrap_or_default();
                out.text.entry(name.to_owned()).or_default().push(module);
            }
        }
        out
    }

    /// The name to give the kernel for a kprobe: `module:function` when the
    /// name is not unique (the kernel refuses ambiguous names).
    pub fn probe_target(&self, function: &str) -> String {
        match self.text.get(function).map(Vec::as_slice) {
            Some([_]) | None => function.to_owned(),
            Some(modules) => match modules.iter().find(|m| *m == "nf_conntrack") {
                Some(m) => format!("{m}:{function}"),
                None => function.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(kprobes: bool, present: &[&'static str]) -> KernelOffer {
        KernelOffer {
            kprobes: if kprobes {
                Ok(())
            } else {
                Err("no kprobes here".into())
            },
            present: present.to_vec(),
        }
    }

    const ALL: [&str; 7] = [
        "__nf_conntrack_alloc",
        "nf_conntrack_free",
        "__nf_conntrack_confirm",
        "__nf_conntrack_hash_insert",
        "nf_ct_delete",
        "early_drop",
        "nf_nat_icmp_reply_translation",
    ];

    #[test]
    fn auto_prefers_kprobes_when_everything_is_there() {
        let c = decide(BackendRequest::Auto, &offer(true, &ALL)).expect("choice");
        assert_eq!(c.backend, Backend::Kprobe);
        assert_eq!(c.hooks, 0b111_1111);
        assert!(c.reason.contains("kprobes"), "{}", c.reason);
    }

    #[test]
    fn auto_without_kprobes_is_tracepoint_and_says_why() {
        let c = decide(BackendRequest::Auto, &offer(false, &ALL)).expect("choice");
        assert_eq!(c.backend, Backend::Tracepoint);
        assert_eq!(c.hooks, 0);
        assert!(c.reason.contains("no kprobes here"), "{}", c.reason);
    }

    #[test]
    fn forced_kprobe_without_kprobes_is_an_error() {
        let err = decide(BackendRequest::Kprobe, &offer(false, &ALL)).expect_err("no kprobes");
        assert!(err.to_string().contains("--backend tracepoint"), "{err}");
        let err = decide(BackendRequest::Kprobe, &offer(true, &["early_drop"])).expect_err("core");
        assert!(err.to_string().contains("inlined"), "{err}");
    }

    #[test]
    fn missing_functions_fall_back_per_hook() {
        let present = [
            "__nf_conntrack_alloc",
            "nf_conntrack_free",
            "__nf_conntrack_confirm",
        ];
        let c = decide(BackendRequest::Auto, &offer(true, &present)).expect("choice");
        assert_eq!(c.backend, Backend::Kprobe);
        assert_eq!(c.hooks, CORE);
        assert!(
            c.reason.contains("__nf_conntrack_hash_insert not in"),
            "{}",
            c.reason
        );
        // Without any core function, auto stays on tracepoints.
        let c = decide(BackendRequest::Auto, &offer(true, &["nf_ct_delete"])).expect("choice");
        assert_eq!(c.backend, Backend::Tracepoint);
    }

    #[test]
    fn forced_tracepoint_needs_nothing() {
        let c = decide(BackendRequest::Tracepoint, &offer(true, &ALL)).expect("choice");
        assert_eq!((c.backend, c.hooks), (Backend::Tracepoint, 0));
    }

    /// The blindness check of the kprobe backend (conntrack-ebpf/src/kprobe.rs
    /// `kprobes_blind`) read nothing while only `D`/`d` were accepted: these
    /// are the lines of Debian's 5.10 guest (6.1 and 6.12 list them the same
    /// way), and with both variables unknown every refusal unseen by the
    /// kprobes was counted as `invalid` (issue 16).
    #[test]
    fn per_cpu_variables_listed_as_absolute_symbols_are_found() {
        let s = KernelSymbols::parse(
            "0000000000020458 A current_kprobe\n\
             0000000000030640 A bpf_prog_active\n\
             ffffffff8bf85940 D __per_cpu_offset\n\
             0000000000000000 A fixed_percpu_data\n",
        );
        assert_eq!(s.per_cpu_offset, 0xffffffff8bf85940);
        assert_eq!((s.bpf_prog_active, s.current_kprobe), (0x30640, 0x20458));
    }

    #[test]
    fn kallsyms_gives_hooks_modules_and_per_cpu_offset() {
        let s = KernelSymbols::parse(
            "ffffffff82a1b2c0 R __per_cpu_offset\n\
             000000000002e0c8 D bpf_prog_active\n\
             000000000002d4a0 d current_kprobe\n\
             ffffffffc0a01f80 t __nf_conntrack_alloc\t[nf_conntrack]\n\
             ffffffffc0a01d30 t early_drop\t[nf_conntrack]\n\
             ffffffffc0b00010 t early_drop\t[other_mod]\n\
             ffffffffc0a00d20 T nf_conntrack_free\t[nf_conntrack]\n\
             ffffffffc0a1c0a0 B nf_conntrack_max\t[nf_conntrack]\n\
             ffffffffc0a1c0a4 B nf_conntrack_htable_size\t[nf_conntrack]\n\
             ffffffffc0b21a50 T nf_nat_icmp_reply_translation\t[nf_nat]\n\
             ffffffffc0a1b040 D nf_conntrack_hash\t[nf_conntrack]\n\
             ffffffffc0a1b048 t nf_conntrack_hash_check_insert\t[nf_conntrack]\n\
             ffffffff81000000 T _stext\n",
        );
        assert_eq!(s.max_ptr, 0xffffffffc0a1c0a0);
        assert_eq!(s.size_ptr, 0xffffffffc0a1c0a4);
        assert_eq!(s.hash_ptr, 0xffffffffc0a1b040);
        assert_eq!(s.per_cpu_offset, 0xffffffff82a1b2c0);
        assert_eq!((s.bpf_prog_active, s.current_kprobe), (0x2e0c8, 0x2d4a0));
        assert_eq!(
            s.probe_target("__nf_conntrack_alloc"),
            "__nf_conntrack_alloc"
        );
        assert_eq!(s.probe_target("early_drop"), "nf_conntrack:early_drop");
        assert!(!s.text.contains_key("_stext"));
        // nf_nat's, when the module is loaded: a hook like conntrack's.
        assert_eq!(
            s.probe_target("nf_nat_icmp_reply_translation"),
            "nf_nat_icmp_reply_translation"
        );
    }
}
