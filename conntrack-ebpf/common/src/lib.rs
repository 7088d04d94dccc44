//! Types shared by ctscope's eBPF programs and its userspace loader.
//!
//! Every type here crosses the kernel/user boundary through a map, a ring
//! buffer or a read-only global, so each is `#[repr(C)]` with its padding
//! spelled out: both sides must agree byte for byte, and the compile-time
//! size checks at the bottom fail the build if a field is added carelessly.
#![cfg_attr(not(test), no_std)]

pub mod classify;
pub mod frames;

/// What an [`Event`] reports.
pub mod kind {
    /// A conntrack entry was allocated. The probe sees only the slab object
    /// (`ct_net` and the tuple are written after `kmem_cache_alloc`
    /// returns), so it sends the address and time; userspace fills in the
    /// namespace and tuple (from the entry's free event, or by reading the
    /// entry once it is published) before anything else sees the event.
    /// The allocation time is in `Event::alloc_ts_ns`.
    pub const ALLOC: u8 = 1;
    /// A conntrack entry went back to the slab.
    pub const FREE: u8 = 2;
    /// Netfilter dropped a packet (`SKB_DROP_REASON_NETFILTER_DROP`).
    pub const DROP: u8 = 3;
}

/// Why a packet was dropped. The numbering is part of the trace format.
pub mod cause {
    /// No entry could be allocated: the namespace's count was at
    /// `nf_conntrack_max` and early drop freed nothing.
    pub const TABLE_FULL: u8 = 0;
    /// Conntrack judged the packet invalid (no entry attached, table not full):
    /// dropped by conntrack itself or by a `ct state invalid drop` rule.
    pub const INVALID: u8 = 1;
    /// The new entry could not be inserted at confirm time (a clash that could
    /// not be resolved, or the entry died first).
    pub const INSERT_FAILED: u8 = 2;
    /// The new entry could not be inserted because a hash chain was longer
    /// than the kernel's limit.
    pub const CHAIN_TOO_LONG: u8 = 3;
    /// A ruleset dropped a packet that conntrack had accepted ("policy").
    pub const RULESET: u8 = 4;
    /// None of the above: kernel code other than conntrack and the ruleset
    /// dropped the packet (NAT, a helper, legacy iptables on 6.7 and later,
    /// ...). The event's `location` and `hook` say where. Counted in
    /// [`super::counter::DROP_OTHER`], not per namespace.
    pub const OTHER: u8 = 5;
    /// Number of causes counted per namespace and in the counters from
    /// [`super::counter::DROP_FIRST`] (all but [`OTHER`]).
    pub const COUNT: usize = 5;
    /// Number of causes, [`OTHER`] included.
    pub const ALL: usize = 6;
}

/// Bits of `Event::flags`.
pub mod flag {
    /// The packet carried a conntrack entry when it was dropped.
    pub const HAS_CT: u8 = 1;
    /// The entry carried the kernel's IPS_CONFIRMED bit.
    pub const CONFIRMED: u8 = 2;
    /// The packet's headers could not be read in full.
    pub const TRUNCATED: u8 = 4;
    /// The packet is neither IPv4 nor IPv6.
    pub const NON_IP: u8 = 8;
    /// The namespace could not be determined.
    pub const NO_NETNS: u8 = 16;
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Entries allocated from the `nf_conntrack` slab.
    pub const ALLOC: u32 = 0;
    /// Entries returned to the slab.
    pub const FREE: u32 = 1;
    /// First of [`super::cause::COUNT`] drop counters, indexed by cause.
    pub const DROP_FIRST: u32 = 2;
    /// Events that did not fit in the ring buffer.
    pub const LOST_EVENTS: u32 = 7;
    /// Allocation events sent without their namespace and tuple: userspace
    /// could not read the entry before it gave up on it (written by
    /// userspace, source/resolve.rs; in traces of ctscope 0.1, allocations
    /// the kernel's pending map had no room for).
    pub const UNRESOLVED: u32 = 8;
    /// Events whose namespace had no room in the per-namespace map.
    pub const NETNS_OVERFLOW: u32 = 9;
    /// Unused since 0.2 (the in-kernel resolver is gone).
    pub const RESERVED_10: u32 = 10;
    /// Unused since 0.2.
    pub const RESERVED_11: u32 = 11;
    /// Drop details not sent because of in-kernel sampling (counts stay exact).
    pub const SAMPLED_OUT: u32 = 12;
    /// `early_drop()` calls that made room (kprobe backend only).
    pub const EARLY_DROP: u32 = 13;
    /// Entries linked into the hash table (kprobe backend only).
    pub const INSERTED: u32 = 14;
    /// Entries unlinked by `nf_ct_delete` (kprobe backend only).
    pub const DELETED: u32 = 15;
    /// Probe runs the kernel skipped because the program was already running
    /// on that CPU (an interrupt landed in the probe and the softirq run on
    /// its way out hit the same hook). Written by userspace from the
    /// programs' `recursion_misses`, not by the probes. Most are events of
    /// no interest (other slab caches); it bounds what the counts can have
    /// missed.
    pub const PROBE_MISSES: u32 = 16;
    /// Unused since 0.2 (there are no backup probes any more).
    pub const RESERVED_17: u32 = 17;
    /// Drops of cause [`super::cause::OTHER`] (since 0.2; 0 in older traces).
    pub const DROP_OTHER: u32 = 18;
    /// Size of the array (spare slots keep the trace format stable when
    /// counters are added).
    pub const COUNT: u32 = 20;

