//! `ctscope serve` scraped by a real Prometheus (Debian's package): the
//! node_exporter-compatible entry metrics and the table-full drop counter
//! reach Prometheus with the values the kernel has.

use std::{
    fs,
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use ctscope_integration::*;
use serde_json::Value;

/// A Prometheus server with its own config and storage, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("ctscope-prom-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ctscope\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        let p = Self { child, addr, dir };
        assert!(
            wait_for(Duration::from_secs(60), || http_get(p.addr, "/-/ready")
                .is_ok_and(|(s, _)| s == 200)),
            "prometheus did not become ready"
        );
        p
    }

    /// The value of an instant query with exactly one series.
    fn query(&self, expr: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", urlencode(expr));
        let (status, body) = http_get(self.addr, &path).ok()?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let result = v.pointer("/data/result")?.as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0].pointer("/value/1")?.as_str()?.parse().ok()
    }

    /// Polls until the query returns `want` (or times out); returns the last
    /// value seen.
    fn wait_value(&self, expr: &str, want: f64) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(expr);
            if last == Some(want) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        last
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_entries_and_table_full_drops() {
    require_root();
    if skip_without("prometheus") {
        return;
    }
    let mut sysctl = SysctlGuard::new().expect("lock");
    let ns = Netns::new().expect("namespace");
    let (ct, listen) = Ctscope::serve(&[]).expect("serve");
    assert!(
        wait_for(Duration::from_secs(5), || http_get(listen, "/healthz")
            .is_ok_and(|(s, _)| s == 200)),
        "healthz: {:?}",
        http_get(listen, "/healthz")
    );
    let prom = Prometheus::start(listen);

    sysctl.set("nf_conntrack_max", 30).expect("max");
    let before = ns.kernel_stats().expect("stats");
    udp_flows(&ns, 50, 20000, false).expect("flows");
    let after = ns.kernel_stats().expect("stats");
    let refused = after["drop"] - before["drop"];
    assert!(refused > 0, "the table never filled");

    let series = format!(
        "ctscope_netns_drops_total{{netns=\"{}\",cause=\"table_full\"}}",
        ns.inum
    );
    let got = prom.wait_value(&series, refused as f64);
    assert_eq!(got, Some(refused as f64), "{series}");
    assert_eq!(
        prom.wait_value("node_nf_conntrack_entries_limit", 30.0),
        Some(30.0)
    );
    let entries = prom.wait_value(
        &format!("ctscope_netns_entries{{netns=\"{}\"}}", ns.inum),
        ns.count().expect("count") as f64,
    );
    assert_eq!(entries, Some(ns.count().expect("count") as f64));
    // node_exporter's name describes ctscope's own namespace, as node_exporter does.
    let own: f64 = fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .expect("count")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(prom.wait_value("node_nf_conntrack_entries", own), Some(own));
    assert!(
        prom.query("ctscope_drops_total{cause=\"table_full\"}")
            .is_some_and(|v| v >= refused as f64)
    );
    drop(ct);
}

