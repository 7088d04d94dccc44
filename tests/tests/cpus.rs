//! Flows arriving on every CPU at once (issue 16): per-cause drop counts
//! equal to the kernel's own counters while conntrack runs in softirq on
//! all CPUs and in process context, nested.
//!
//! A `tx` namespace without conntrack sends UDP flows over a veth pair to
//! an `rx` namespace that tracks them; RPS on rx's end spreads the
//! receiving softirqs over all CPUs (idle CPUs run them in the idle task,
//! pid 0 on every CPU). At the same time senders inside rx, one pinned to
//! each CPU, make new flows over loopback from process context, where the
//! softirq runs nested in conntrack's own calls (at the `local_bh_enable`
//! that ends `__nf_conntrack_confirm`, or at an interrupt's exit). The
//! kprobe backend used to pair its entry and return probes by pid, which
//! all of these share; conntrack-ebpf/common/src/frames.rs.
//!
//! The VM suite runs this executable in a boot of its own with 4 vCPUs
//! (xtask/src/vm, MORE_VCPUS); elsewhere it uses the CPUs there are.

use std::{
    collections::HashMap,
    fs,
    net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket},
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use ctscope_integration::*;
use serde_json::Value;

const TX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const RX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const WAIT: Duration = Duration::from_secs(30);

/// Online CPUs; in the VM, exactly as many as the harness booted with.
fn cpus() -> usize {
    let n = thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(want) = std::env::var("CTSCOPE_VM_VCPUS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        assert_eq!(n, want, "the guest was booted with {want} vCPUs");
    }
    n
}

/// `tx` (no conntrack) and `rx` (conntrack active) joined by a veth pair
/// whose rx end spreads received packets over every CPU (RPS).
fn link(ncpus: usize) -> (Netns, Netns) {
    let tx = Netns::new().expect("tx namespace");
    let rx = Netns::new().expect("rx namespace");
    // No ruleset, no conntrack hooks: tx only sends.
    tx.exec(&["nft", "flush", "ruleset"]).expect("flush tx");
    tx.exec(&[
        "ip", "link", "add", "vt", "type", "veth", "peer", "name", "vr", "netns", &rx.name,
    ])
    .expect("veth");
    tx.exec(&["ip", "addr", "add", "10.77.0.1/24", "dev", "vt"])
        .expect("tx addr");
    rx.exec(&["ip", "addr", "add", "10.77.0.2/24", "dev", "vr"])
        .expect("rx addr");
    tx.exec(&["ip", "link", "set", "vt", "up"]).expect("tx up");
    rx.exec(&["ip", "link", "set", "vr", "up"]).expect("rx up");
    let mask = format!("{:x}", (1u64 << ncpus) - 1);
    // `ip netns exec` mounts the namespace's own /sys.
    rx.exec(&[
        "sh",
        "-c",
        &format!("echo {mask} > /sys/class/net/vr/queues/rx-0/rps_cpus"),
    ])
    .expect("rps");
    // A permanent neighbour: no ARP queue in front of the first flows.
    let out = rx.exec(&["cat", "/sys/class/net/vr/address"]).expect("mac");
    let mac = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    tx.exec(&[
        "ip",
        "neigh",
        "replace",
        "10.77.0.2",
        "lladdr",
        &mac,
        "dev",
        "vt",
        "nud",
        "permanent",
    ])
    .expect("neighbour");
    (tx, rx)
}

/// Pins the calling thread to one CPU.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
    // on this thread (pid 0) with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Starts senders in `tx` (over the veth) and in `rx` (over loopback), one
/// of each pinned to each CPU of the first half, all at once, each sending
/// `per_sender` new flows. RPS hands the veth's packets to every CPU: the
/// senders' CPUs run those softirqs in the senders' tasks, nested in their
/// own conntrack calls, and the other CPUs run them in their idle tasks.
fn flood(tx: &Netns, rx: &Netns, ncpus: usize, per_sender: u16, first_port: u16) {
    let senders = ncpus.div_ceil(2);
    let start = Arc::new(Barrier::new(2 * senders));
    thread::scope(|s| {
        for cpu in 0..senders {
            for (ns, src, dst, base) in [
                (tx, TX_ADDR, RX_ADDR, first_port),
                (
                    rx,
                    Ipv4Addr::LOCALHOST,
                    Ipv4Addr::LOCALHOST,
                    first_port + senders as u16 * per_sender,
                ),
            ] {
                let start = Arc::clone(&start);
                let first = base + cpu as u16 * per_sender;
                s.spawn(move || {
                    ns.run(move || {
                        pin(cpu);
                        let sock = UdpSocket::bind((src, 0)).expect("bind");
                        start.wait();
                        for i in 0..per_sender {
                            // A drop at OUTPUT (rx's own flows) fails the send.
                            let _ = sock.send_to(b"ctscope", (dst, first + i));
                        }
                    })
                    .expect("sender");
                });
            }
        }
    });
}

