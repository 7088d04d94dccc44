//! `ctscope stats` against the real kernel: exact allocation counts per
//! namespace, table-full drops equal to the kernel's own counter, bounded
//! runs, clean exits, and clear errors.

use std::{process::Command, time::Duration};

use ctscope_integration::*;

const WAIT: Duration = Duration::from_secs(10);

/// Reads `stats --json` records until `done` holds for one, then returns a
/// record taken at least two intervals later (so in-flight attribution has
/// settled).
fn settle(ct: &Ctscope, mut done: impl FnMut(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + patience(Duration::from_secs(20));
    let wait = patience(WAIT);
    loop {
        let rec = ct.next_json(wait).expect("stats record");
        assert_schema("stats.schema.json", &rec);
        if done(&rec) {
            ct.next_json(wait).expect("record");
            return ct.next_json(wait).expect("record");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached the expected state: {rec}"
        );
    }
}

#[test]
fn allocations_are_counted_exactly_per_namespace() {
    require_root();
    let _lock = shared_lock();
    let a = Netns::new().expect("namespace a");
    let b = Netns::new().expect("namespace b");
    let ct = Ctscope::start(&["stats", "--json", "--interval", "0.25"]).expect("ctscope");

    const UDP: u16 = 300;
    const TCP: usize = 20;
    const OTHER: u16 = 123;
    assert_eq!(udp_flows(&a, UDP, 20000, false).expect("udp"), UDP as usize);
    tcp_connections(&a, TCP).expect("tcp");
    assert_eq!(
        udp_flows(&b, OTHER, 30000, false).expect("udp b"),
        OTHER as usize
    );

    let want_a = u64::from(UDP) + TCP as u64;
    let rec = settle(&ct, |r| {
        netns_row(r, a.inum).is_some_and(|row| num(row, "/alloc") >= want_a)
            && netns_row(r, b.inum).is_some_and(|row| num(row, "/alloc") >= u64::from(OTHER))
    });
    let row_a = netns_row(&rec, a.inum).expect("row a");
    let row_b = netns_row(&rec, b.inum).expect("row b");
    assert_eq!(num(row_a, "/alloc"), want_a, "namespace a: {row_a}");
    assert_eq!(
        num(row_b, "/alloc"),
        u64::from(OTHER),
        "namespace b: {row_b}"
    );
    // The kernel's own entry count for the namespace is reported beside it.
    assert_eq!(num(row_a, "/entries"), a.count().expect("count"), "{row_a}");
    assert!(num(&rec, "/totals/alloc") >= want_a + u64::from(OTHER));
    assert_eq!(num(&rec, "/totals/lost_events"), 0, "{rec}");
    assert_eq!(
        rec.pointer("/backend").and_then(|b| b.as_str()),
        Some(expected_backend())
    );
}

#[test]
fn table_full_drops_equal_the_kernel_drop_counter() {
    require_root();
    let mut sysctl = SysctlGuard::new().expect("sysctl lock");
    let ns = Netns::new().expect("namespace");
    // Each namespace may hold nf_conntrack_max entries; 160 new flows into a
    // limit of 100 are refused from the 101st on (unless early drop finds
    // room, which the kernel counts too).
    sysctl
        .set("nf_conntrack_max", 100)
        .expect("lower nf_conntrack_max");
    let before = ns.kernel_stats().expect("kernel stats");
    let ct = Ctscope::start(&["stats", "--json", "--interval", "0.25"]).expect("ctscope");

    let sent = udp_flows(&ns, 160, 40000, false).expect("udp");
    let after = ns.kernel_stats().expect("kernel stats");
    let kernel_drops = after["drop"] - before["drop"];
    assert!(
        kernel_drops > 0,
        "no drops: the table never filled ({sent} sent)"
    );
    assert!(kernel_drops <= 60, "{kernel_drops}");

    let rec = settle(&ct, |r| {
        netns_row(r, ns.inum)
            .is_some_and(|row| num(row, "/drops_by_cause/table_full") >= kernel_drops)
    });
    let row = netns_row(&rec, ns.inum).expect("row");
    assert_eq!(
        num(row, "/drops_by_cause/table_full"),
        kernel_drops,
        "{row}"
    );
    assert_eq!(
        num(row, "/drops"),
        kernel_drops,
        "no drop of another cause: {row}"
    );
    assert_eq!(
        num(row, "/kernel/drop"),
        kernel_drops,
        "kernel counters beside ours: {row}"
    );
    assert_eq!(num(row, "/alloc"), 160 - kernel_drops, "{row}");
    // Machine-wide, every table-full drop ctscope saw is one the kernel
    // counted, in some namespace.
    assert_eq!(
        num(&rec, "/totals/drop_table_full"),
        num(&rec, "/kernel/drop"),
        "{rec}"
    );
    assert_eq!(num(&rec, "/totals/lost_events"), 0, "{rec}");
}

#[test]
fn count_bounds_the_number_of_reports() {
    require_root();
    let _lock = shared_lock();
    let mut ct =
        Ctscope::start(&["stats", "--json", "--interval", "0.2", "--count", "3"]).expect("ctscope");
    for _ in 0..3 {
        let rec = ct.next_json(WAIT).expect("record");
        assert_schema("stats.schema.json", &rec);
        // Loose bounds: the suite also runs under software emulation, where
        // a tick can come late and the next one early.
        assert!(num(&rec, "/interval_ms") >= 50, "{rec}");
    }
    let status = ct.wait(WAIT).expect("exit");
    assert!(status.success(), "{status}");
    assert!(
        ct.next_line(Duration::from_millis(200)).is_err(),
        "more than 3 reports"
    );
}

#[test]
fn duration_bounds_the_run() {
    require_root();
    let _lock = shared_lock();
    let start = std::time::Instant::now();
    let mut ct = Ctscope::start(&["stats", "--json", "--interval", "0.3", "--duration", "1"])
        .expect("ctscope");
    let status = ct.wait(WAIT).expect("exit");
    let elapsed = start.elapsed();
    assert!(status.success(), "{status}");
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    let mut lines = 0;
    let mut covered = 0;
    while let Ok(line) = ct.next_line(Duration::from_millis(100)) {
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        covered += num(&v, "/interval_ms");
        lines += 1;
    }
    assert!((3..=5).contains(&lines), "{lines} reports");
    assert!(
        (900..=2000).contains(&covered),
        "reports cover {covered} ms"
    );
}

#[test]
fn human_output_is_a_table() {
    require_root();
    let _lock = shared_lock();
    let mut ct = Ctscope::start(&["stats", "--interval", "0.2", "--count", "2"]).expect("ctscope");
    let header = ct.next_line(WAIT).expect("header");
    assert!(
        header.starts_with("TIME") && header.contains("ALLOC/s"),
        "{header}"
    );
    let row = ct.next_line(WAIT).expect("row");
    assert_eq!(
        row.split_whitespace().count(),
        header.split_whitespace().count(),
        "{row}"
    );
    assert!(ct.wait(WAIT).expect("exit").success());
}

#[test]
fn every_way_of_exiting_detaches_the_probes() {
    require_root();
    let _lock = shared_lock();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let mut ct = Ctscope::start(&["stats", "--json"]).expect("ctscope");
        let ids = program_ids_of(ct.pid());
        // The alloc, free and drop probes, and the resolver.
        assert!(ids.len() >= 4, "programs held: {ids:?}");
        assert_eq!(still_loaded(&ids), ids);
        let status = ct.signal(sig).expect("exit");
        if sig != libc::SIGKILL {
            assert!(status.success(), "signal {sig}: {status}");
        }
        assert!(
            wait_for(Duration::from_secs(5), || still_loaded(&ids).is_empty()),
            "programs {:?} still loaded after signal {sig}",
            still_loaded(&ids)
        );
    }
}

