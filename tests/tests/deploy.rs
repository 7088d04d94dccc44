//! The fleet files in deploy/: a DaemonSet with the capabilities it needs
//! rather than privileged, valid Prometheus rules, and a dashboard and
//! alerts that only use metrics `ctscope serve` exports.

use std::{collections::BTreeSet, fs, path::Path, process::Command, time::Duration};

use ctscope_integration::*;
use serde_json::Value;

/// The registry prefix variable of the DaemonSet's image
/// (`${CTSCOPE_REGISTRY}/ctscope:<version>`), as `envsubst` fills it in.
const REGISTRY_VAR: &str = "${CTSCOPE_REGISTRY}";

/// A manifest with the registry prefix filled in, as the README applies it.
fn rendered(path: &str, registry: &str) -> String {
    deploy(path).replace(REGISTRY_VAR, registry)
}

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
    for needed in [
        "BPF",
        "PERFMON",
        "SYSLOG",
        "SYS_ADMIN",
        "NET_ADMIN",
        "SYS_RESOURCE",
    ] {
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
fn daemonset_names_the_image_xtask_builds() {
    // `cargo xtask image` tags `$CTSCOPE_REGISTRY/ctscope:<workspace version>`.
    let y: serde_yaml::Value = serde_yaml::from_str(&rendered(
        "kubernetes/daemonset.yaml",
        "registry.example.com/infra",
    ))
    .expect("yaml");
    assert_eq!(
        y["spec"]["template"]["spec"]["containers"][0]["image"],
        format!(
            "registry.example.com/infra/ctscope:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let raw = deploy("kubernetes/daemonset.yaml");
    let uses: Vec<&str> = raw
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("${"))
        .collect();
    assert_eq!(uses.len(), 1, "one variable, the registry: {uses:?}");
    assert_eq!(uses[0].matches("${").count(), 1, "{uses:?}");
}

/// Where `cargo xtask provision`/`test` install kubernetes-validate
/// (xtask/src/provision.rs).
fn kubernetes_validate() -> Option<std::path::PathBuf> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/kubernetes-validate/1.37.0");
    if dir.join("kubernetes_validate").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} is missing; `cargo xtask provision` installs kubernetes-validate",
            dir.display()
        );
        None
    }
}

/// `kubernetes-validate --strict` (unknown fields are errors) of `text`
/// against Kubernetes `version`: (passed, output).
fn validate(tool: &Path, text: &str, version: &str) -> (bool, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file =
        std::env::temp_dir().join(format!("ctscope-manifest-{}-{n}.yaml", std::process::id()));
    fs::write(&file, text).expect("write manifest");
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .arg(&file)
        .env("PYTHONPATH", tool)
        .output();
    let _ = fs::remove_file(&file);
    let out = out.expect("python3");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn kubernetes_manifests_pass_the_api_schema() {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("deploy/kubernetes") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let name = format!(
            "kubernetes/{}",
            path.file_name().and_then(|n| n.to_str()).expect("name")
        );
        let text = rendered(&name, "registry.example.com/infra");
        // The oldest and the newest API the validator knows.
        for version in ["1.25.0", "1.37.0"] {
            let (ok, out) = validate(&tool, &text, version);
            assert!(ok, "{name} against Kubernetes {version}:\n{out}");
            assert!(out.contains("passed"), "{out}");
        }
        checked += 1;
    }
    assert!(checked >= 1, "no manifest in {}", dir.display());

    // The validator does reject what the API server would: a misspelled
    // field and a wrongly typed one.
    let text = rendered("kubernetes/daemonset.yaml", "registry.example.com/infra");
    for (from, to) in [
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFileSystem: true",
        ),
        ("privileged: false", "privileged: \"no\""),
    ] {
        assert!(text.contains(from), "{from}");
        let (ok, out) = validate(&tool, &text.replacen(from, to, 1), "1.37.0");
        assert!(!ok, "{to} passed:\n{out}");
    }
}

#[test]
fn alert_rules_are_valid_for_prometheus() {
    if skip_without("promtool") {
        return;
    }
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
        "CtscopeCauseMismatch",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
}

/// Metric names in a PromQL expression (ours and node_exporter's).
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("ctscope_") || word.starts_with("node_nf_conntrack") {
            out.insert(word.to_owned());
        }
    }
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    require_root();
    let _lock = shared_lock();
    let mut used = BTreeSet::new();
    let dash: Value =
        serde_json::from_str(&deploy("grafana/ctscope.json")).expect("dashboard json");
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            metric_names(t["expr"].as_str().expect("expr"), &mut used);
        }
    }
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&deploy("prometheus/alerts.yaml")).expect("yaml");
    for r in rules["groups"][0]["rules"].as_sequence().expect("rules") {
        metric_names(r["expr"].as_str().expect("expr"), &mut used);
    }
    assert!(used.len() > 10, "{used:?}");
    // Without a table walker (no bpf_loop and no nf_conntrack_hash in
    // kallsyms) there are no walk series: checked absent below.
    let walk_series = [
        "ctscope_bucket_walk_duration_seconds",
        "ctscope_chain_length_bucket",
        "ctscope_chain_length_max",
        "ctscope_chain_length_mean",
    ];
    let no_walks = !walker_available();
    if no_walks {
        eprintln!("SKIPPED: the table walk series without a table walker; checked absent");
        used.retain(|m| !walk_series.contains(&m.as_str()));
    }

    // Per-namespace series exist only for namespaces with activity: give
    // one some entries and a drop.
    let ns = Netns::new().expect("namespace");
    ns.nft("add rule inet ctscope_test in udp dport 9 drop")
        .expect("rule");
    let (_ct, listen) = Ctscope::serve(&[]).expect("serve");
    udp_flows(&ns, 10, 5, false).expect("flows");
    let mut exported = BTreeSet::new();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let Ok((200, body)) = http_get(listen, "/metrics") else {
                return false;
            };
            exported = body
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .map(str::to_owned)
                .collect();
            used.iter().all(|m| exported.contains(m))
        }),
        "not exported: {:?}",
        used.difference(&exported).collect::<Vec<_>>()
    );
    if no_walks {
        for m in walk_series {
            assert!(!exported.contains(m), "{m} without walks");
        }
    }
}
