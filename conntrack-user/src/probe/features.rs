//! What the running kernel's eBPF side offers, as far as ctscope's choice
//! of programs depends on it (issue 16: Debian 11's 5.10 beside 6.x). Read
//! from BTF, never guessed from the release string; `ctscope doctor` shows
//! it with what each missing feature costs (docs/drop-causes.md, "Per
//! kernel").

use crate::btf::KernelBtf;

/// Kernel features that select programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelFeatures {
    /// `kfree_skb` carries a drop reason (5.17+). Without it, a netfilter
    /// drop is recognised by its location in `nf_hook_slow`
    /// (`ct_drop_loc`).
    pub drop_reasons: bool,
    /// The `bpf_loop` helper (5.17+). Without it, the namespace sample
    /// and the hash table walk run as bounded loops in passes
    /// (`sample_netns_bounded`, `walk_chunk_bounded`,
    /// `walk_bucket_bounded`), the table is found through kallsyms'
    /// `nf_conntrack_hash`, and the start-up discovery programs, the entry
    /// locator and the drop probe's chain walk (all `bpf_loop`) do not
    /// load.
    pub bpf_loop: bool,
    /// `kmem_cache_alloc`/`kmem_cache_free` pass the `kmem_cache` (6.1+):
    /// the tracepoint backend needs it to tell conntrack's slab objects
    /// from all others.
    pub slab_cache_arg: bool,
    /// `struct nf_conntrack_net` holds the namespace's count (5.13+;
    /// before, it is `net->ct.count`, and `nf_conntrack_net.users4/6`,
    /// in a module without BTF on 5.10, are unreadable).
    pub cnet_count: bool,
    /// `ip_conntrack_stat.chaintoolong` (5.15+): the kernel limits hash
    /// chains; before, an insert never fails for a chain's length.
    pub chain_limit: bool,
    /// nftables frees its rule drops in `nft_do_chain` (6.7+; from the
    /// release, `config::nft_frees_own_drops`).
    pub nft_frees_own_drops: bool,
}

/// The probes a cause's exactness depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CauseProbes {
    Tracepoint,
    /// The kprobe backend; `nat`: NAT's ICMP translation
    /// (`nf_nat_icmp_reply_translation`, in nf_nat) is probed, which needs
    /// nf_nat loaded when ctscope starts.
    Kprobe {
        nat: bool,
    },
}

impl KernelFeatures {
    pub fn from_btf(btf: &KernelBtf) -> Self {
        Self {
            drop_reasons: btf.tracepoint_args("kfree_skb").is_some_and(|n| n >= 3),
            bpf_loop: btf.enum_value("bpf_func_id", "BPF_FUNC_loop").is_ok(),
            // The cache itself, not its name (5.12-6.0 pass `const char *`).
            slab_cache_arg: btf.tracepoint_arg_points_to("kmem_cache_free", 2, "kmem_cache")
                && btf.tracepoint_arg_points_to("kmem_cache_alloc", 2, "kmem_cache"),
            cnet_count: btf
                .optional_offset("nf_conntrack_net.count")
                .is_ok_and(|o| o.is_some()),
            chain_limit: btf
                .optional_offset("ip_conntrack_stat.chaintoolong")
                .is_ok_and(|o| o.is_some()),
            nft_frees_own_drops: super::config::nft_frees_own_drops(&super::kernel_release()),
        }
    }

