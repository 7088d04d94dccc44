//! `ctscope load`: the flows it reports are the entries conntrack creates,
//! in a namespace of its own, and a squeezed run drops and then restores
//! `nf_conntrack_max`.

use std::{process::Command, time::Duration};

use ctscope_integration::*;
use serde_json::Value;

fn load(args: &[&str]) -> Value {
    let out = Command::new(ctscope_bin())
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .expect("run ctscope load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json report")
}

#[test]
fn every_reported_flow_is_one_conntrack_entry() {
    require_root();
    let _lock = shared_lock();
    for (kind, n) in [("udp", 20_000u64), ("syn", 3_000), ("tcp", 1_000)] {
        // A fresh observer per run: the kernel reuses a namespace's inode
        // number once it is gone, and the runs' namespaces come and go.
        let ct = Ctscope::start(&["stats", "--json", "--interval", "0.25"]).expect("ctscope");
        let report = load(&["--kind", kind, "--count", &n.to_string()]);
        assert_eq!(report["flows"], n, "{report}");
        assert_eq!(report["refused"], 0, "{report}");
        let inum = report["netns"].as_u64().expect("netns") as u32;
        // Settle, then the namespace's allocations are exactly the flows.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rec = ct.next_json(Duration::from_secs(5)).expect("record");
            let alloc = netns_row(&rec, inum).map(|r| num(r, "/alloc"));
            if alloc == Some(n) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{kind}: alloc {alloc:?} != {n}"
            );
            assert!(
                alloc.is_none_or(|a| a < n),
                "{kind}: more entries than flows: {rec}"
            );
        }
    }
}

#[test]
fn squeeze_drops_then_restores_the_limit() {
    require_root();
    let _guard = SysctlGuard::new().expect("lock");
    let max = |()| -> String {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
            .expect("max")
            .trim()
            .to_owned()
    };
    let before = max(());
    let report = load(&["--count", "300", "--squeeze", "100"]);
    // Sends dropped at OUTPUT fail with EPERM: the refused flows.
    assert_eq!(
        report["flows"].as_u64().unwrap_or(0) + report["refused"].as_u64().unwrap_or(0),
        300
    );
    assert!(report["refused"].as_u64() >= Some(150), "{report}");
    assert_eq!(max(()), before, "nf_conntrack_max restored");
}