fn run_fail(args: &[&str], uid: Option<u32>) -> (i32, String) {
    let mut cmd = Command::new(ctscope_bin());
    cmd.args(args);
    if let Some(uid) = uid {
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
    }
    let out = cmd.output().expect("run ctscope");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_and_missing_privileges_exit_2_with_one_clear_line() {
    require_root();
    let (code, err) = run_fail(&["stats", "--bogus"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--bogus"), "{err}");

    let (code, err) = run_fail(&["stats", "--interval", "soon"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a duration"), "{err}");

    let (code, err) = run_fail(&["stats", "--duration", "0"], None);
    assert_eq!(code, 2, "{err}");

    if expected_backend() == "tracepoint" && std::env::var_os("CTSCOPE_BACKEND").is_none() {
        // No kprobes here: forcing them is an environment error.
        let (code, err) = run_fail(&["stats", "--backend", "kprobe"], None);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("no kprobes"), "{err}");
        assert!(err.contains("--backend tracepoint"), "{err}");
    }

    let (code, err) = run_fail(&["stats"], Some(65534));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Pod churn: namespaces made, used and deleted in turn (the kernel reuses
/// their inode numbers). Every record's totals equal the rows plus the
/// departed aggregate, nothing ever goes backwards or wraps, and deleted
/// namespaces leave the rows once retired.
#[test]
fn namespace_churn_keeps_totals_exact_and_monotonic() {
    require_root();
    let _lock = shared_lock();
    let mut ct = Ctscope::start(&["stats", "--json", "--interval", "0.25"]).expect("ctscope");
    const NAMESPACES: usize = 20;
    const FLOWS: u16 = 10;
    let mut inums = Vec::new();
    let check = |rec: &serde_json::Value, prev: &mut Option<serde_json::Value>| {
        assert_schema("stats.schema.json", rec);
        let rows: u64 = rec["netns"]
            .as_array()
            .expect("netns")
            .iter()
            .map(|r| num(r, "/alloc"))
            .sum();
        assert_eq!(
            rows + num(rec, "/departed/alloc"),
            num(rec, "/totals/alloc"),
            "rows + departed = totals: {rec}"
        );
        for (name, v) in rec["kernel"].as_object().expect("kernel") {
            let v = v.as_u64().expect("counter");
            assert!(v < 1 << 48, "kernel {name} wrapped: {rec}");
            if let Some(p) = prev.as_ref() {
                assert!(
                    v >= num(p, &format!("/kernel/{name}")),
                    "kernel {name} went back"
                );
            }
        }
        if let Some(p) = prev.as_ref() {
            for ptr in [
                "/totals/alloc",
                "/totals/free",
                "/departed/alloc",
                "/departed/namespaces",
            ] {
                assert!(num(rec, ptr) >= num(p, ptr), "{ptr} went back: {rec}");
            }
        }
        *prev = Some(rec.clone());
    };
    let mut prev = None;
    for i in 0..NAMESPACES {
        let ns = Netns::new().expect("namespace");
        inums.push(ns.inum);
        assert_eq!(
            udp_flows(&ns, FLOWS, 20000, false).expect("udp"),
            usize::from(FLOWS)
        );
        if i % 4 == 0 {
            check(&ct.next_json(WAIT).expect("record"), &mut prev);
        }
        // Deleted here: its entries are freed with it.
    }
    // Namespaces that never had an entry: nothing was counted for them in
    // the kernel's map, and retiring them must not fail.
    // They live for a few samples, so they are seen.
    const IDLE: usize = 3;
    let idle: Vec<Netns> = (0..IDLE)
        .map(|_| Netns::new().expect("namespace"))
        .collect();
    inums.extend(idle.iter().map(|ns| ns.inum));
    for _ in 0..3 {
        check(&ct.next_json(WAIT).expect("record"), &mut prev);
    }
    drop(idle);
    let mut distinct = inums.clone();
    distinct.sort_unstable();
    distinct.dedup();
    eprintln!(
        "{} namespaces had {} distinct inode numbers",
        NAMESPACES + IDLE,
        distinct.len()
    );
    // Retired 10 s after they are gone; then their counts are all departed.
    let want = (NAMESPACES * usize::from(FLOWS)) as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rec = ct.next_json(WAIT).expect("record");
        check(&rec, &mut prev);
        let ours_left = rec["netns"]
            .as_array()
            .expect("netns")
            .iter()
            .any(|r| r["alive"] == false);
        // Before 5.12 a namespace's net_cookie is made lazily, so ctscope
        // keys namespaces by their `struct net` address, which the kernel
        // hands to the next namespace as soon as one is freed: namespaces
        // that shared an address within the retirement delay are one row.
        // A known miss (docs/drop-causes.md, "Per kernel"), pinned: every
        // count still departs, in fewer rows.
        let departed_enough = if kernel_at_least(5, 12) {
            num(&rec, "/departed/namespaces") >= (NAMESPACES + IDLE) as u64
        } else {
            num(&rec, "/departed/namespaces") >= 1 && num(&rec, "/departed/alloc") >= want
        };
        if departed_enough && !ours_left {
            assert!(num(&rec, "/departed/alloc") >= want, "{rec}");
            if !kernel_at_least(5, 12) {
                eprintln!(
                    "KNOWN MISS: before 5.12 namespaces that reused a struct net address are \
                     one row: {} departed rows for {} namespaces",
                    num(&rec, "/departed/namespaces"),
                    NAMESPACES + IDLE
                );
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted namespaces were never retired: {rec}"
        );
    }
    let status = ct.signal(libc::SIGINT).expect("stop");
    assert!(status.success(), "{status}: {}", ct.stderr_text());
}
