//! Tests against the running kernel: they need root, create network namespaces and
//! nftables rules, so they are `#[ignore]`d; `cargo xtask test` runs ignored tests as
//! root (by hand: `cargo test -p conntrack-user -- --ignored --nocapture`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::{StatsSource, StatsSourceUsed, list_namespaces, read_namespaces};
use super::stats::ConntrackStats;
use super::sysctl::{read_sysctl, write_sysctl};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root: run it through `cargo xtask test`"
    );
}

/// Runs a command, failing the test with its stderr if it fails.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named namespaces that are deleted when the guard drops, even on a failed assert.
struct NsGuard(Vec<String>);

impl NsGuard {
    fn create(names: Vec<String>) -> Self {
        let guard = NsGuard(names);
        guard.batch("add");
        guard
    }

    fn batch(&self, verb: &str) {
        let script: String = self
            .0
            .iter()
            .map(|n| format!("netns {verb} {n}\n"))
            .collect();
        let child = Command::new("ip")
            .args(["-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn();
        if let Ok(mut child) = child {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(script.as_bytes());
            }
            let _ = child.wait();
        }
    }

    fn inum(&self, i: usize) -> u32 {
        let meta = std::fs::metadata(format!("/run/netns/{}", self.0[i])).expect("stat ns");
        u32::try_from(meta.ino()).expect("32-bit inum")
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        self.batch("del");
    }
}

/// Runs `f` on a fresh thread inside the named namespace.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open ns");
    std::thread::spawn(move || {
        // SAFETY: `file` is an open netns fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("ns thread")
}

/// Sends `n` TCP segments with SYN and FIN set to 127.0.0.1:80 over a raw socket (the
/// kernel adds the IP header). Returns how many were sent.
fn send_syn_fin(n: usize) -> usize {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = 0x03; // FIN | SYN
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut dst: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    dst.sin_family = libc::AF_INET as libc::sa_family_t;
    dst.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    let sent = (0..n)
        .filter(|_| {
            // SAFETY: buffers are valid for the lengths passed.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    tcp.as_ptr().cast(),
                    tcp.len(),
                    0,
                    (&raw const dst).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            rc == tcp.len() as isize
        })
        .count();
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    sent
}

/// Sums `conntrack -S` output (`cpu=0 found=1 ...` per line) by key.
fn conntrack_s(ns: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for (k, v) in run(&["ip", "netns", "exec", ns, "conntrack", "-S"])
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k != "cpu")
    {
        *sums.entry(k.to_owned()).or_insert(0) += v.parse::<u64>().expect("number");
    }
    sums
}

#[test]
#[ignore = "needs root; run by `cargo xtask test`"]
fn live_namespace_counts_and_sources_agree() {
    require_root();
    let ns = format!("ctscope-kt-{}", std::process::id());
    let guard = NsGuard::create(vec![ns.clone()]);
    let inum = guard.inum(0);
    let x = |args: &[&str]| run(&[&["ip", "netns", "exec", &ns], args].concat());
    x(&["ip", "link", "set", "lo", "up"]);
    x(&["nft", "add", "table", "inet", "t"]);
    x(&[
        "nft",
        "add",
        "chain",
        "inet",
        "t",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    x(&[
        "nft",
        "add",
        "rule",
        "inet",
        "t",
        "in",
        "ct",
        "state",
        "established",
        "accept",
    ]);

    // 50 UDP flows to closed ports, each sent twice (the second finds the entry).
    const FLOWS: u16 = 50;
    in_ns(&ns, || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for _ in 0..2 {
            for port in 0..FLOWS {
                let _ = sock.send_to(b"ctscope", ("127.0.0.1", 20000 + port));
            }
        }
    });
    // Invalid TCP flag combinations (SYN+FIN) make `tcp_error` count them `invalid`
    // (net/netfilter/nf_conntrack_proto_tcp.c), so the compared counters are not all 0.
    let sent = in_ns(&ns, || send_syn_fin(10));
    assert_eq!(sent, 10, "raw TCP sends");
    let kernel_count: u64 = x(&["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        .trim()
        .parse()
        .expect("count");

    let t = Instant::now();
    let procfs = read_namespaces(StatsSource::Procfs);
    let procfs_time = t.elapsed();
    let ctnl = read_namespaces(StatsSource::Ctnetlink);
    let auto = read_namespaces(StatsSource::Auto);
    let conntrack_tool = conntrack_s(&ns);
    let pick = |all: &[super::NetnsReading]| {
        all.iter()
            .find(|r| r.inum == inum)
            .cloned()
            .expect("test ns found")
    };
    let (p, c, a) = (pick(&procfs), pick(&ctnl), pick(&auto));
    eprintln!("netns {inum} ({ns}): kernel count {kernel_count}, conntrack -S {conntrack_tool:?}");
    eprintln!("procfs:    {p:?}\nctnetlink: {c:?}\nauto:      {a:?}");
    eprintln!(
        "{} namespaces read via procfs in {procfs_time:?}",
        procfs.len()
    );

    assert_eq!(p.name.as_deref(), Some(ns.as_str()));
    assert_eq!((p.error.as_deref(), c.error.as_deref()), (None, None));
    assert_eq!(kernel_count, u64::from(FLOWS), "one entry per flow");
    assert_eq!(p.count, Some(kernel_count));
    assert_eq!(c.count, Some(kernel_count));
    assert_eq!(p.max, c.max);
    assert_eq!(p.stats, c.stats, "procfs and ctnetlink disagree");
    assert_eq!(a.source_used, Some(StatsSourceUsed::Procfs));
    assert_eq!(c.source_used, Some(StatsSourceUsed::Ctnetlink));
    let s: ConntrackStats = c.stats.expect("stats");
    assert!(
        s.invalid >= 10,
        "SYN+FIN segments were not counted invalid: {s:?}"
    );
    let tool = |k: &str| conntrack_tool.get(k).copied().unwrap_or(0);
    let ours = [
        ("found", s.found),
        ("invalid", s.invalid),
        ("insert", s.insert),
        ("insert_failed", s.insert_failed),
        ("drop", s.drop),
        ("early_drop", s.early_drop),
        ("error", s.icmp_error),
        ("search_restart", s.search_restart),
        ("clash_resolve", s.clash_resolve),
        ("chaintoolong", s.chaintoolong),
    ];
    for (k, v) in ours {
        assert_eq!(v, tool(k), "{k}: ours {v}, conntrack -S {}", tool(k));
    }
    // Our own namespace is listed and readable. (Others may fail legitimately: a
    // process listed by pid can exit before its namespace is entered.)
    let own = super::own_netns_inode().expect("own ns");
    assert!(procfs.iter().any(|r| r.inum == own && r.error.is_none()));

    // A sysctl written from a thread inside the namespace changes only that namespace.
    let host_before = read_sysctl("nf_conntrack_udp_timeout").expect("read");
    let inside = in_ns(&ns, || {
        write_sysctl("nf_conntrack_udp_timeout", 45).expect("write");
        read_sysctl("nf_conntrack_udp_timeout").expect("read")
    });
    assert_eq!(inside, Some(45));
    assert_eq!(
        read_sysctl("nf_conntrack_udp_timeout").expect("read"),
        host_before
    );
    drop(guard);
    assert!(
        !list_namespaces()
            .iter()
            .any(|h| h.inum == inum && h.name.is_some())
    );
}

#[test]
#[ignore = "needs root; run by `cargo xtask test`"]
fn hundred_namespaces_are_read_quickly() {
    require_root();
    let pid = std::process::id();
    let guard = NsGuard::create((0..100).map(|i| format!("ctscope-kt-{pid}-{i}")).collect());
    let inums: Vec<u32> = (0..100).map(|i| guard.inum(i)).collect();
    for source in [StatsSource::Procfs, StatsSource::Ctnetlink] {
        let mut times = Vec::new();
        let mut seen = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let all = read_namespaces(source);
            times.push(t.elapsed());
            seen = all.len();
            for inum in &inums {
                let r = all.iter().find(|r| r.inum == *inum).expect("listed");
                assert_eq!((r.error.as_deref(), r.count), (None, Some(0)), "{r:?}");
            }
        }
        times.sort();
        eprintln!(
            "{source:?}: {seen} namespaces, min {:?}, median {:?}",
            times[0], times[2]
        );
        assert!(
            times[2] < Duration::from_millis(500),
            "{source:?} too slow: {times:?}"
        );
    }
}

/// The reader moves from namespace to namespace: ctscope's own must still
/// be `Here` when another is read before it, and the other `Named`.
#[test]
#[ignore = "needs root; run by `cargo xtask test`"]
fn own_namespace_is_here_whatever_the_reading_order() {
    use super::netns::{Enter, NetnsHandle, own_netns_inode, read_these};
    require_root();
    let name = format!("ctscope-kt-{}-order", std::process::id());
    let _guard = NsGuard::create(vec![name.clone()]);
    let listed = list_namespaces();
    let own = own_netns_inode().expect("own namespace");
    let find = |pred: &dyn Fn(&NetnsHandle) -> bool| -> NetnsHandle {
        listed.iter().find(|h| pred(h)).cloned().expect("listed")
    };
    let other = find(&|h| h.name.as_deref() == Some(name.as_str()));
    let mine = find(&|h| h.inum == own);
    let readings = read_these(&[other.clone(), mine], StatsSource::Auto);
    assert_eq!(readings[0].enter, Enter::Named(name.clone()));
    assert_eq!(readings[1].enter, Enter::Here, "{readings:?}");
    assert_eq!(readings[1].error, None);
    assert_eq!(readings[0].error, None);
}

/// Kept-open stat files follow their namespace's count without entering it,
/// and are closed once the namespace is gone (an open file holds it alive).
#[test]
#[ignore = "needs root; run by `cargo xtask test`"]
fn kept_stat_files_follow_counts_and_let_namespaces_go() {
    use super::netns::OpenStats;
    require_root();
    let name = format!("ctscope-kt-{}-kept", std::process::id());
    let guard = NsGuard::create(vec![name.clone()]);
    let inum = std::fs::metadata(format!("/run/netns/{name}"))
        .expect("named namespace")
        .ino() as u32;
    let (first, open) = OpenStats::default().read(StatsSource::Procfs);
    let row = |r: &[super::netns::NetnsReading]| {
        r.iter()
            .find(|x| x.inum == inum)
            .cloned()
            .expect("namespace listed")
    };
    assert_eq!(row(&first).count, Some(0));
    assert!(open.holds(inum), "its file is kept open");
    // Three entries inserted by conntrack-tools inside the namespace.
    for port in 1..=3 {
        run(&[
            "ip",
            "netns",
            "exec",
            &name,
            "conntrack",
            "-I",
            "-p",
            "udp",
            "-s",
            "10.9.0.1",
            "-d",
            "10.9.0.2",
            "--sport",
            "7",
            "--dport",
            &port.to_string(),
            "-t",
            "120",
        ]);
    }
    let (second, open) = open.read(StatsSource::Procfs);
    let r = row(&second);
    assert_eq!(r.count, Some(3), "{r:?}");
    assert_eq!(r.source_used, Some(StatsSourceUsed::Procfs));
    assert_eq!(r.error, None);
    // The same as a fresh read, which enters the namespace.
    let fresh = row(&read_namespaces(StatsSource::Procfs));
    assert_eq!((fresh.count, fresh.stats), (r.count, r.stats));
    // Gone: its file is closed at the next read.
    drop(guard);
    let (third, open) = open.read(StatsSource::Procfs);
    assert!(third.iter().all(|x| x.inum != inum));
    assert!(
        !open.holds(inum),
        "the departed namespace's file is closed, so it does not keep it alive"
    );
}

/// A namespace held only by a process (no `ip netns` name) is shown by
/// that process, entered by its pid (issue 18 item 10).
#[test]
#[ignore = "needs root; run by `cargo xtask test`"]
fn an_unnamed_namespace_is_shown_by_the_process_holding_it() {
    use super::netns::Enter;
    require_root();
    let mut child = Command::new("unshare")
        .args(["-n", "sleep", "30"])
        .spawn()
        .expect("unshare -n sleep");
    let pid = child.id();
    let own = std::fs::metadata("/proc/self/ns/net")
        .expect("own ns")
        .ino();
    let deadline = Instant::now() + Duration::from_secs(5);
    let inum = loop {
        let ino = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
        // unshare execs sleep once the namespace exists.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if let Ok(ino) = ino
            && ino != own
            && comm.trim() == "sleep"
        {
            break ino as u32;
        }
        assert!(Instant::now() < deadline, "unshare did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let listed = list_namespaces();
    let h = listed.iter().find(|h| h.inum == inum).expect("listed");
    let want = format!("sleep (pid {pid})");
    assert_eq!(
        (h.name.as_deref(), h.owner.as_deref()),
        (None, Some(want.as_str()))
    );
    let r = read_namespaces(StatsSource::Auto)
        .into_iter()
        .find(|r| r.inum == inum)
        .expect("read");
    assert_eq!(
        (r.name.as_deref(), r.owner.as_deref()),
        (None, Some(want.as_str())),
        "{r:?}"
    );
    assert_eq!(
        r.enter,
        Enter::Pid(pid),
        "entered by pid, not by the shown name"
    );
    let _ = child.kill();
    let _ = child.wait();
}