    /// The counter of drops of cause `c` (one of [`super::cause`]).
    #[inline(always)]
    pub const fn drop_index(c: u8) -> u32 {
        if c == super::cause::OTHER {
            DROP_OTHER
        } else {
            DROP_FIRST + c as u32
        }
    }
}

/// Indexes into the `SETTINGS` array, which userspace may change at any time.
pub mod setting {
    /// Bit mask of the event classes to send: [`EVENTS_CT`], [`EVENTS_DROP`].
    pub const EVENTS: u32 = 0;
    /// Send the details of one drop in N (0 or 1: every drop).
    pub const DROP_SAMPLE: u32 = 1;
    /// Thread group whose `kfree` of a `/proc/net/nf_conntrack` iterator
    /// reveals the hash table (see `locate_seq`); 0: none.
    pub const LOCATE_TGID: u32 = 2;
    /// Size of the array.
    pub const COUNT: u32 = 4;

    /// Allocation and free events.
    pub const EVENTS_CT: u32 = 1;
    /// Drop events.
    pub const EVENTS_DROP: u32 = 2;
}

/// A connection's identity, as conntrack keeps it (`struct nf_conntrack_tuple`)
/// or as parsed from a dropped packet.
///
/// Ports are in host byte order. For ICMP and ICMPv6, `sport` is the echo
/// identifier and `dport` is `type << 8 | code`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address: IPv4 in the first four bytes, or IPv6.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// `AF_INET` (2) or `AF_INET6` (10); 0 when unknown.
    pub family: u8,
    /// IP protocol number.
    pub proto: u8,
    pub _pad: [u8; 2],
}

/// The tracepoint backend's record of a conntrack slab allocation in the
/// `EVENTS` ring buffer: the address, time and CPU are all the probe can know
/// (the entry is not initialised yet), so it sends 24 bytes instead of a
/// whole [`Event`]. Every record is written to fresh ring memory (the ring
/// cycles through megabytes, so its cache lines are cold): the full event
/// cost ~500 ns per allocation, most of it cache misses on 136 bytes
/// (docs/benchmarks.md). Userspace tells the two apart by the record's
/// length and turns this one into an [`Event`] of [`kind::ALLOC`]
/// ([`AllocRecord::event`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocRecord {
    /// Address of the conntrack entry.
    pub ct: u64,
    /// `bpf_ktime_get_ns()` at the allocation.
    pub ts_ns: u64,
    pub cpu: u32,
    pub _pad: u32,
}

impl AllocRecord {
    /// The allocation event this record stands for.
    pub fn event(&self) -> Event {
        Event {
            ts_ns: self.ts_ns,
            alloc_ts_ns: self.ts_ns,
            ct: self.ct,
            kind: kind::ALLOC,
            cpu: self.cpu,
            ..Event::default()
        }
    }
}

