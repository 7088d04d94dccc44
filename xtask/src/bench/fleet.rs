//! Section 7, namespaces at fleet scale (issue 13): memory and CPU of
//! `serve` (what the DaemonSet runs) and `stats` with many live namespaces,
//! then under a steady churn of namespaces as on a busy Kubernetes node.
//! Each namespace has conntrack on and a few live entries, as a pod has.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Bench, measure, report::Row};

const SECTION: &str = "7. namespaces at fleet scale";
const LISTEN: &str = "127.0.0.1:19493";

/// Named namespaces created with one `ip -batch`, deleted on drop.
struct Fleet {
    prefix: String,
    /// Indices of the namespaces alive now.
    live: std::collections::VecDeque<u64>,
    next: u64,
}

impl Fleet {
    fn create(n: u64) -> Result<Self> {
        let mut fleet = Self {
            prefix: format!("ctscope-fleet-{}", std::process::id()),
            live: Default::default(),
            next: 0,
        };
        fleet.add(n)?;
        Ok(fleet)
    }

    fn add(&mut self, n: u64) -> Result<()> {
        let first = self.next;
        self.next += n;
        let script: String = (first..self.next)
            .map(|i| format!("netns add {}-{i}\n", self.prefix))
            .collect();
        batch(&script)?;
        self.live.extend(first..self.next);
        for i in first..self.next {
            populate(&format!("/run/netns/{}-{i}", self.prefix))?;
        }
        Ok(())
    }

    fn remove_oldest(&mut self, n: u64) -> Result<()> {
        let gone: Vec<u64> = (0..n).filter_map(|_| self.live.pop_front()).collect();
        let script: String = gone
            .iter()
            .map(|i| format!("netns del {}-{i}\n", self.prefix))
            .collect();
        batch(&script)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let n = self.live.len() as u64;
        if let Err(e) = self.remove_oldest(n) {
            eprintln!("xtask: deleting the bench namespaces: {e}");
        }
    }
}

/// Entries per namespace: a pod with a few live flows.
const FLOWS_PER_NAMESPACE: u16 = 10;

/// Turns conntrack on in the namespace at `path` (loopback up, a `ct state`
/// rule), gives its UDP entries 10 minutes, and opens
/// [`FLOWS_PER_NAMESPACE`] flows there, from a thread that entered it.
fn populate(path: &str) -> Result<()> {
    let path = path.to_owned();
    thread::spawn(move || -> Result<()> {
        use std::os::fd::AsRawFd as _;
        let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: an open namespace fd; only this thread changes namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        // Children forked from this thread start in its namespace.
        let lo = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()?;
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .context("running nft")?;
        if let Some(mut stdin) = nft.stdin.take() {
            stdin.write_all(
                b"table inet fleet {\n chain out { type filter hook output priority 0; \
                  ct state established accept; }\n}\n",
            )?;
        }
        if !lo.success() || !nft.wait()?.success() {
            bail!("turning conntrack on in {path} failed");
        }
        std::fs::write("/proc/sys/net/netfilter/nf_conntrack_udp_timeout", "600")?;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        for port in 0..FLOWS_PER_NAMESPACE {
            let _ = sock.send_to(b"fleet", ("127.0.0.1", 30_000 + port));
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

fn batch(script: &str) -> Result<()> {
    let mut ip = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running ip -batch")?;
    if let Some(mut stdin) = ip.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    if !ip.wait()?.success() {
        bail!("ip -batch failed");
    }
    Ok(())
}

/// Current resident set size (VmRSS) in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// The `ctscope_netns_*` series /metrics exposes now.
fn netns_series() -> Result<u64> {
    let mut stream = std::net::TcpStream::connect(LISTEN)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body)?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("ctscope_netns_"))
        .count() as u64)
}

impl Bench {
    pub(super) fn namespaces_at_scale(&self) -> Result<Vec<Row>> {
        let n = self.scale.fleet_namespaces;
        let mut fleet = Fleet::create(n)?;
        // serve as the DaemonSet runs it (default interval, 5 s); stats at
        // 1 s, the busiest common setting.
        let serve = self.start(&["serve", "--listen", LISTEN])?;
        let stats = self.start(&["stats", "--interval", "1", "--json"])?;
        // Let the per-namespace history fill (it keeps rows for the newest
        // 60 intervals), scraping as Prometheus would.
        let settle = Duration::from_secs_f64(self.scale.fleet_secs);
        let cpu_before = measure::cpu_ticks(serve.pid())?;
        let stats_before = measure::cpu_ticks(stats.pid())?;
        let start = Instant::now();
        let mut series = 0;
        while start.elapsed() < settle {
            thread::sleep(Duration::from_secs(5).min(settle));
            series = netns_series().unwrap_or(series);
        }
        let share =
            |ticks: u64| ticks as f64 / measure::ticks_per_sec() / start.elapsed().as_secs_f64();
        let serve_cpu = share(measure::cpu_ticks(serve.pid())? - cpu_before);
        let stats_cpu = share(measure::cpu_ticks(stats.pid())? - stats_before);
        let (serve_live, stats_live) = (rss_kib(serve.pid())?, rss_kib(stats.pid())?);
        // Churn: 10 namespaces a second created and as many deleted, for as
        // long again.
        let churn = Instant::now();
        let mut churned = 0;
        while churn.elapsed() < settle {
            let tick = Instant::now();
            fleet.add(10)?;
            fleet.remove_oldest(10)?;
            churned += 10;
            if let Some(rest) = Duration::from_secs(1).checked_sub(tick.elapsed()) {
                thread::sleep(rest);
            }
        }
        // Departed series leave /metrics after their grace period.
        thread::sleep(Duration::from_secs(15));
        let series_after = netns_series().unwrap_or(0);
        let serve_peak = measure::peak_rss_kib(serve.pid())?;
        let stats_peak = measure::peak_rss_kib(stats.pid())?;
        drop((serve, stats));
        let mib = |kib: u64| kib as f64 / 1024.0;
        let live_label = |what: &str| format!("{what} with {n} live namespaces");
        Ok(vec![
            Row::goal(
                SECTION,
                &live_label("RSS of serve"),
                mib(serve_live),
                "MiB",
                96.0,
                false,
            ),
            Row::goal(
                SECTION,
                &live_label("RSS of stats"),
                mib(stats_live),
                "MiB",
                96.0,
                false,
            ),
            Row::goal(
                SECTION,
                &live_label("CPU of serve (interval 5 s, as deployed)"),
                serve_cpu * 100.0,
                "% of a core",
                5.0,
                false,
            ),
            Row::goal(
                SECTION,
                &live_label("CPU of stats (interval 1 s)"),
                stats_cpu * 100.0,
                "% of a core",
                5.0,
                false,
            ),
            Row::measured(
                SECTION,
                &live_label("ctscope_netns_* series"),
                series as f64,
                "series",
            ),
            Row::goal(
                SECTION,
                &format!("peak RSS of serve, then {churned} namespaces churned at 10/s"),
                mib(serve_peak),
                "MiB",
                96.0,
                false,
            ),
            Row::goal(
                SECTION,
                &format!("peak RSS of stats, then {churned} namespaces churned at 10/s"),
                mib(stats_peak),
                "MiB",
                96.0,
                false,
            ),
            Row::measured(
                SECTION,
                "ctscope_netns_* series after the churn",
                series_after as f64,
                "series",
            ),
        ])
    }
}
