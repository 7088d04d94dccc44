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

    for (family, addr, first) in [(4, "127.0.0.1", 21000), (6, "::1", 22000)] {
        for i in 0..5u64 {
            let found = mine
                .iter()
                .find(|d| d["family"] == family && d["sport"].as_u64() == Some(first + i));
            let d = found
                .unwrap_or_else(|| panic!("no drop for IPv{family} port {}: {mine:?}", first + i));
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
    assert!(!mine.is_empty(), "no invalid drops seen");
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
