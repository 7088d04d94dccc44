//! Why netfilter dropped a packet: one pure function of what the probes see,
//! shared by the tracepoint and kprobe programs and tested on the host
//! against the truth table of docs/drop-causes.md.
//!
//! The probes gather [`DropFacts`] (reading the packet, its entry, the
//! namespace's count and, when it matters, the entry's hash chain) and call
//! [`classify`]. Nothing here reads memory, loops or panics, so the
//! verifier sees straight-line code.
//!
//! Kernel sources: net/netfilter/core.c (`nf_hook_slow`),
//! net/netfilter/nf_tables_core.c (`nft_do_chain`),
//! net/netfilter/nf_conntrack_core.c (`__nf_conntrack_alloc`,
//! `__nf_conntrack_confirm`), net/netfilter/nf_nat_proto.c
//! (`nf_nat_icmp_reply_translation`, `nf_nat_ipv4_fn`), net/ipv4/icmp.c (`icmp_glue_bits`,
//! which attaches the offending packet's entry to an ICMP error).

use crate::cause;

/// The code that freed the packet (`kfree_skb`'s `location`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freer {
    /// `nf_hook_slow`: a hook returned a plain `NF_DROP` (conntrack, NAT,
    /// a helper, legacy iptables; before 6.7 nftables rules too). Also
    /// assumed when the function's address is unknown.
    HookSlow,
    /// `nft_do_chain`: an nftables rule verdict (6.7 and later).
    NftChain,
    /// Any other function that freed a packet with NETFILTER_DROP.
    Elsewhere,
}

/// What tells a `kfree_skb` that netfilter dropped the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMark {
    /// The tracepoint carries a drop reason (5.17 and later): whether it
    /// is `SKB_DROP_REASON_NETFILTER_DROP`.
    Reason { netfilter_drop: bool },
    /// No drop reason (before 5.17): only the freeing function tells.
    /// `nf_hook_slow` is where a hook's `NF_DROP` is freed
    /// (net/netfilter/core.c, `case NF_DROP: kfree_skb(skb)`), and before
    /// 6.7 nftables' rule drops too; nothing else frees a netfilter drop
    /// then.
    NoReason,
}

/// Is this freed packet one netfilter dropped? With a drop reason, the
/// reason says; without one, the packet must have been freed by
/// `nf_hook_slow` (its address known: the loader refuses the reasonless
/// probe without it). On such kernels a packet netfilter code frees
/// outside `nf_hook_slow` is not seen as a drop, so cause `other` only
/// covers hook drops there (docs/drop-causes.md, "Per kernel").
#[inline(always)]
pub fn is_netfilter_drop(mark: DropMark, freer: Freer) -> bool {
    match mark {
        DropMark::Reason { netfilter_drop } => netfilter_drop,
        DropMark::NoReason => freer == Freer::HookSlow,
    }
}

/// The conntrack entry the packet carries (`skb->_nfct`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// No entry and no `IP_CT_UNTRACKED` marker.
    Nothing,
    /// `IP_CT_UNTRACKED` (notrack) or a template entry (`IPS_TEMPLATE`).
    Untracked,
    /// A real entry.
    Entry(Entry),
}

/// What the probe read of an attached entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `IPS_CONFIRMED`.
    pub confirmed: bool,
    /// Linked into the hash table: `tuplehash[ORIGINAL].hnnode.pprev` is
    /// not the NULL `__nf_conntrack_alloc` wrote.
    pub linked: bool,
    /// `IPS_DYING`.
    pub dying: bool,
    /// `ctinfo` is `IP_CT_RELATED` or `IP_CT_RELATED_REPLY`.
    pub related: bool,
    /// Exactly one of `IPS_SRC_NAT_DONE` and `IPS_DST_NAT_DONE` is set: NAT
    /// ran at one of the packet's hooks and not yet at the other, so the
    /// packet never reached the last hook, where confirm runs.
    pub nat_half_done: bool,
}

