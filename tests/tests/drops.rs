//! `ctscope drops` against the real kernel: table-full SYNs with their exact
//! tuples over IPv4 and IPv6, ruleset drops shown as policy, invalid packets,
//! and per-cause counts equal to the kernel's own counters.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use ctscope_integration::*;
use serde_json::Value;

/// Stops ctscope with SIGINT and returns the drop lines and the summary it
/// printed, checking each against the schema.
fn finish(mut ct: Ctscope) -> (Vec<Value>, Value) {
    let status = ct.signal(libc::SIGINT).expect("exit");
    assert!(status.success(), "{status}: {}", ct.stderr_text());
    let mut drops = Vec::new();
    let mut summary = None;
    while let Ok(line) = ct.next_line(Duration::from_millis(500)) {
        let v: Value = serde_json::from_str(&line).expect("json line");
        assert_schema("drops.schema.json", &v);
        match v["type"].as_str() {
            Some("drop") => drops.push(v),
            Some("summary") => summary = Some(v),
            other => panic!("unexpected line type {other:?}: {line}"),
        }
    }
    (drops, summary.expect("a summary line at exit"))
}

fn in_ns(drops: &[Value], ns: &Netns) -> Vec<Value> {
    drops
        .iter()
        .filter(|d| d["netns"].as_u64() == Some(u64::from(ns.inum)))
        .cloned()
        .collect()
}

#[test]
fn table_full_syns_carry_their_exact_tuple_over_ipv4_and_ipv6() {
    require_root();
    let mut sysctl = SysctlGuard::new().expect("lock");
    let ns = Netns::new().expect("namespace");
    let v4: SocketAddr = (Ipv4Addr::LOCALHOST, 8080).into();
    let v6: SocketAddr = (Ipv6Addr::LOCALHOST, 8080).into();
    let _l4 = tcp_listener(&ns, v4).expect("listen v4");
    let _l6 = tcp_listener(&ns, v6).expect("listen v6");
    // Fill the namespace up to the limit with TCP connections: completed
    // handshakes are ASSURED, which early_drop() never evicts, so every SYN
    // that follows is refused (UDP fillers could be evicted to make room).
    sysctl.set("nf_conntrack_max", 20).expect("lower max");
    tcp_connections(&ns, 20).expect("fill");
    assert_eq!(ns.count().expect("count"), 20);

    let before = ns.kernel_stats().expect("stats");
    let ct = Ctscope::start(&["drops", "--json"]).expect("ctscope");
    // Source ports below the ephemeral range (32768-60999), so that none
    // is still held by one of the connections that filled the table.
    for i in 0..5u16 {
        let src: SocketAddr = (Ipv4Addr::LOCALHOST, 21000 + i).into();
        tcp_syn(&ns, src, v4, Duration::from_millis(20)).expect("syn v4");
        let src: SocketAddr = (Ipv6Addr::LOCALHOST, 22000 + i).into();
        tcp_syn(&ns, src, v6, Duration::from_millis(20)).expect("syn v6");
    }
    let after = ns.kernel_stats().expect("stats");
    std::thread::sleep(Duration::from_millis(300));
    let (drops, summary) = finish(ct);
    let mine = in_ns(&drops, &ns);
    // 5.10: after a refusal anywhere, conntrack's gc worker kills entries
    // that may be early-dropped (TCP TIME_WAIT among them) while a table is
    // over 95 % full, so after earlier tests this one's filler may be gone
    // before its SYNs: the kernel then refuses nothing. Seen only after the
    // other tests of this file in the 5.10 VM (alone it passes). Pinned:
    // ctscope must still have seen exactly what the kernel dropped, none.
    if mine.is_empty() && after["drop"] == before["drop"] && !kernel_at_least(6, 1) {
        eprintln!(
            "SKIPPED: the kernel refused no SYN (before 6.1 the gc worker's early drop \
             emptied the table first); ctscope saw no drop either"
        );
        return;
    }

    for (family, addr, first) in [(4, "127.0.0.1", 21000), (6, "::1", 22000)] {
        for i in 0..5u64 {
            let found = mine
                .iter()
                .find(|d| d["family"] == family && d["sport"].as_u64() == Some(first + i));
            let d = found.unwrap_or_else(|| {
                panic!(
                    "no drop for IPv{family} port {}: {mine:?} (namespace {}; all drops: \
                     {drops:?}; summary {summary}; kernel before {before:?} after {after:?})",
                    first + i,
                    ns.inum
                )
            });
            assert_eq!(d["cause"], "table_full", "{d}");
            assert_eq!(d["proto"], "tcp", "{d}");
            assert_eq!(d["tcp_flags"], "S", "{d}");
            assert_eq!(d["src"], addr, "{d}");
            assert_eq!(d["dst"], addr, "{d}");
            assert_eq!(d["dport"], 8080, "{d}");
            assert_eq!(d["policy"], false, "{d}");
        }
    }
    // Exactly the kernel's count of refusals in this namespace.
    let kernel_drops = after["drop"] - before["drop"];
    assert_eq!(mine.len() as u64, kernel_drops, "{mine:?}");
    assert!(mine.iter().all(|d| d["cause"] == "table_full"));
    assert!(
        summary["by_cause"]["table_full"].as_u64() >= Some(kernel_drops),
        "{summary}"
    );
    assert_eq!(summary["lost_events"], 0, "{summary}");
    let top = summary["top_destinations"].as_array().expect("array");
    assert!(
        top.iter()
            .any(|t| t["endpoint"] == "127.0.0.1:8080" && t["drops"] == 5),
        "{summary}"
    );
}