/// Raises this process's soft open-file limit to the hard limit, so the test
/// itself can hold thousands of connections.
fn raise_own_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether the server has closed `s`: EOF or a reset, without blocking.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close: keep reading.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// The value of an unlabelled-or-labelled sample line `name{...} value`.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Thousands of idle connections and a few that send half a header and stop
/// (the exhaustion): scrapes still answer at once, ctscope's
/// descriptors stay bounded, collection keeps working, and idle connections
/// are closed after the idle timeout.
#[test]
fn hostile_clients_do_not_starve_scrapes_or_collection() {
    require_root();
    const IDLE: usize = 3000;
    const HALF: usize = 5;
    const CAP: usize = 64;
    assert!(raise_own_fd_limit() > (IDLE + HALF + 100) as u64);
    let ns = Netns::new().expect("namespace");
    let (ct, listen) = Ctscope::serve(&[
        "--idle-timeout",
        "2s",
        "--max-connections",
        &CAP.to_string(),
    ])
    .expect("serve");
    assert!(
        wait_for(Duration::from_secs(5), || http_get(listen, "/healthz")
            .is_ok_and(|(s, _)| s == 200)),
        "healthz: {:?}",
        http_get(listen, "/healthz")
    );
    let base_fds = open_fds(ct.pid());

    let mut held = Vec::new();
    for _ in 0..IDLE {
        if let Ok(s) = TcpStream::connect_timeout(&listen, Duration::from_secs(2)) {
            held.push(s);
        }
    }
    assert!(held.len() >= IDLE * 9 / 10, "only {} connected", held.len());
    let mut half = Vec::new();
    for _ in 0..HALF {
        let mut s = TcpStream::connect_timeout(&listen, Duration::from_secs(2)).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */")
            .expect("half a header");
        half.push(s);
    }
    let peak_fds = open_fds(ct.pid());
    assert!(
        peak_fds <= base_fds + CAP + 8,
        "ctscope holds {peak_fds} descriptors (at rest {base_fds}, cap {CAP})"
    );

    // A real scrape, while the hostile connections are still open.
    let start = Instant::now();
    let (status, page) = http_get(listen, "/metrics").expect("scrape during the flood");
    assert_eq!(status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the scrape took {:?}",
        start.elapsed()
    );
    assert!(page.contains("ctscope_build_info"), "{page}");

    // Collection still works: new flows reach the counters.
    let alloc = format!("ctscope_netns_alloc_total{{netns=\"{}\"", ns.inum);
    let before = sample(&page, &alloc).unwrap_or(0.0);
    assert_eq!(udp_flows(&ns, 200, 20000, false).expect("flows"), 200);
    let mut now = before;
    assert!(
        wait_for(Duration::from_secs(10), || {
            now = http_get(listen, "/metrics")
                .ok()
                .and_then(|(_, p)| {
                    p.lines()
                        .find(|l| l.starts_with(&alloc))
                        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                })
                .unwrap_or(now);
            now >= before + 200.0
        }),
        "alloc counter went from {before} to {now}, 200 flows"
    );

    // Every hostile connection is closed by the server: the ones past the
    // cap at once (evicted), the rest after the 2 s idle timeout.
    assert!(
        wait_for(Duration::from_secs(6), || held
            .iter_mut()
            .chain(half.iter_mut())
            .all(closed_by_peer)),
        "{} of {} connections still open",
        held.iter_mut()
            .chain(half.iter_mut())
            .map(closed_by_peer)
            .filter(|c| !c)
            .count(),
        held.len() + half.len()
    );
    assert!(
        wait_for(Duration::from_secs(3), || open_fds(ct.pid())
            <= base_fds + 2),
        "descriptors not released: {} (at rest {base_fds})",
        open_fds(ct.pid())
    );
    let stderr = ct.stderr_text();
    assert!(!stderr.contains("Too many open files"), "{stderr}");
    drop(held);
    drop(half);

    // The idle timeout itself: a connection under the cap lives about 2 s,
    // not less and not for ever.
    let mut idle = TcpStream::connect_timeout(&listen, Duration::from_secs(2)).expect("connect");
    let opened = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    assert!(!closed_by_peer(&mut idle), "closed before the idle timeout");
    assert!(
        wait_for(Duration::from_secs(4), || closed_by_peer(&mut idle)),
        "an idle connection stayed open past the timeout"
    );
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(1900),
        "closed after {lived:?}"
    );
    drop(ct);
}

/// Runs `ctscope ARGS`, expecting it to exit by itself within 10 s.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(ctscope_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ctscope");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ctscope {} did not exit", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A busy port and an address that is not this machine's are the user's
/// mistakes: exit status 2, a message that names the problem, and nothing
/// attached (no ready file).
#[test]
fn bind_errors_say_what_is_wrong_and_exit_2() {
    require_root();
    let ready = std::env::temp_dir().join(format!("ctscope-serve-bind-{}", std::process::id()));
    let _ = fs::remove_file(&ready);
    let ready_arg = ready.to_string_lossy().into_owned();

    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (status, err) = run_to_exit(&["serve", "--listen", &addr, "--ready-file", &ready_arg]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert!(!ready.exists(), "the probes were attached first");

    // TEST-NET-1 (RFC 5737): never an address of this machine.
    let (status, err) = run_to_exit(&[
        "serve",
        "--listen",
        "192.0.2.1:9464",
        "--ready-file",
        &ready_arg,
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("not an address of this machine"), "{err}");
    assert!(!err.contains("another exporter"), "{err}");
    assert!(!ready.exists(), "the probes were attached first");
}