/// Whether the kernel's own insert-failure path ran for this packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertEvidence {
    /// Nothing seen either way (tracepoint backend, counters unreadable).
    Unknown,
    /// `__nf_conntrack_confirm` returned NF_DROP for this packet (kprobe),
    /// or this CPU's `insert_failed` counter rose since the last drop;
    /// `chain_too_long` when its `chaintoolong` counter rose with it.
    Failed { chain_too_long: bool },
    /// The confirm probe is attached and did not fail for this packet, or
    /// the `insert_failed` counter has not moved.
    NotFailed,
}

/// What a walk of the hash table says about a never-inserted entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainVerdict {
    /// Not walked (no table address, or not needed).
    Unknown,
    /// The entry's original-direction chain is short and the latest walk
    /// saw no chain past the limit.
    Short,
    /// The entry's own chain is past the kernel's smallest limit.
    TooLong,
    /// Its own chain is short, but the latest walk saw chains past the
    /// limit: a reply-direction failure is the likely one.
    LongElsewhere,
}

/// The namespace's conntrack count and `nf_conntrack_max`, as read at the
/// drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Unreadable (namespace or `nf_conntrack_max` not found).
    Unknown,
    Read {
        count: i32,
        max: i32,
        slack: u32,
    },
}

/// Netfilter hooks (`enum nf_inet_hooks`), as carried in events (`hook`
/// field: 0 unknown, else the hook number plus one).
pub mod hook {
    pub const UNKNOWN: u8 = 0;
    pub const PRE_ROUTING: u8 = 1;
    pub const LOCAL_IN: u8 = 2;
    pub const FORWARD: u8 = 3;
    pub const LOCAL_OUT: u8 = 4;
    pub const POST_ROUTING: u8 = 5;
}

/// Everything the classification depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropFacts {
    pub freer: Freer,
    pub attached: Attached,
    pub fill: Fill,
    /// Conntrack is in use for the packet's family in its namespace
    /// (`nf_conntrack_net.users4/6`); `None` when unreadable.
    pub conntrack_in_use: Option<bool>,
    /// kprobe backend: whether `__nf_conntrack_alloc` refused an entry in
    /// this namespace on this CPU just before (`None`: not probed).
    pub refused: Option<bool>,
    pub insert: InsertEvidence,
    pub chain: ChainVerdict,
    /// kprobe backend: NAT's `nf_nat_icmp_reply_translation` returned 0
    /// for this very packet (an ICMP error NAT cannot translate: "If NAT
    /// isn't finished, assume it and drop", or an entry NATed, for a
    /// redirect), so NAT's hook returned `NF_DROP` and `nf_hook_slow`
    /// freed it. Before 6.7 nothing else tells this drop from an nftables
    /// rule's. False where not probed.
    pub nat_refused: bool,
    /// One of [`hook`].
    pub hook: u8,
    /// IP protocol number of the packet (0 when not parsed).
    pub proto: u8,
    /// ICMP or ICMPv6 type (meaningful when `proto` is 1 or 58).
    pub icmp_type: u8,
    /// The kernel frees nftables rule drops inside `nft_do_chain` (6.7 and
    /// later): a drop freed by `nf_hook_slow` is then not an nftables rule.
    pub nft_frees_own_drops: bool,
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// Is this an ICMP error message? `icmp_glue_bits` attaches the entry of
/// the packet that caused an error to the error (`nf_ct_attach`), so the
/// error carries *that* entry, which its own insert never concerned.
#[inline(always)]
pub fn is_icmp_error(proto: u8, icmp_type: u8) -> bool {
    match proto {
        // Destination unreachable, source quench, redirect, time exceeded,
        // parameter problem (include/uapi/linux/icmp.h).
        IPPROTO_ICMP => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        // ICMPv6 error messages are types 0-127 (RFC 4443).
        IPPROTO_ICMPV6 => icmp_type < 128,
        _ => false,
    }
}

/// Could the drop be a failed insert at confirm time? Only for an entry
/// never linked into the table and not confirmed, dropped by a hook at a
/// point where confirm runs (the last hook: POSTROUTING or LOCAL_IN), that
/// is the packet's own entry (not an ICMP error carrying the entry of the
/// packet it reports), and whose NAT was not left half done.
#[inline(always)]
fn may_be_insert_failure(e: &Entry, f: &DropFacts) -> bool {
    if e.linked || e.confirmed || e.nat_half_done {
        return false;
    }
    if e.related && is_icmp_error(f.proto, f.icmp_type) {
        return false;
    }
    matches!(f.hook, hook::UNKNOWN | hook::LOCAL_IN | hook::POST_ROUTING)
}

