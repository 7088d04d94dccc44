//! `ctscope serve` scraped by a real Prometheus (Debian's package): the
//! node_exporter-compatible entry metrics and the table-full drop counter
//! reach Prometheus with the values the kernel has.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    process::{Child, Command, Stdio},
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
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let ct = Ctscope::start(&[
        "serve",
        "--listen",
        &listen.to_string(),
        "--interval",
        "0.5",
    ])
    .expect("serve");
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