/// One record in the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event was produced.
    pub ts_ns: u64,
    /// Address of the conntrack entry; 0 for drops without one.
    pub ct: u64,
    /// For [`kind::ALLOC`], when the slab allocation happened.
    pub alloc_ts_ns: u64,
    /// One of [`kind`].
    pub kind: u8,
    /// For drops, one of [`cause`].
    pub cause: u8,
    /// TCP flags byte (FIN=1, SYN=2, RST=4, PSH=8, ACK=16, URG=32, ECE=64, CWR=128).
    pub tcp_flags: u8,
    /// Bits of [`flag`].
    pub flags: u8,
    pub cpu: u32,
    /// Network namespace inode number; 0 if unknown.
    pub netns: u32,
    /// Interface of the dropped packet; 0 if none.
    pub ifindex: u32,
    /// Packet length (`skb->len`).
    pub len: u32,
    /// Conntrack mark.
    pub mark: u32,
    /// Low 32 bits of the conntrack status (`enum ip_conntrack_status`).
    pub status: u32,
    /// Conntrack zone id.
    pub zone: u16,
    /// Drops: the netfilter hook, one of [`classify::hook`] (0 unknown;
    /// traces before 0.2 hold 0 here).
    pub hook: u8,
    pub _pad: u8,
    /// Interface name, NUL padded.
    pub ifname: [u8; 16],
    pub tuple: Tuple,
    /// The namespace's identity for this boot: its key in the per-namespace
    /// map (`struct net.net_cookie`, never reused, unlike the inode number;
    /// see [`NetnsCounters`] for kernels where it is not available). 0 if
    /// unknown.
    pub netns_id: u64,
    /// Drops: the kernel address that freed the packet (`kfree_skb`'s
    /// `location`), or, when the kprobe backend saw NAT refuse it, the
    /// address of the NAT function that did (`Config::loc_nat_icmp`); 0 if
    /// unknown.
    pub location: u64,
}

/// Per-namespace counters: a per-CPU hash map keyed by the namespace's key,
/// its `net_cookie` (unique for the boot), or on kernels where the cookie is
/// generated lazily (before 5.12) the address of its `struct net`
/// (`Config::netns_key_is_addr`).
///
/// `alloc` is counted only by probes that see the namespace at allocation
/// (the kprobe backend); userspace derives allocations from frees and the
/// namespace's live count (source/netns.rs), the same way on every backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsCounters {
    /// The namespace's inode number, written by the CPU that created the
    /// entry (other CPUs' copies hold 0: take the maximum).
    pub inum: u32,
    pub _pad: u32,
    pub alloc: u64,
    pub free: u64,
    pub drops: [u64; cause::COUNT],
}

/// Namespaces the `sample_netns` program reads in one run at most.
pub const MAX_NETNS_SAMPLED: u32 = 4096;

/// One live network namespace, as `sample_netns` found it on the kernel's
/// list of namespaces.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsSample {
    /// The namespace's key in the per-namespace map (see [`NetnsCounters`]).
    pub key: u64,
    /// `net_cookie` (0 where the kernel has not generated it).
    pub cookie: u64,
    /// Address of its `struct net`.
    pub net: u64,
    /// Inode number (as in "table full in netns N").
    pub inum: u32,
    /// `nf_conntrack_count` of the namespace; -1 if unreadable.
    pub count: i32,
}

/// Output of one `sample_netns` run.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetnsList {
    /// `bpf_ktime_get_ns()` when the run started.
    pub ktime_ns: u64,
    /// Namespaces listed in `items`.
    pub len: u32,
    /// 1 when the walk went round the whole list; 0 when it stopped at
    /// [`MAX_NETNS_SAMPLED`] or on a read that failed.
    pub complete: u32,
    pub items: [NetnsSample; MAX_NETNS_SAMPLED as usize],
}

/// Namespaces one pass of `sample_netns_bounded` visits at most (kernels
/// without `bpf_loop`): userspace runs passes until the list is done.
pub const NETNS_PASS_STEPS: u32 = 256;

/// Entries one `resolve_ct` run reads at most.
pub const RESOLVE_BATCH: u32 = 1024;