#[test]
fn ruleset_drops_are_policy_and_filters_apply() {
    require_root();
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    ns.nft("add rule inet ctscope_test in tcp dport 9 drop\nadd rule inet ctscope_test in udp dport 9 drop")
        .expect("drop rules");
    let all = Ctscope::start(&["drops", "--json"]).expect("ctscope");
    let udp_only = Ctscope::start(&[
        "drops",
        "--json",
        "--proto",
        "udp",
        "--netns",
        &ns.inum.to_string(),
    ])
    .expect("ctscope filtered");
    let dst: SocketAddr = (Ipv4Addr::LOCALHOST, 9).into();
    tcp_syn(
        &ns,
        (Ipv4Addr::LOCALHOST, 23000).into(),
        dst,
        Duration::from_millis(20),
    )
    .expect("syn");
    udp_flows(&ns, 1, 9, false).expect("udp");
    std::thread::sleep(Duration::from_millis(300));

    let (drops, _) = finish(all);
    let mine = in_ns(&drops, &ns);
    assert_eq!(mine.len(), 2, "{mine:?}");
    for d in &mine {
        assert_eq!(d["cause"], "ruleset", "{d}");
        assert_eq!(d["policy"], true, "{d}");
        assert_eq!(d["dport"], 9, "{d}");
    }
    let (filtered, summary) = finish(udp_only);
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    assert_eq!(filtered[0]["proto"], "udp");
    assert_eq!(summary["matched"], 1, "{summary}");
}