/// The kernel's conntrack counters in `ns`, per CPU.
fn per_cpu_stats(ns: &Netns) -> Vec<HashMap<String, u64>> {
    let text = ns
        .run(|| fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack"))
        .expect("ns")
        .expect("stat file");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(
                    l.split_whitespace()
                        .map(|v| u64::from_str_radix(v, 16).unwrap_or(0)),
                )
                .collect()
        })
        .collect()
}

fn delta(before: &[HashMap<String, u64>], after: &[HashMap<String, u64>], name: &str) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        // Columns a kernel lacks (chainlength before 5.15) count as 0.
        .map(|(b, a)| a.get(name).copied().unwrap_or(0) - b.get(name).copied().unwrap_or(0))
        .collect()
}

/// ctscope's latest record once the drops it counted in `ns` add up to
/// `want` (or the wait is over).
fn settled(ct: &Ctscope, ns: &Netns, want: u64) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let rec = ct.next_json(WAIT).expect("stats record");
        assert_schema("stats.schema.json", &rec);
        let row = netns_row(&rec, ns.inum).cloned().unwrap_or(Value::Null);
        if num(&row, "/drops") >= want || Instant::now() > deadline {
            return rec;
        }
    }
}

/// Asserts ctscope's per-cause counts in `ns` (since it started) against
/// the kernel's deltas there.
///
/// Exact when no probe run was skipped. A drop probe run is skipped when a
/// softirq drops a packet while the probe is still running for another on
/// that CPU (the kernel's recursion check; issue 12), and the kernel counts
/// it in the program's `recursion_misses`: then each cause may fall short,
/// by at most `totals.probe_misses` in all (plus the known miss below). A
/// misclassified drop is excused only up to the probe misses, on either
/// backend: no cause may exceed the kernel's count by more, nor be `other`.
fn assert_causes(rec: &Value, ns: &Netns, kernel: &HashMap<&str, u64>) {
    let row = netns_row(rec, ns.inum).cloned().unwrap_or(Value::Null);
    let c = |cause: &str| num(&row, &format!("/drops_by_cause/{cause}"));
    let k = |name: &str| kernel.get(name).copied().unwrap_or(0);
    let misses = num(rec, "/totals/probe_misses");
    let seen = format!(
        "ctscope {} (probe misses {misses}, other {}); kernel {kernel:?}",
        row["drops_by_cause"],
        num(rec, "/totals/drop_other")
    );
    eprintln!("{seen}");
    let pairs = [
        ("table_full vs drop", c("table_full"), k("drop")),
        (
            "insert_failed + chain_too_long vs insert_failed",
            c("insert_failed") + c("chain_too_long"),
            k("insert_failed"),
        ),
        (
            "chain_too_long vs chaintoolong",
            c("chain_too_long"),
            k("chainlength"),
        ),
        ("invalid vs invalid", c("invalid"), k("invalid")),
        ("ruleset (no rule drops anything)", c("ruleset"), 0),
    ];
    // No drop may get a wrong cause on either backend. The kprobe backend
    // once gave up to 3.6 % of them one here (refusals as invalid, insert
    // failures as ruleset or other): its check for a softirq the kprobes
    // could not see never ran, because kallsyms lists the per-CPU variables
    // it reads as absolute symbols, which were not accepted (issue 16,
    // docs/drop-causes.md "When the kprobes are blind"). What remains is a
    // drop probe run the kernel skipped: its packet's refusal or failed
    // confirm is left on the CPU's stack, where a later drop could take it
    // or eight of them evict a live one (seen once: 1 of 594 insert
    // failures as ruleset on 6.1, 39 misses). Findings made while the drop
    // probe runs now go to a stack of their own (kprobe.rs, DropLevel),
    // which leaves only the instant before it starts classifying: still at
    // most the probe misses.
    let total = k("drop") + k("insert_failed") + k("invalid");
    let other = num(rec, "/totals/drop_other");
    let budget = misses;
    let mut wrong = other;
    let mut short = 0;
    for (what, ours, theirs) in pairs {
        if ours > theirs {
            eprintln!("{what}: {ours} > {theirs}");
            wrong += ours - theirs;
        }
        short += theirs.saturating_sub(ours);
    }
    if wrong > 0 {
        eprintln!("{wrong} drops with a wrong cause (allowed: {budget} probe misses): {seen}");
    }
    assert!(
        wrong <= budget,
        "{wrong} drops with a wrong cause, more than {budget}: {seen}"
    );
    // Known miss of both backends (docs/drop-causes.md, "Drops no probe
    // saw"): with packets steered to another CPU by RPS, the drop probe
    // sometimes does not run for a refusal the kernel counted, and the
    // kernel counts no recursion miss for it either. Found by CI on 6.18
    // (13 of 800); by hand up to 15 of 800 in a flood, about 1 in 300 over
    // many. Cause not found. Pinned at 5 % beyond the probe misses, said on
    // every run; the shortfall never hides from the user, whose stats show
    // the kernel's own counters beside ctscope's.
    let counted = c("table_full") + c("insert_failed") + c("chain_too_long") + c("invalid");
    let all_short = total.saturating_sub(counted);
    let unseen = all_short.saturating_sub(misses);
    let unseen_budget = total * 5 / 100;
    if unseen > 0 {
        eprintln!(
            "KNOWN MISS: {unseen} drops counted by the kernel that no probe run saw \
             (beyond {misses} probe misses; allowed: {unseen_budget}): {seen}"
        );
    }
    assert!(
        all_short <= misses.max(budget) + unseen_budget,
        "{all_short} drops not counted, more than the {misses} probe misses and the known miss \
         ({short} short per cause): {seen}"
    );
}