/// Bytes of a `struct nf_conn` copied at once when an entry is read whole
/// (`resolve_ct`): 248 on 6.18; larger entries are read field by field.
pub const CT_IMAGE: usize = 512;

/// Input and output of `resolve_ct`: userspace fills `cts`, the program
/// reads each entry into `out`. `out[i].ct` is `cts[i]` when the entry is
/// published (`init_conntrack` has written `ct_net` and then set the
/// refcount, so the fields belong to the allocation that is live now), and
/// 0 when it is not (yet) or could not be read. `out[i].netns` is the
/// inode number, `out[i].timeout` unused; the namespace key is in `keys`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ResolveBatch {
    /// `bpf_ktime_get_ns()` when the entries were read.
    pub ktime_ns: u64,
    pub len: u32,
    pub _pad: u32,
    pub cts: [u64; RESOLVE_BATCH as usize],
    /// The namespace key (see [`NetnsCounters`]) of each entry read.
    pub keys: [u64; RESOLVE_BATCH as usize],
    pub out: [ChainNode; RESOLVE_BATCH as usize],
    /// Scratch: the entry being read, copied in one helper call.
    pub image: [u8; CT_IMAGE],
}

/// Result of the start-up discovery programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Address of the `nf_conntrack` kmem_cache; 0 if not found.
    pub ct_cache: u64,
    /// Address of the calling namespace's `struct nf_conntrack_net`.
    pub cnet: u64,
    /// Number of kmem_caches walked.
    pub caches_walked: u32,
    /// `net_generic` id of `struct nf_conntrack_net`; 0 if not found.
    pub cnet_id: u32,
    /// Entries of the conntrack sysctl table copied to `SYSCTLS`.
    pub sysctl_count: u32,
    /// Set to 1 by the cache walk once it has run.
    pub cache_walk_done: u32,
}

/// One entry of the namespace's conntrack sysctl table, read at discovery so
/// userspace can find the address of `nf_conntrack_max` (a data symbol that
/// is not in kallsyms on kernels without CONFIG_KALLSYMS_ALL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysctlSlot {
    pub procname: [u8; 32],
    /// `ctl_table.data`: the address of the variable behind the sysctl.
    pub data: u64,
    /// The first 8 bytes at `data`, so userspace can check the address
    /// against the value it reads from /proc/sys.
    pub value: u64,
}

/// Largest number of sysctl entries discovery copies.
pub const MAX_SYSCTLS: u32 = 64;