    /// Each feature with whether the kernel has it, for `ctscope doctor`.
    pub fn list(&self) -> [(&'static str, bool); 6] {
        [
            ("kfree_skb drop reasons (5.17)", self.drop_reasons),
            ("bpf_loop (5.17)", self.bpf_loop),
            (
                "kmem_cache in the slab tracepoints (6.1)",
                self.slab_cache_arg,
            ),
            ("count in nf_conntrack_net (5.13)", self.cnet_count),
            ("hash chain limit (5.15)", self.chain_limit),
            (
                "nftables frees its own drops (6.7)",
                self.nft_frees_own_drops,
            ),
        ]
    }

    /// How exact each drop cause is on this kernel with these probes:
    /// (cause, `None` when exact, or what is not). The per-kernel table of
    /// docs/drop-causes.md, as a pure function.
    pub fn cause_exactness(
        &self,
        probes: CauseProbes,
    ) -> [(&'static str, Option<&'static str>); 6] {
        let kprobe = probes != CauseProbes::Tracepoint;
        let table_full = None;
        let invalid = if self.cnet_count {
            None
        } else {
            Some(
                "whether conntrack is in use in a namespace is unreadable (nf_conntrack_net \
                 has no BTF before 5.13), so a rule's drop of a packet conntrack never saw \
                 counts as invalid",
            )
        };
        let insert_failed = if kprobe {
            None
        } else {
            Some("exact as a sum with chain_too_long")
        };
        let chain_too_long = if !self.chain_limit {
            Some("never happens: this kernel has no hash chain limit (before 5.15)")
        } else if kprobe {
            None
        } else if !self.bpf_loop {
            Some(
                "the drop probe walks no chain without bpf_loop (5.15-5.16): counted as \
                 insert_failed",
            )
        } else {
            Some("a reply-direction failure is inferred from the latest table walk")
        };
        // Before 6.7 nftables' rule drops and a NAT hook's drop are both
        // freed by nf_hook_slow; only the kprobe on NAT's ICMP translation
        // tells them apart (the tracepoint backend's known miss,
        // docs/drop-causes.md).
        let ruleset = match (self.nft_frees_own_drops, probes) {
            (true, _) => None,
            (false, CauseProbes::Kprobe { nat: true }) if !self.cnet_count => Some(
                "a rule's drop of a packet conntrack never saw counts as invalid (see invalid)",
            ),
            (false, CauseProbes::Kprobe { nat: true }) => None,
            (false, CauseProbes::Kprobe { nat: false }) => Some(
                "nf_nat is not loaded, so its ICMP translation is not probed: if it is loaded \
                 while ctscope runs, a NAT hook's drop (an ICMP redirect through a NAT router) \
                 counts as ruleset before 6.7",
            ),
            (false, CauseProbes::Tracepoint) => Some(
                "told from insert failures by the kernel's insert_failed counter; a NAT \
                 hook's drop (an ICMP redirect through a NAT router) counts as ruleset before 6.7",
            ),
        };
        let other = if self.drop_reasons {
            None
        } else {
            Some(
                "without drop reasons only packets freed by nf_hook_slow are seen as \
                 netfilter drops; others netfilter code frees elsewhere are not counted",
            )
        };
        [
            ("table_full", table_full),
            ("invalid", invalid),
            ("insert_failed", insert_failed),
            ("chain_too_long", chain_too_long),
            ("ruleset", ruleset),
            ("other", other),
        ]
    }

    /// Why the tracepoint backend cannot count on this kernel, if it
    /// cannot.
    pub fn tracepoint_counting(&self) -> Result<(), String> {
        if self.slab_cache_arg {
            Ok(())
        } else {
            Err(
                "this kernel's kmem_cache_alloc/kmem_cache_free tracepoints carry no \
                 kmem_cache pointer (added in 6.1), so the tracepoint backend cannot tell \
                 conntrack's entries from other slab objects"
                    .into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_kernel_has_every_feature() {
        let btf = KernelBtf::load().expect("vmlinux BTF");
        let f = KernelFeatures::from_btf(&btf);
        assert!(f.drop_reasons, "{f:?}");
        assert!(f.bpf_loop, "{f:?}");
        assert!(f.slab_cache_arg, "{f:?}");
        assert!(f.cnet_count, "{f:?}");
        assert!(f.chain_limit, "{f:?}");
        assert!(f.tracepoint_counting().is_ok());
    }

    /// Debian 11's 5.10 as read in its BTF (issue 16).
    const BULLSEYE: KernelFeatures = KernelFeatures {
        drop_reasons: false,
        bpf_loop: false,
        slab_cache_arg: false,
        cnet_count: false,
        chain_limit: false,
        nft_frees_own_drops: false,
    };

    #[test]
    fn exactness_per_kernel() {
        const KPROBE: CauseProbes = CauseProbes::Kprobe { nat: true };
        const NO_NAT: CauseProbes = CauseProbes::Kprobe { nat: false };
        const TP: CauseProbes = CauseProbes::Tracepoint;
        let exact = |f: &KernelFeatures, probes: CauseProbes| -> Vec<&str> {
            f.cause_exactness(probes)
                .iter()
                .filter(|(_, why)| why.is_none())
                .map(|(c, _)| *c)
                .collect()
        };
        // 5.10, kprobe backend: table_full and insert_failed exact; a
        // rule's drop of a packet conntrack never saw counts as invalid.
        assert_eq!(exact(&BULLSEYE, KPROBE), ["table_full", "insert_failed"]);
        assert!(BULLSEYE.tracepoint_counting().is_err());
        let why = BULLSEYE.cause_exactness(KPROBE)[3].1.expect("chain");
        assert!(why.contains("no hash chain limit"), "{why}");
        let why = BULLSEYE.cause_exactness(KPROBE)[4].1.expect("ruleset");
        assert!(why.contains("counts as invalid"), "{why}");
        // 6.1 (everything but nftables' own frees): the kprobe backend
        // with nf_nat loaded is exact; without it, or on the tracepoint
        // backend, a NAT hook's drop counts as ruleset.
        let bookworm = KernelFeatures {
            nft_frees_own_drops: false,
            ..all()
        };
        assert_eq!(exact(&bookworm, KPROBE).len(), 6);
        assert_eq!(exact(&bookworm, NO_NAT).len(), 5);
        assert!(
            bookworm.cause_exactness(NO_NAT)[4]
                .1
                .is_some_and(|why| why.contains("NAT hook") && why.contains("nf_nat is not loaded"))
        );
        assert_eq!(exact(&bookworm, TP), ["table_full", "invalid", "other"]);
        assert!(
            bookworm.cause_exactness(TP)[4]
                .1
                .is_some_and(|why| why.contains("NAT hook"))
        );
        // 6.18: only the insert-failure split needs the kprobes.
        assert_eq!(
            exact(&all(), TP),
            ["table_full", "invalid", "ruleset", "other"]
        );
        assert_eq!(exact(&all(), NO_NAT).len(), 6);
    }

    fn all() -> KernelFeatures {
        KernelFeatures {
            drop_reasons: true,
            bpf_loop: true,
            slab_cache_arg: true,
            cnet_count: true,
            chain_limit: true,
            nft_frees_own_drops: true,
        }
    }

    #[test]
    fn tracepoint_arguments_come_from_btf() {
        let btf = KernelBtf::load().expect("vmlinux BTF");
        // 6.18: kfree_skb(skb, location, reason, rx_sk).
        assert_eq!(btf.tracepoint_args("kfree_skb"), Some(4));
        assert!(btf.tracepoint_arg_points_to("kmem_cache_free", 2, "kmem_cache"));
        assert!(btf.tracepoint_arg_points_to("kfree_skb", 0, "sk_buff"));
        assert!(!btf.tracepoint_arg_points_to("kfree_skb", 1, "sk_buff"));
        assert!(!btf.tracepoint_arg_points_to("kfree_skb", 9, "sk_buff"));
        assert_eq!(btf.tracepoint_args("no_such_tracepoint"), None);
    }
}
