//! The fleet files in deploy/: a DaemonSet with the capabilities it needs
//! rather than privileged, and valid Prometheus rules.

use std::{fs, path::Path, process::Command};

fn deploy(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn daemonset_asks_for_capabilities_not_privilege() {
    let y: serde_yaml::Value =
        serde_yaml::from_str(&deploy("kubernetes/daemonset.yaml")).expect("yaml");
    assert_eq!(y["kind"], "DaemonSet");
    let pod = &y["spec"]["template"];
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let c = &pod["spec"]["containers"][0];
    let sc = &c["securityContext"];
    assert_ne!(
        sc["privileged"],
        serde_yaml::Value::Bool(true),
        "not privileged"
    );
    let caps: Vec<&str> = sc["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for needed in ["BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE"] {
        assert!(caps.contains(&needed), "missing CAP_{needed}: {caps:?}");
    }
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    // The scrape port is the one ctscope listens on.
    let port = ann["prometheus.io/port"].as_str().expect("port");
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(args[0], "serve");
    assert!(
        args.iter().any(|a| a.ends_with(&format!(":{port}"))),
        "{args:?}"
    );
    assert_eq!(
        c["ports"][0]["containerPort"]
            .as_u64()
            .map(|p| p.to_string())
            .as_deref(),
        Some(port)
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains(&"/sys/kernel/btf"), "{mounts:?}");
    assert_eq!(
        pod["spec"]["hostPID"], true,
        "namespaces are found through /proc"
    );
}

#[test]
fn alert_rules_are_valid_for_prometheus() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yaml");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let y: serde_yaml::Value =
        serde_yaml::from_str(&deploy("prometheus/alerts.yaml")).expect("yaml");
    let names: Vec<&str> = y["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for want in [
        "ConntrackTableFilling",
        "ConntrackTableFull",
        "ConntrackDropping",
        "ConntrackChainNearLimit",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
}