/// Configuration written into the eBPF object's read-only `CONFIG` global at
/// load time: addresses found at start-up and kernel struct member offsets
/// read from the running kernel's BTF. Nothing here is a compile-time guess.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `nf_conntrack` kmem_cache address; the probes compare against it.
    pub ct_cache: u64,
    /// Address of `nf_conntrack_max` (0 if unknown).
    pub max_ptr: u64,
    /// Address of the kernel function `ecache_work`, which every
    /// `struct nf_conntrack_net` points to; it identifies that struct.
    pub ecache_work: u64,
    /// Text range of `nf_hook_slow`: a `kfree_skb` from here means a hook
    /// (conntrack, NAT, legacy iptables) returned `NF_DROP`.
    pub loc_hook_lo: u64,
    pub loc_hook_hi: u64,
    /// Text range of `nft_do_chain`: since 6.7 nftables frees the packets its
    /// rules drop itself (net/netfilter/nf_tables_core.c).
    pub loc_nft_lo: u64,
    pub loc_nft_hi: u64,
    /// Address of `nf_conntrack_htable_size` (the `nf_conntrack_buckets`
    /// sysctl's data, checked against /proc/sys); 0 if unknown.
    pub size_ptr: u64,
    /// Address of `__per_cpu_offset` (kprobe backend; 0 if unknown: a data
    /// symbol, in kallsyms only with CONFIG_KALLSYMS_ALL).
    pub per_cpu_offset: u64,
    /// Addresses of the per-CPU variables `bpf_prog_active` and
    /// `current_kprobe` (kprobe backend; 0 if unknown, like
    /// `per_cpu_offset`): while either is set on a CPU, conntrack's kprobes
    /// there are skipped, and the drop probe must not trust their silence.
    pub bpf_prog_active: u64,
    pub current_kprobe: u64,
    /// Address of `nf_nat_icmp_reply_translation` (kallsyms; 0 if nf_nat
    /// is not loaded): the location a drop gets when the kprobe backend saw
    /// that function refuse the packet (`kprobe_hook::NAT_ICMP`).
    pub loc_nat_icmp: u64,

    /// Number of possible CPUs.
    pub ncpus: u32,
    /// `SKB_DROP_REASON_NETFILTER_DROP`.
    pub reason_netfilter_drop: u32,
    /// Bit number of `IPS_CONFIRMED`.
    pub ips_confirmed_bit: u32,
    /// Bit number of `IPS_TEMPLATE`.
    pub ips_template_bit: u32,
    /// Bit number of `IPS_DYING`.
    pub ips_dying_bit: u32,
    /// `IP_CT_UNTRACKED` from `enum ip_conntrack_info`.
    pub ip_ct_untracked: u32,
    /// `net_generic` id of `struct nf_conntrack_net` (0 if unknown).
    pub cnet_id: u32,
    /// A namespace whose count is within this many entries of
    /// `nf_conntrack_max` is full (frees on other CPUs race with the probe).
    pub full_slack: u32,

    // struct kmem_cache
    pub kc_name: u32,
    pub kc_list: u32,
    // struct task_struct, struct nsproxy
    pub task_nsproxy: u32,
    pub nsproxy_net: u32,
    // struct sk_buff
    pub skb_nfct: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub skb_refdst: u32,
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_len: u32,
    pub skb_protocol: u32,
    // struct dst_entry, struct sock_common, struct net_device
    pub dst_dev: u32,
    pub sk_net: u32,
    pub dev_net: u32,
    pub dev_ifindex: u32,
    pub dev_name: u32,
    // struct net, struct net_generic
    pub net_inum: u32,
    pub net_gen: u32,
    pub gen_len: u32,
    pub gen_ptr: u32,
    // struct nf_conntrack_net
    pub cnet_count: u32,
    pub cnet_users4: u32,
    pub cnet_users6: u32,
    pub cnet_ecache_func: u32,
    pub cnet_sysctl_header: u32,
    // struct ctl_table_header, struct ctl_table
    pub hdr_table: u32,
    pub hdr_size: u32,
    pub ctl_procname: u32,
    pub ctl_data: u32,
    pub ctl_sizeof: u32,
    // struct nf_conn
    pub ct_status: u32,
    pub ct_net: u32,
    pub ct_tuplehash: u32,
    pub ct_zone: u32,
    pub ct_mark: u32,
    /// `nf_conn.timeout`: u32 jiffies, absolute once the entry is confirmed.
    pub ct_timeout: u32,
    /// `nf_conn.proto.tcp.state` (u8).
    pub ct_tcp_state: u32,
    // struct nf_conntrack_tuple_hash, struct hlist_nulls_node
    pub th_tuple: u32,
    pub th_sizeof: u32,
    pub hn_next: u32,
    pub hn_pprev: u32,
    // struct nf_conntrack_tuple
    pub tup_src_u3: u32,
    pub tup_src_port: u32,
    pub tup_l3num: u32,
    pub tup_dst_u3: u32,
    pub tup_dst_port: u32,
    pub tup_protonum: u32,
    /// `nf_conntrack_tuple.dst.dir`: which of the entry's two nodes this is.
    pub tup_dst_dir: u32,
    // struct ct_iter_state (the /proc/net/nf_conntrack iterator)
    pub iter_hash: u32,
    pub iter_size: u32,
    /// The kernel's `MIN_CHAINLEN`: inserts fail once a chain has more than
    /// a random limit of at least this many nodes.
    pub chain_min: u32,
    /// Bits of [`kprobe_hook`]: which kprobes are attached (kprobe backend).
    pub kp_hooks: u32,
    /// `struct net` -> `ct.stat` (`struct ip_conntrack_stat __percpu *`).
    pub net_ct_stat: u32,
    /// `struct ip_conntrack_stat` members.
    pub stat_insert_failed: u32,
    pub stat_chaintoolong: u32,
    /// `nf_conn.ct_general.use` (refcount): 0 until `init_conntrack` has
    /// written `ct_net` and published it (smp_wmb, then the refcount is set
    /// to 1), so the resolver waits for it to be non-zero.
    pub ct_use: u32,
    /// `struct net` -> `net_cookie` (ABSENT where the kernel has none).
    pub net_cookie: u32,
    /// `struct net` -> `list` (the kernel's list of namespaces).
    pub net_list: u32,
    /// `struct net` -> `ns.ops` (the same for every namespace; tells a
    /// namespace on the list from the list's head).
    pub net_ns_ops: u32,
    /// 1: per-namespace maps are keyed by the `struct net` address, because
    /// this kernel generates `net_cookie` lazily (before 5.12) and it may
    /// still be 0; 0: keyed by `net_cookie`.
    pub netns_key_is_addr: u32,
    /// 1: nftables frees the packets its rules drop inside `nft_do_chain`
    /// (6.7 and later), so `nf_hook_slow` frees no nftables rule drop.
    pub nft_frees_own_drops: u32,
    /// Bit numbers of `IPS_SRC_NAT_DONE` and `IPS_DST_NAT_DONE`.
    pub ips_src_nat_done_bit: u32,
    pub ips_dst_nat_done_bit: u32,
    /// `IP_CT_RELATED` and `IP_CT_RELATED_REPLY` (`enum ip_conntrack_info`).
    pub ip_ct_related: u32,
    pub ip_ct_related_reply: u32,
    /// `sizeof(struct nf_conn)`: how much of an entry one copy reads.
    pub ct_size: u32,
    /// 1: the namespace's conntrack count lives in `struct net` itself
    /// (`net->ct.count`, before 5.13, when `struct nf_conntrack_net` held
    /// only `users4/6`); `cnet_count` is then an offset into `struct net`
    /// and `cnet_of(net)` is `net`.
    pub cnet_in_net: u32,
    /// Keeps `hook_callers` 8-byte aligned.
    pub _pad_hooks: u32,
    /// Functions that call `nf_hook_slow` for one hook: the return address
    /// after `nf_hook_slow` on the stack tells the drop's hook. Unused
    /// slots are zero.
    pub hook_callers: [HookCaller; MAX_HOOK_CALLERS],
}