/// The drop's cause, one of [`cause`]. See docs/drop-causes.md.
#[inline(always)]
pub fn classify(f: &DropFacts) -> u8 {
    let from_rule = f.freer == Freer::NftChain;
    // Freed by neither netfilter core nor nftables: name the code.
    if f.freer == Freer::Elsewhere {
        return cause::OTHER;
    }
    // NAT's hook refused the packet (seen by the kprobe backend): kernel
    // code, whatever the kernel frees rule drops with, and never a failed
    // insert (confirm runs after NAT, so it never saw this packet).
    if f.freer == Freer::HookSlow && f.nat_refused {
        return cause::OTHER;
    }
    // A drop by a hook that is not an nftables rule (6.7 and later): with
    // nothing of conntrack's to blame, it is kernel code, not the ruleset.
    let not_ours = if from_rule || !f.nft_frees_own_drops {
        cause::RULESET
    } else {
        cause::OTHER
    };
    match f.attached {
        Attached::Nothing => {
            if !from_rule {
                match f.refused {
                    Some(true) => return cause::TABLE_FULL,
                    Some(false) => {}
                    None => {
                        if is_full(f.fill) {
                            return cause::TABLE_FULL;
                        }
                    }
                }
            }
            if f.conntrack_in_use == Some(false) {
                return not_ours;
            }
            cause::INVALID
        }
        Attached::Untracked => not_ours,
        Attached::Entry(e) => {
            if from_rule {
                return cause::RULESET;
            }
            if !may_be_insert_failure(&e, f) {
                return not_ours;
            }
            match f.insert {
                InsertEvidence::Failed { chain_too_long } => {
                    if chain_too_long {
                        cause::CHAIN_TOO_LONG
                    } else {
                        cause::INSERT_FAILED
                    }
                }
                InsertEvidence::NotFailed => not_ours,
                InsertEvidence::Unknown => {
                    if e.dying {
                        return cause::INSERT_FAILED;
                    }
                    match f.chain {
                        ChainVerdict::TooLong | ChainVerdict::LongElsewhere => {
                            cause::CHAIN_TOO_LONG
                        }
                        ChainVerdict::Short | ChainVerdict::Unknown => cause::INSERT_FAILED,
                    }
                }
            }
        }
    }
}

/// Is the namespace's count at `nf_conntrack_max`? When the table is full,
/// `__nf_conntrack_alloc` raises and lowers the count again, so it reads
/// exactly max; a free on another CPU between the refusal and the probe
/// can lower it by one per CPU (`slack`). Unknown: a refusal by a hook
/// with no entry attached is most likely the table.
#[inline(always)]
fn is_full(fill: Fill) -> bool {
    match fill {
        Fill::Unknown => true,
        Fill::Read { max, .. } if max <= 0 => false,
        Fill::Read { count, max, slack } => i64::from(count) + i64::from(slack) >= i64::from(max),
    }
}

/// Whether the probe needs the namespace's fill and whether conntrack is in
/// use there, for a drop of a packet without an entry: not when the cause
/// is decided by who freed it (a rule's drop is never table-full; a drop
/// elsewhere is `other`). Each is a few kernel reads on the path of every
/// dropped packet, and rule-drop floods are common.
#[inline(always)]
pub fn needs_fill(freer: Freer) -> bool {
    freer == Freer::HookSlow
}

/// Whether conntrack's use in the namespace matters (see [`needs_fill`]).
#[inline(always)]
pub fn needs_users(freer: Freer) -> bool {
    freer != Freer::Elsewhere
}

/// Whether the probe needs to walk the entry's chain: only for a drop that
/// may be an insert failure with no direct evidence either way.
#[inline(always)]
pub fn needs_chain(f: &DropFacts) -> bool {
    match f.attached {
        Attached::Entry(e) => {
            f.freer == Freer::HookSlow
                && !f.nat_refused
                && f.insert == InsertEvidence::Unknown
                && !e.dying
                && may_be_insert_failure(&e, f)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
