//! Builds the eBPF `CONFIG` global from the running kernel's BTF and
//! kallsyms. Nothing here is a compile-time guess about struct layout.

use conntrack_common::Config;

use crate::{
    btf::{BtfError, KernelBtf},
    kallsyms::Kallsyms,
};

/// Marker the eBPF side treats as "member absent" (`kernel::ABSENT`).
const ABSENT: u32 = u32::MAX;

/// Struct member offsets and enum values. Addresses found at run time
/// (`ct_cache`, `cnet_id`, `max_ptr`) are filled in later by discovery.
pub fn from_btf(btf: &KernelBtf, ncpus: u32) -> Result<Config, BtfError> {
    let off = |path: &str| btf.offset(path);
    // A struct the kernel has no BTF for (nf_conntrack's own, on 5.10 where
    // modules publish none) is as absent as a member.
    let opt = |path: &str| -> Result<u32, BtfError> {
        match btf.optional_offset(path) {
            Ok(o) => Ok(o.unwrap_or(ABSENT)),
            Err(BtfError::NoType(_)) => Ok(ABSENT),
            Err(e) => Err(e),
        }
    };
    let enum_u32 = |ty: &str, name: &str| -> Result<u32, BtfError> {
        u32::try_from(btf.enum_value(ty, name)?).map_err(|_| BtfError::NoEnumValue(name.to_owned()))
    };
    // Since 5.13 the count is in `struct nf_conntrack_net` (nf_conntrack's
    // BTF); before, `net->ct.count`, and the users4/6 of nf_conntrack's own
    // struct have no BTF where it is a module (5.10 publishes none).
    let (cnet_in_net, cnet_count, cnet_users4, cnet_users6) =
        match btf.optional_offset("nf_conntrack_net.count") {
            Ok(Some(count)) => (
                0,
                count,
                off("nf_conntrack_net.users4")?,
                off("nf_conntrack_net.users6")?,
            ),
            Ok(None) | Err(BtfError::NoType(_)) => (1, off("net.ct.count")?, ABSENT, ABSENT),
            Err(e) => return Err(e),
        };
    Ok(Config {
        ncpus,
        full_slack: ncpus,
        // No drop reasons before 5.17: `ct_drop_loc` goes by location.
        reason_netfilter_drop: btf
            .enum_value("skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(u32::MAX),
        ips_confirmed_bit: enum_u32("ip_conntrack_status", "IPS_CONFIRMED_BIT")?,
        ips_template_bit: enum_u32("ip_conntrack_status", "IPS_TEMPLATE_BIT")?,
        ips_dying_bit: enum_u32("ip_conntrack_status", "IPS_DYING_BIT")?,
        chain_min: min_chainlen(&crate::probe::kernel_release()),
        ip_ct_untracked: enum_u32("ip_conntrack_info", "IP_CT_UNTRACKED")?,
        ip_ct_related: enum_u32("ip_conntrack_info", "IP_CT_RELATED")?,
        ip_ct_related_reply: enum_u32("ip_conntrack_info", "IP_CT_RELATED_REPLY")?,
        ips_src_nat_done_bit: enum_u32("ip_conntrack_status", "IPS_SRC_NAT_DONE_BIT")?,
        ips_dst_nat_done_bit: enum_u32("ip_conntrack_status", "IPS_DST_NAT_DONE_BIT")?,
        nft_frees_own_drops: u32::from(nft_frees_own_drops(&crate::probe::kernel_release())),

        kc_name: off("kmem_cache.name")?,
        kc_list: off("kmem_cache.list")?,
        task_nsproxy: off("task_struct.nsproxy")?,
        nsproxy_net: off("nsproxy.net_ns")?,

        skb_nfct: off("sk_buff._nfct")?,
        skb_dev: off("sk_buff.dev")?,
        skb_sk: off("sk_buff.sk")?,
        skb_refdst: off("sk_buff._skb_refdst")?,
        skb_head: off("sk_buff.head")?,
        skb_network_header: off("sk_buff.network_header")?,
        skb_transport_header: off("sk_buff.transport_header")?,
        skb_len: off("sk_buff.len")?,
        skb_protocol: off("sk_buff.protocol")?,

        dst_dev: off("dst_entry.dev")?,
        sk_net: off("sock_common.skc_net")?,
        dev_net: off("net_device.nd_net")?,
        dev_ifindex: off("net_device.ifindex")?,
        dev_name: off("net_device.name")?,

        net_inum: off("net.ns.inum")?,
        net_gen: off("net.gen")?,
        gen_len: off("net_generic.s.len")?,
        gen_ptr: off("net_generic.ptr")?,

        cnet_in_net,
        cnet_count,
        cnet_users4,
        cnet_users6,
        cnet_ecache_func: opt("nf_conntrack_net.ecache.dwork.work.func")?,
        cnet_sysctl_header: opt("nf_conntrack_net.sysctl_header")?,
        hdr_table: off("ctl_table_header.ctl_table")?,
        // Since 6.6; before, the table ends with a NULL procname.
        hdr_size: opt("ctl_table_header.ctl_table_size")?,
        ctl_procname: off("ctl_table.procname")?,
        ctl_data: off("ctl_table.data")?,
        ctl_sizeof: btf.size_of("ctl_table")?,

        ct_status: off("nf_conn.status")?,
        ct_net: off("nf_conn.ct_net")?,
        ct_use: off("nf_conn.ct_general.use")?,
        ct_size: btf.size_of("nf_conn")?,
        ct_tuplehash: off("nf_conn.tuplehash")?,
        ct_zone: opt("nf_conn.zone.id")?,
        ct_mark: opt("nf_conn.mark")?,
        ct_timeout: off("nf_conn.timeout")?,
        ct_tcp_state: opt("nf_conn.proto.tcp.state")?,
        th_tuple: off("nf_conntrack_tuple_hash.tuple")?,
        th_sizeof: btf.size_of("nf_conntrack_tuple_hash")?,
        hn_next: off("hlist_nulls_node.next")?,
        hn_pprev: off("hlist_nulls_node.pprev")?,
        tup_src_u3: off("nf_conntrack_tuple.src.u3")?,
        tup_src_port: off("nf_conntrack_tuple.src.u")?,
        tup_l3num: off("nf_conntrack_tuple.src.l3num")?,
        tup_dst_u3: off("nf_conntrack_tuple.dst.u3")?,
        tup_dst_port: off("nf_conntrack_tuple.dst.u")?,
        tup_protonum: off("nf_conntrack_tuple.dst.protonum")?,
        tup_dst_dir: off("nf_conntrack_tuple.dst.dir")?,
        iter_hash: opt("ct_iter_state.hash")?,
        iter_size: opt("ct_iter_state.htable_size")?,
        net_cookie: opt("net.net_cookie")?,
        net_list: off("net.list")?,
        net_ns_ops: off("net.ns.ops")?,
        netns_key_is_addr: u32::from(
            !cookie_set_at_creation(&crate::probe::kernel_release())
                || btf.optional_offset("net.net_cookie")?.is_none(),
        ),
        ..Config::default()
    })
}

/// Whether the kernel gives every namespace its `net_cookie` when it is
/// created: since 5.12 ("net: initialize net->net_cookie at netns setup");
/// before, the cookie was generated on first use and may still be 0.
pub fn cookie_set_at_creation(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (5, 12)
}

/// The kernel's `MIN_CHAINLEN` (net/netfilter/nf_conntrack_core.c): 50
/// since 6.3 ("netfilter: conntrack: increase the max chain length"), 8 in
/// 5.15-6.2, when the limit became random.
pub fn min_chainlen(release: &str) -> u32 {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if (major, minor) >= (6, 3) { 50 } else { 8 }
}

/// Whether nftables frees the packets its rules drop inside `nft_do_chain`:
/// since 6.7 ("netfilter: nf_tables: add packet drop reasons", NF_DROP_REASON).
pub fn nft_frees_own_drops(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (6, 7)
}

/// Functions that call `nf_hook_slow` (through `NF_HOOK`, `nf_hook` or
/// `NF_HOOK_LIST`) for one hook each: the drop probe finds the caller on
/// the stack and so the hook (net/ipv4/ip_input.c, ip_forward.c,
/// ip_output.c and their net/ipv6 twins; `nf_hook_slow_list` serves only
/// PRE_ROUTING).
pub const HOOK_CALLERS: [(&str, u8); 18] = {
    use conntrack_common::classify::hook::*;
    [
        ("ip_rcv", PRE_ROUTING),
        ("ip_sublist_rcv", PRE_ROUTING),
        ("nf_hook_slow_list", PRE_ROUTING),
        ("ipv6_rcv", PRE_ROUTING),
        ("ip6_sublist_rcv", PRE_ROUTING),
        ("ip_local_deliver", LOCAL_IN),
        ("ip6_input", LOCAL_IN),
        ("ip_forward", FORWARD),
        ("ip6_forward", FORWARD),
        ("__ip_local_out", LOCAL_OUT),
        ("__ip6_local_out", LOCAL_OUT),
        ("ip6_xmit", LOCAL_OUT),
        ("raw_send_hdrinc", LOCAL_OUT),
        ("rawv6_send_hdrinc", LOCAL_OUT),
        ("ip_output", POST_ROUTING),
        ("ip_mc_output", POST_ROUTING),
        ("ip6_output", POST_ROUTING),
        ("ip6_finish_output2", POST_ROUTING),
    ]
};

/// Function addresses used to tell who dropped a packet and to recognise
/// `struct nf_conntrack_net`.
pub fn add_symbols(config: &mut Config, syms: &Kallsyms) {
    let mut slot = 0;
    for (name, hook) in HOOK_CALLERS {
        if let Some((lo, hi)) = syms.range(name)
            && let Some(c) = config.hook_callers.get_mut(slot)
        {
            *c = conntrack_common::HookCaller {
                lo,
                hi,
                hook: u64::from(hook),
            };
            slot += 1;
        }
    }
    config.ecache_work = syms.addr("ecache_work").unwrap_or(0);
    if let Some((lo, hi)) = syms.range("nf_hook_slow") {
        config.loc_hook_lo = lo;
        config.loc_hook_hi = hi;
    }
    if let Some((lo, hi)) = syms.range("nft_do_chain") {
        config.loc_nft_lo = lo;
        config.loc_nft_hi = hi;
    }
    // In nf_nat: listed only while the module is loaded.
    config.loc_nat_icmp = syms.addr("nf_nat_icmp_reply_translation").unwrap_or(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_gives_a_complete_config() {
        let btf = KernelBtf::load().expect("vmlinux BTF");
        let cfg = from_btf(&btf, 2).expect("config");
        // Offsets inside nf_conn that kernel-notes.md records for 6.x.
        assert_eq!(cfg.th_tuple, 16);
        assert_eq!(cfg.hn_pprev, 8);
        assert_eq!(cfg.th_sizeof, 56);
        assert_eq!(cfg.tup_dst_u3, 20);
        assert_eq!(cfg.tup_protonum, 38);
        assert_ne!(cfg.skb_nfct, 0);
        assert_ne!(cfg.net_gen, 0);
        assert_ne!(cfg.ct_zone, ABSENT, "the build kernel has conntrack zones");
        assert_ne!(
            cfg.iter_hash, ABSENT,
            "the build kernel has /proc/net/nf_conntrack"
        );
        assert_eq!(cfg.ct_timeout, 8);
    }

    #[test]
    fn namespaces_are_keyed_by_cookie_from_5_12() {
        assert!(cookie_set_at_creation("6.18.44-fc-v657"));
        assert!(cookie_set_at_creation("5.12.0"));
        assert!(!cookie_set_at_creation("5.10.0-35-amd64"));
        let btf = KernelBtf::load().expect("vmlinux BTF");
        let cfg = from_btf(&btf, 2).expect("config");
        assert_eq!(cfg.netns_key_is_addr, 0);
        assert_ne!(cfg.net_cookie, ABSENT);
    }

    #[test]
    fn nftables_frees_its_drops_from_6_7() {
        assert!(nft_frees_own_drops("6.18.44-fc-v657"));
        assert!(nft_frees_own_drops("6.7.0"));
        assert!(!nft_frees_own_drops("6.1.0-50-amd64"));
        assert!(!nft_frees_own_drops("5.10.0-35-amd64"));
    }

    #[test]
    fn chain_limit_follows_the_kernel_version() {
        assert_eq!(min_chainlen("6.18.44-fc-v657"), 50);
        assert_eq!(min_chainlen("6.3.0"), 50);
        assert_eq!(min_chainlen("6.1.0-50-amd64"), 8);
        assert_eq!(min_chainlen("5.15.0"), 8);
    }
}