/// Slots of `Config::hook_callers`.
pub const MAX_HOOK_CALLERS: usize = 24;

/// A function whose calls of `nf_hook_slow` are all for one hook
/// (`ip_rcv`: PRE_ROUTING, `ip_output`: POST_ROUTING, ...).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCaller {
    pub lo: u64,
    pub hi: u64,
    /// One of [`classify::hook`].
    pub hook: u64,
}

/// Buckets one run of the `walk_chunk` program covers at most; a chunk
/// keeps the CPU for a few milliseconds at most.
pub const WALK_CHUNK: u32 = 16384;
/// Nodes counted on one chain at most (lengths are u16).
pub const CHAIN_CAP: u32 = 65535;
/// Entries `walk_bucket` lists from one chain at most.
pub const MAX_BUCKET_ENTRIES: u32 = 128;
/// Steps (one read each) of one pass of `walk_chunk_bounded` (kernels
/// without `bpf_loop`): the verifier follows a bounded loop step by step,
/// so a pass must stay far below its limits; userspace runs passes until
/// the chunk is done.
pub const WALK_PASS_STEPS: u32 = 8;
/// Nodes of one pass of `walk_bucket_bounded` (each may copy an entry).
pub const LIST_PASS_STEPS: u32 = 8;

/// Output of one `walk_chunk` run: chain lengths of buckets
/// `start .. start + done`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WalkChunk {
    pub start: u32,
    /// Buckets completed (the run may stop early on its iteration budget).
    pub done: u32,
    /// Nodes counted on the completed chains.
    pub nodes: u64,
    /// Chains walked again because the walk ended in another bucket's marker.
    pub restarts: u32,
    /// Chains that never ended in their own marker (or could not be read).
    pub unverified: u32,
    /// Chains longer than [`CHAIN_CAP`].
    pub truncated: u32,
    pub _pad: u32,
    pub lens: [u16; WALK_CHUNK as usize],
}