fn sums(
    before: &[HashMap<String, u64>],
    after: &[HashMap<String, u64>],
) -> HashMap<&'static str, u64> {
    ["drop", "insert_failed", "chainlength", "invalid"]
        .into_iter()
        .map(|n| (n, delta(before, after, n).iter().sum()))
        .collect()
}

#[test]
fn table_full_on_every_cpu_at_once_counts_like_the_kernel() {
    require_root();
    let ncpus = cpus();
    let mut sysctl = SysctlGuard::new().expect("lock");
    let (tx, rx) = link(ncpus);
    // rx full of ESTABLISHED TCP connections, held open: ASSURED entries,
    // which early_drop() never evicts, so every new flow is refused.
    const MAX: u64 = 40;
    sysctl.set("nf_conntrack_max", MAX).expect("max");
    let listener: TcpListener = tcp_listener(&rx, (Ipv4Addr::LOCALHOST, 0).into()).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..MAX {
        let client = rx
            .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .expect("ns")
            .expect("connect");
        let (server, _) = listener.accept().expect("accept");
        held.push((client, server));
    }
    assert_eq!(rx.count().expect("count"), MAX);

    let ct = Ctscope::start(&["stats", "--json", "--interval", "0.5"]).expect("ctscope");
    let before = per_cpu_stats(&rx);
    flood(&tx, &rx, ncpus, 400, 20000);
    thread::sleep(Duration::from_millis(500));
    let after = per_cpu_stats(&rx);
    let refused = delta(&before, &after, "drop");
    assert!(
        refused.iter().take(ncpus).all(|d| *d > 0),
        "refusals on every CPU: {refused:?}"
    );
    let kernel = sums(&before, &after);
    let rec = settled(&ct, &rx, kernel["drop"]);
    assert_causes(&rec, &rx, &kernel);
    drop(ct);
    drop(held);
}

#[test]
fn insert_failures_on_every_cpu_at_once_count_like_the_kernel() {
    require_root();
    if !kernel_at_least(5, 15) {
        eprintln!(
            "SKIPPED: no hash chain limit before 5.15, so inserts never fail for a chain's length"
        );
        return;
    }
    if walker_unavailable() {
        return;
    }
    let ncpus = cpus();
    let mut sysctl = SysctlGuard::new().expect("lock");
    // The smallest table (512 buckets): chains pass the kernel's limit
    // after some thousands of entries, and inserts fail from then on.
    sysctl.set("nf_conntrack_buckets", 8).expect("resize");
    sysctl.set("nf_conntrack_max", 200_000).expect("max");
    let (tx, rx) = link(ncpus);
    let mut port = 1000u16;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stats = rx.kernel_stats().expect("stats");
        if stats["chainlength"] > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no chain got too long: {stats:?}"
        );
        udp_flows(&rx, 2000, port, false).expect("fill");
        port += 2000;
        assert!(port < 60000, "no chain got too long: {stats:?}");
    }

    let ct =
        Ctscope::start(&["stats", "--json", "--buckets", "--interval", "0.5"]).expect("ctscope");
    // Wait for a walk of the full table: the tracepoint backend counts a
    // failure in the reply direction as chain_too_long once a walk has seen
    // chains past the limit (docs/drop-causes.md).
    let deadline = Instant::now() + WAIT;
    loop {
        let rec = ct.next_json(WAIT).expect("record");
        if num(&rec, "/buckets/max") > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no walk: {rec}");
    }
    let before = per_cpu_stats(&rx);
    let first = port.max(20000);
    // Which CPU's insert fails is up to the hash: flood again (new source
    // ports, so new flows) until every CPU has had failures.
    let mut after;
    let mut floods = 0;
    loop {
        flood(&tx, &rx, ncpus, 800, first);
        floods += 1;
        thread::sleep(Duration::from_millis(500));
        after = per_cpu_stats(&rx);
        let failed = delta(&before, &after, "insert_failed");
        if failed.iter().take(ncpus).all(|d| *d > 0) {
            break;
        }
        assert!(floods < 4, "insert failures on every CPU: {failed:?}");
    }
    let kernel = sums(&before, &after);
    let rec = settled(&ct, &rx, kernel["insert_failed"]);
    assert_causes(&rec, &rx, &kernel);
}