#[test]
fn invalid_packets_are_reported_and_counted_like_the_kernel() {
    require_root();
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    // Conntrack marks invalid what it cannot track; this rule drops them
    // where they are first seen, so each counts once in the kernel too.
    ns.nft("add rule inet ctscope_test out ct state invalid drop")
        .expect("rule");
    let listener = tcp_listener(&ns, (Ipv4Addr::LOCALHOST, 0).into()).expect("listen");
    let server_port = listener.local_addr().expect("addr").port();
    let client = ns
        .run(move || std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, server_port)))
        .expect("ns")
        .expect("connect");
    let (_server, _) = listener.accept().expect("accept");
    // Forget the connection and refuse to pick up mid-stream flows: the
    // next segment has no entry and is invalid.
    ns.exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"])
        .expect("sysctl");
    ns.exec(&["conntrack", "-F"]).expect("flush");

    let before = ns.kernel_stats().expect("stats");
    let ct = Ctscope::start(&["drops", "--json"]).expect("ctscope");
    std::io::Write::write_all(&mut &client, b"hello").expect("write");
    std::thread::sleep(Duration::from_millis(100));
    // Reset rather than let TCP retransmit: SO_LINGER 0 closes with an RST
    // (also invalid, also dropped).
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&client),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    drop(client);
    std::thread::sleep(Duration::from_millis(500));
    let after = ns.kernel_stats().expect("stats");
    let (drops, _) = finish(ct);
    let mine = in_ns(&drops, &ns);
    assert!(
        !mine.is_empty(),
        "no invalid drops seen: ns {} all drops {drops:?} kernel before {before:?} after {after:?}",
        ns.inum
    );
    for d in &mine {
        assert_eq!(d["cause"], "invalid", "{d}");
        assert_eq!(d["dport"], server_port, "{d}");
        assert!(
            d["tcp_flags"]
                .as_str()
                .is_some_and(|f| f.contains('A') || f.contains('R')),
            "{d}"
        );
    }
    assert!(
        mine.iter().any(|d| d["tcp_flags"] == "PA"),
        "the data segment: {mine:?}"
    );
    assert_eq!(
        mine.len() as u64,
        after["invalid"] - before["invalid"],
        "{mine:?}"
    );
}

/// Sends ICMP echo requests to `dst` from inside `ns` over a raw socket
/// (root; no `ping` binary needed).
fn icmp_echoes(ns: &Netns, dst: Ipv4Addr, count: u16) -> anyhow::Result<()> {
    ns.run(move || -> anyhow::Result<()> {
        // SAFETY: plain socket calls on a descriptor this closure owns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        for seq in 1..=count {
            let mut msg = [8u8, 0, 0, 0, 0x43, 0x54, (seq >> 8) as u8, seq as u8];
            let sum = !msg
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .fold(0u32, |a, w| {
                    let s = a + w;
                    (s & 0xffff) + (s >> 16)
                }) as u16;
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            // SAFETY: valid buffer and address for the call's duration.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            anyhow::ensure!(sent >= 0, "sendto: {}", std::io::Error::last_os_error());
            std::thread::sleep(Duration::from_millis(300));
        }
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
        Ok(())
    })?
}