/// One node found on a chain by `walk_bucket`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainNode {
    /// Address of the entry.
    pub ct: u64,
    /// The entry's original-direction tuple.
    pub tuple: Tuple,
    pub status: u32,
    /// `nf_conn.timeout`, u32 jiffies.
    pub timeout: u32,
    pub netns: u32,
    pub mark: u32,
    pub zone: u16,
    /// 0: the original-direction node is in this bucket; 1: the reply's.
    pub dir: u8,
    /// `nf_conn.proto.tcp.state` (meaningful for TCP only).
    pub tcp_state: u8,
    pub _pad: u32,
}

/// Output of `walk_bucket`: the nodes of one chain.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BucketEntries {
    /// `bpf_jiffies64()` and `bpf_ktime_get_ns()` when the walk ran.
    pub jiffies: u64,
    pub ktime_ns: u64,
    pub bucket: u32,
    /// Nodes on the chain (up to [`CHAIN_CAP`]).
    pub len: u32,
    /// Nodes copied to `nodes`.
    pub listed: u32,
    /// 1 when the chain ended in this bucket's marker.
    pub verified: u32,
    pub nodes: [ChainNode; MAX_BUCKET_ENTRIES as usize],
}

/// Records one `walk_chunk` run with holders on keeps at most (the
/// `HOLDERS_OUT` map; a power of two, so an index can be masked). Userspace
/// reads the map value onto its stack (224 KiB): a larger one overflowed a
/// runtime worker's 2 MiB stack.
pub const HOLDER_CAP: u32 = 4096;
/// Once this many records are kept, the run hands out no new bucket: the
/// chains already in its lanes finish into the rest of [`HOLDER_CAP`], and
/// userspace resumes at the first bucket not handed out.
pub const HOLDER_SOFT_CAP: u32 = HOLDER_CAP - 1024;

/// One entry found by `walk_chunk` with holders on: what `ctscope holders`
/// groups by, read from the entry's original-direction node only (each
/// entry is linked twice; the reply node is skipped after its `dir` byte).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HolderRec {
    /// The kernel's `struct nf_conntrack_tuple` bytes as they are (one read);
    /// userspace decodes them with the BTF offsets (`Config::tup_*`).
    pub tuple: [u8; 40],
    /// `nf_conn.timeout`, u32 jiffies (absolute: the entry is confirmed).
    pub timeout: u32,
    /// The namespace's inode number.
    pub netns: u32,
    /// `nf_conn.status` (low 32 bits) for protocols other than TCP; 0 for TCP.
    pub status: u32,
    /// Index of the entry's bucket within the chunk (< [`WALK_CHUNK`]).
    pub bucket: u16,
    /// Which walk of that bucket found it (chains are walked again when an
    /// entry moved under the walk: only the last walk's records count).
    pub tries: u8,
    /// `nf_conn.proto.tcp.state` for TCP; 0 otherwise.
    pub tcp_state: u8,
}

/// Output of one `walk_chunk` run with holders on.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HolderChunk {
    /// `bpf_jiffies64()` when the run started (timeouts are relative to it).
    pub jiffies: u64,
    /// Records in `recs`.
    pub len: u32,
    /// Lowest bucket (within the chunk) one of whose entries found no room;
    /// `u32::MAX`: none.
    pub lost_from: u32,
    pub recs: [HolderRec; HOLDER_CAP as usize],
}

/// The hash table as userspace last validated it, for the drop probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableInfo {
    /// `nf_conntrack_hash`; 0 when unknown.
    pub base: u64,
    /// Buckets of that table.
    pub size: u32,
    /// Longest chain seen by the latest walk.
    pub max_chain: u32,
}

/// How a candidate table address was found.
pub mod located {
    /// From the `/proc/net/nf_conntrack` iterator ctscope opened.
    pub const SEQ_FILE: u32 = 1;
    /// From a live entry: its chain's marker gives the bucket, `pprev`
    /// leads back to the bucket head.
    pub const ENTRY: u32 = 2;
    /// From the `nf_conntrack_hash` pointer, whose address kallsyms lists
    /// on kernels with CONFIG_KALLSYMS_ALL (how kernels without `bpf_loop`,
    /// which have no entry locator, find it).
    pub const SYMBOL: u32 = 3;
}

/// A candidate address of the hash table, written by the locator probes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Located {
    pub base: u64,
    /// The entry it was found from ([`located::ENTRY`]).
    pub entry: u64,
    /// Table size seen with it ([`located::SEQ_FILE`]); 0 if not known.
    pub size: u32,
    /// One of [`located`]; 0: nothing found yet.
    pub how: u32,
}

/// Bits of `Config::kp_hooks`: the conntrack functions probed directly.
pub mod kprobe_hook {
    /// `__nf_conntrack_alloc` entry and return (replaces the slab tracepoint).
    pub const ALLOC: u32 = 1;
    /// `nf_conntrack_free` (replaces the slab tracepoint).
    pub const FREE: u32 = 2;
    /// `__nf_conntrack_confirm` entry and return.
    pub const CONFIRM: u32 = 4;
    /// `__nf_conntrack_hash_insert`.
    pub const INSERT: u32 = 8;
    /// `nf_ct_delete` entry and return.
    pub const DELETE: u32 = 16;
    /// `early_drop` return.
    pub const EARLY_DROP: u32 = 32;
    /// `nf_nat_icmp_reply_translation` entry and return (nf_nat): NAT
    /// refusing an ICMP error, which its hook then drops with `NF_DROP`.
    pub const NAT_ICMP: u32 = 64;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made only of integers and byte
    // arrays, with explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::NetnsCounters {}
    unsafe impl aya::Pod for super::NetnsSample {}
    unsafe impl aya::Pod for super::NetnsList {}
    unsafe impl aya::Pod for super::ResolveBatch {}
    unsafe impl aya::Pod for super::Discovery {}
    unsafe impl aya::Pod for super::SysctlSlot {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::WalkChunk {}
    unsafe impl aya::Pod for super::ChainNode {}
    unsafe impl aya::Pod for super::BucketEntries {}
    unsafe impl aya::Pod for super::TableInfo {}
    unsafe impl aya::Pod for super::HolderRec {}
    unsafe impl aya::Pod for super::HolderChunk {}
    unsafe impl aya::Pod for super::Located {}
}

// Layout checks: a change that introduces implicit padding fails here.
const _: () = assert!(core::mem::size_of::<Tuple>() == 40);
const _: () = assert!(core::mem::size_of::<Event>() == 128);
const _: () = assert!(core::mem::size_of::<AllocRecord>() == 24);
const _: () = assert!(core::mem::size_of::<NetnsCounters>() == 8 * (3 + cause::COUNT));
const _: () = assert!(core::mem::size_of::<NetnsSample>() == 32);
const _: () = assert!(core::mem::size_of::<NetnsList>() == 16 + 32 * MAX_NETNS_SAMPLED as usize);
const _: () = assert!(
    core::mem::size_of::<ResolveBatch>() == 16 + (8 + 8 + 72) * RESOLVE_BATCH as usize + CT_IMAGE
);
const _: () = assert!(core::mem::size_of::<Discovery>() == 32);
const _: () = assert!(core::mem::size_of::<SysctlSlot>() == 48);
const _: () = assert!(core::mem::size_of::<Config>() == 12 * 8 + 78 * 4 + 24 * MAX_HOOK_CALLERS);
const _: () = assert!(core::mem::size_of::<WalkChunk>() == 32 + 2 * WALK_CHUNK as usize);
const _: () = assert!(core::mem::size_of::<ChainNode>() == 72);
const _: () =
    assert!(core::mem::size_of::<BucketEntries>() == 32 + 72 * MAX_BUCKET_ENTRIES as usize);
const _: () = assert!(core::mem::size_of::<TableInfo>() == 16);
const _: () = assert!(core::mem::size_of::<HolderRec>() == 56);
const _: () = assert!(core::mem::size_of::<HolderChunk>() == 16 + 56 * HOLDER_CAP as usize);
const _: () = assert!(core::mem::size_of::<Located>() == 24);