/// `IcmpOutRedirects` of the namespace (/proc/net/snmp read from inside).
fn redirects_sent(ns: &Netns) -> u64 {
    let text = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .expect("ns")
        .expect("snmp");
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp: "));
    let (Some(names), Some(values)) = (icmp.next(), icmp.next()) else {
        panic!("no Icmp rows: {text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutRedirects")
        .and_then(|(_, v)| v.parse().ok())
        .expect("OutRedirects")
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// A forwarding namespace R with a NAT table and a host H on its subnet
/// (10.77.1.0/24) that routes 10.77.9.0/24 through R. R routes that prefix
/// via a third address on the same link, so forwarding H's packets goes back
/// out the interface they came in on, and R tells H with an ICMP redirect
/// (`ip_forward`, before the FORWARD hook). With `dnat`, R also rewrites
/// 10.77.9.42 to 10.77.9.43 at PREROUTING (the NATed flows of the kernel's
/// conntrack_tcp_unreplied.sh).
fn nat_router(dnat: bool) -> (Netns, Netns) {
    let r = Netns::new().expect("namespace R");
    let h = Netns::new().expect("namespace H");
    let ip = |ns: &Netns, args: &str| {
        let mut all = vec!["ip"];
        all.extend(args.split_whitespace());
        ns.exec(&all).unwrap_or_else(|e| panic!("ip {args}: {e}"));
    };
    ip(
        &r,
        &format!("link add r0 type veth peer name h0 netns {}", h.name),
    );
    ip(&r, "addr add 10.77.1.1/24 dev r0");
    ip(&r, "link set r0 up");
    ip(&h, "addr add 10.77.1.2/24 dev h0");
    ip(&h, "link set h0 up");
    ip(
        &r,
        "neigh add 10.77.1.3 lladdr 02:00:00:00:00:03 dev r0 nud permanent",
    );
    ip(&r, "route add 10.77.9.0/24 via 10.77.1.3 dev r0");
    ip(&h, "route add 10.77.9.0/24 via 10.77.1.1");
    r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .expect("forwarding");
    r.exec(&["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=1"])
        .expect("redirects");
    let prerouting = if dnat {
        "chain prerouting {\n\
           type nat hook prerouting priority -100;\n\
           ip daddr 10.77.9.42 dnat to 10.77.9.43\n\
         }\n"
    } else {
        ""
    };
    r.nft(&format!(
        "table ip nat {{\n\
           {prerouting}\
           chain postrouting {{\n\
             type nat hook postrouting priority 100;\n\
             oifname \"nomatch\" masquerade\n\
           }}\n\
         }}"
    ))
    .expect("nat table");
    (r, h)
}

/// H pings 10.77.9.42 twice through R; returns R's drops and checks what
/// holds in both of issue 17's cases: R sent redirects, the kernel counted
/// no insert failure, and every drop in R is a redirect NAT refused,
/// reported as `other` on NAT's OUTPUT hook (`nf_nat_ipv4_local_fn`) at
/// `nf_nat_icmp_reply_translation` (kprobe backend) or `nf_hook_slow`
/// (tracepoint backend; symbols from kallsyms) — never insert_failed, and
/// never ruleset except the tracepoint backend's known miss before 6.7.
fn redirects_through(r: &Netns, h: &Netns) -> Vec<Value> {
    let before = r.kernel_stats().expect("stats");
    let redirects_before = redirects_sent(r);
    let ct = Ctscope::start(&["drops", "--json"]).expect("ctscope");
    icmp_echoes(h, Ipv4Addr::new(10, 77, 9, 42), 2).expect("echo requests");
    std::thread::sleep(Duration::from_millis(300));
    let after = r.kernel_stats().expect("stats");
    let (drops, summary) = finish(ct);
    let mine = in_ns(&drops, r);

    assert!(
        redirects_sent(r) > redirects_before,
        "R sent no redirect: the scenario did not happen"
    );
    assert_eq!(
        after["insert_failed"] - before["insert_failed"],
        0,
        "the kernel saw no insert failure"
    );
    // The kprobe backend sees NAT refuse the redirect
    // (nf_nat_icmp_reply_translation returns 0; nf_nat is loaded before
    // ctscope starts here) and names that function. The tracepoint backend
    // sees only the free by nf_hook_slow: from 6.7, nftables frees its own
    // drops elsewhere, so that is `other`; before 6.7 every netfilter drop
    // is freed there and NAT's is told from a rule's by nothing it reads.
    // A known miss (docs/drop-causes.md), pinned so that it shows, and so a
    // fix shows too.
    let (cause, policy, at) = if expected_backend() == "kprobe" {
        ("other", false, "nf_nat_icmp_reply_translation+0x")
    } else if kernel_at_least(6, 7) {
        ("other", false, "nf_hook_slow+0x")
    } else {
        eprintln!(
            "KNOWN MISS: before 6.7 the tracepoint backend reports a NAT hook's drop as ruleset"
        );
        ("ruleset", true, "nf_hook_slow+0x")
    };
    for d in &mine {
        assert_eq!(d["proto"], "icmp", "only redirects are dropped: {d}");
        assert_eq!(d["icmp_type"], 5, "{d}");
        assert_eq!(d["cause"], cause, "{d}");
        assert_eq!(d["policy"], policy, "{d}");
        assert_eq!(d["src"], "10.77.1.1", "{d}");
        assert_eq!(d["dst"], "10.77.1.2", "{d}");
        let location = d["location"].as_str().unwrap_or_default();
        assert!(location.starts_with(at), "{at}… from kallsyms: {d}");
        // The hook comes from the stack at the free (nf_hook_slow's
        // caller, __ip_local_out): NAT's OUTPUT hook.
        assert_eq!(d["hook"], "output", "{d}");
    }
    // Every kernel of the suite drops at least the first redirect (5.10,
    // 6.1, 6.12 in the VM and the build kernel: one in case 1, two in
    // case 2), so the causes above are always checked on something.
    assert!(
        !mine.is_empty(),
        "no redirect was dropped in R (namespace {}): {summary}",
        r.inum
    );
    mine
}

/// Issue 17, case 1: the redirect for H's first echo request carries that
/// request's entry (new, never inserted: `icmp_glue_bits` attaches it as
/// RELATED) and NAT drops it (`nf_nat_icmp_reply_translation`: that
/// entry's NAT is not done yet); the kernel's `insert_failed` stays 0.
/// ctscope used to call it insert_failed.
#[test]
fn icmp_redirects_of_a_nat_router_are_other_not_insert_failed() {
    require_root();
    let _lock = shared_lock();
    let (r, h) = nat_router(false);
    let mine = redirects_through(&r, &h);
    // On the build kernel the first redirect is dropped; the second
    // carries the flow's confirmed entry, NAT done without a mapping, and
    // passes.
    assert!(mine.len() <= 1, "{mine:?}");
}

/// Issue 17, case 2: with the flow DNATed, the second echo request's
/// redirect carries a confirmed entry whose NAT is done, and NAT drops it
/// too (`IPS_NAT_MASK`). Freed by `nf_hook_slow` like a legacy rule drop,
/// ctscope used to call it ruleset (policy) in a ruleset that drops nothing.
#[test]
fn icmp_redirects_of_natted_flows_are_other_not_ruleset() {
    require_root();
    let _lock = shared_lock();
    let (r, h) = nat_router(true);
    let mine = redirects_through(&r, &h);
    assert!(mine.len() <= 2, "{mine:?}");
}

/// Reconciliation: a drop ctscope cannot attribute exactly shows as a
/// mismatch with the kernel's counters instead of hiding. A rule in a chain
/// that runs before conntrack (priority -300) drops packets that carry no
/// entry; ctscope reports them as `invalid` (docs/drop-causes.md), but the
/// kernel's `invalid` counter does not move: `stats` must say so.
#[test]
fn causes_beyond_the_kernels_counters_are_a_warning() {
    require_root();
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    ns.nft(
        "table inet ctscope_raw {\n\
           chain out { type filter hook output priority -300; udp dport 9-11 drop; }\n\
         }",
    )
    .expect("raw rule");
    let before = ns.kernel_stats().expect("stats");
    let ct = Ctscope::start(&["stats", "--json", "--interval", "0.25"]).expect("ctscope");
    udp_flows(&ns, 3, 9, false).expect("udp");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // The excess each interval reported: ours can arrive over several.
    let mut warned = 0;
    let rec = loop {
        let rec = ct.next_json(Duration::from_secs(10)).expect("record");
        assert_schema("stats.schema.json", &rec);
        warned += num(&rec, "/causes/interval/invalid");
        let seen = netns_row(&rec, ns.inum).map_or(0, |r| num(r, "/drops_by_cause/invalid"));
        if seen >= 3 && warned >= 3 {
            break rec;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reconciled: {rec}"
        );
    };
    let after = ns.kernel_stats().expect("stats");
    assert_eq!(after["invalid"], before["invalid"], "the kernel saw none");
    let row = netns_row(&rec, ns.inum).expect("row");
    assert_eq!(num(row, "/drops_by_cause/invalid"), 3, "{row}");
    // Other namespaces (other tests) can only add to the excess.
    assert!(num(&rec, "/causes/total/invalid") >= 3, "{rec}");
    std::thread::sleep(Duration::from_millis(200));
    let stderr = ct.stderr_text();
    assert!(
        stderr.contains("drop causes exceed the kernel's counters") && stderr.contains("invalid +"),
        "{stderr}"
    );
}
