//! The container image of `cargo xtask image`, run in a real container
//! runtime (podman) exactly as deploy/kubernetes/daemonset.yaml runs it: its
//! capabilities and nothing else, host network and PID namespaces, a
//! read-only root, the same host mounts and memory limit. Its /metrics must
//! follow real traffic in a private namespace.
//!
//! `cargo xtask test` installs podman and runc, builds or refreshes
//! target/dist/ first, and sets CTSCOPE_REQUIRE_DIST, under which a missing
//! piece fails the test. Run on their own (plain `cargo test`), the tests
//! skip with a message when podman or runc is missing or when target/dist/
//! has no binary for this machine.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use ctscope_integration::*;
use serde_json::Value;

/// The registry prefix the tests build under, so they never replace an
/// image the user built with `cargo xtask image`.
const REGISTRY: &str = "localhost/ctscope-test";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// This machine's release target and OCI architecture.
fn host_target() -> (&'static str, &'static str) {
    if cfg!(target_arch = "aarch64") {
        ("aarch64-unknown-linux-musl", "arm64")
    } else {
        ("x86_64-unknown-linux-musl", "amd64")
    }
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
}

/// Says why a test cannot run: a failure under `cargo xtask test`
/// (CTSCOPE_REQUIRE_DIST, which builds and installs everything needed), a
/// skip otherwise.
fn skip(why: &str) {
    if std::env::var_os("CTSCOPE_REQUIRE_DIST").is_some() {
        panic!("{why} (CTSCOPE_REQUIRE_DIST is set: `cargo xtask test` should have provided it)");
    }
    eprintln!("SKIPPED: {why}");
}

/// Whether podman, runc and this machine's static binary are all here;
/// says why not otherwise.
fn ready() -> bool {
    for (tool, pkg) in [("podman", "podman"), ("runc", "runc")] {
        if !in_path(tool) {
            skip(&format!(
                "`{tool}` is not installed (apt-get install {pkg}; `cargo xtask test` does)"
            ));
            return false;
        }
    }
    let bin = root()
        .join("target/dist")
        .join(format!("ctscope-{}", host_target().0));
    if !bin.is_file() {
        skip(&format!(
            "{} does not exist; run `cargo xtask dist` (`cargo xtask test` does)",
            bin.display()
        ));
        return false;
    }
    true
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// The DaemonSet with the registry prefix filled in, as the README's
/// `envsubst` does.
fn daemonset(registry: &str) -> serde_yaml::Value {
    let text = fs::read_to_string(root().join("deploy/kubernetes/daemonset.yaml"))
        .expect("deploy/kubernetes/daemonset.yaml");
    serde_yaml::from_str(&text.replace("${CTSCOPE_REGISTRY}", registry)).expect("yaml")
}

/// Builds the images with the xtask binary that `cargo xtask` runs (one
/// `cargo run` inside `cargo test` would wait on the build lock), under
/// the test registry; returns the DaemonSet's image name.
fn build_image() -> String {
    let xtask = root().join("target/debug/xtask");
    assert!(
        xtask.is_file(),
        "{} is missing: run the tests with `cargo xtask test`",
        xtask.display()
    );
    run(Command::new(&xtask)
        .arg("image")
        .env("CTSCOPE_REGISTRY", REGISTRY)
        .env("CARGO_MANIFEST_DIR", root().join("xtask")));
    let ds = daemonset(REGISTRY);
    ds["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("image")
        .to_owned()
}

fn inspect(image: &str) -> Value {
    let text = stdout(Command::new("podman").args(["image", "inspect", image]));
    let v: Value = serde_json::from_str(&text).expect("podman image inspect json");
    v[0].clone()
}

#[test]
fn image_is_the_static_binary_alone() {
    require_root();
    if !ready() {
        return;
    }
    let image = build_image();
    let (triple, arch) = host_target();
    let arch_image = format!("{image}-{arch}");
    let info = inspect(&arch_image);
    assert_eq!(info["Architecture"], arch);
    assert_eq!(info["Os"], "linux");
    assert_eq!(
        info["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/ctscope"])
    );
    assert_eq!(info["Config"]["User"], "0:0");
    assert_eq!(
        info["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    // One layer, holding one file: the image is no bigger than the binary
    // plus the layer's directory entries.
    let layers = info["RootFS"]["Layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{layers:?}");
    let bin = fs::metadata(root().join("target/dist").join(format!("ctscope-{triple}")))
        .expect("binary")
        .len();
    let size = info["Size"].as_u64().expect("size");
    assert!(
        size >= bin && size < bin + 64 * 1024,
        "image {size} bytes, binary {bin}"
    );

    // Both binaries: the name is a manifest list of the two architectures,
    // and running it picks this machine's.
    if dist_has_both() {
        let list: Value = serde_json::from_str(&stdout(
            Command::new("podman").args(["manifest", "inspect", &image]),
        ))
        .expect("manifest json");
        let mut arches: Vec<&str> = list["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .filter_map(|m| m["platform"]["architecture"].as_str())
            .collect();
        arches.sort_unstable();
        assert_eq!(arches, ["amd64", "arm64"]);
        assert_eq!(inspect(&format!("{image}-arm64"))["Architecture"], "arm64");
    } else {
        skip("only one binary in target/dist: no manifest list to check");
    }
    let version = stdout(
        Command::new("podman")
            .args(["run", "--rm", "--runtime", "runc", "--network", "none"])
            .args(ulimits())
            .args([&image, "--version"]),
    );
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")) && version.contains(triple),
        "{version}"
    );
}

fn dist_has_both() -> bool {
    ["x86_64", "aarch64"].iter().all(|a| {
        root()
            .join("target/dist")
            .join(format!("ctscope-{a}-unknown-linux-musl"))
            .is_file()
    })
}

/// Explicit open-file and process limits. podman asks the runtime for
/// nofile 1048576 and nproc 4194304 by default, which is a raise of the
/// hard limits, refused without CAP_SYS_RESOURCE; this build machine's root
/// lacks that capability (CapBnd bit 24 is clear). Kubernetes sets no
/// rlimits (containers inherit the runtime's), so these change nothing
/// the DaemonSet decides.
fn ulimits() -> Vec<String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let nofile = lim.rlim_max.min(1 << 20);
    vec![
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

/// `podman run` arguments that reproduce the DaemonSet's pod and container
/// spec: each field the DaemonSet sets becomes its podman equivalent, and a
/// field this does not know fails the test rather than being ignored.
/// `without` names capabilities to leave out of the DaemonSet's set.
fn podman_args_from_daemonset(
    ds: &serde_yaml::Value,
    listen: SocketAddr,
    without: &[&str],
) -> Vec<String> {
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|s| s.to_string()));
    // runc: crun refuses this machine's hybrid cgroup layout (controllers in
    // both v1 and v2); most Kubernetes nodes run runc under containerd too.
    push(&["--runtime", "runc"]);
    if pod["hostNetwork"] == true {
        push(&["--network", "host"]);
    }
    if pod["hostPID"] == true {
        push(&["--pid", "host"]);
    }
    let sc = &c["securityContext"];
    for (key, value) in sc.as_mapping().expect("securityContext") {
        match key.as_str().expect("key") {
            "privileged" => assert_eq!(*value, false, "the DaemonSet is not privileged"),
            "allowPrivilegeEscalation" => {
                if *value == false {
                    push(&["--security-opt", "no-new-privileges"]);
                }
            }
            "readOnlyRootFilesystem" => {
                if *value == true {
                    push(&["--read-only"]);
                }
            }
            "runAsUser" => {
                let uid = value.as_u64().expect("uid").to_string();
                push(&["--user", &uid]);
            }
            "capabilities" => {
                for cap in value["drop"].as_sequence().into_iter().flatten() {
                    push(&["--cap-drop", cap.as_str().expect("cap")]);
                }
                for cap in value["add"].as_sequence().into_iter().flatten() {
                    let cap = cap.as_str().expect("cap");
                    if !without.contains(&cap) {
                        push(&["--cap-add", cap]);
                    }
                }
            }
            "seccompProfile" => {
                assert_eq!(value["type"], "Unconfined");
                push(&["--security-opt", "seccomp=unconfined"]);
            }
            other => panic!("securityContext.{other}: no podman equivalent known to this test"),
        }
    }
    let apparmor = &ds["spec"]["template"]["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/ctscope"];
    if *apparmor == "unconfined"
        && fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y")
    {
        push(&["--security-opt", "apparmor=unconfined"]);
    }
    if let Some(mem) = c["resources"]["limits"]["memory"].as_str() {
        let mib = mem.strip_suffix("Mi").expect("memory limit in Mi");
        push(&["--memory", &format!("{mib}m")]);
    }
    for m in c["volumeMounts"].as_sequence().expect("volumeMounts") {
        let name = m["name"].as_str().expect("name");
        let vol = pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .expect("volume of the mount");
        let host = vol["hostPath"]["path"].as_str().expect("hostPath");
        if vol["hostPath"]["type"] == "DirectoryOrCreate" {
            fs::create_dir_all(host).expect("hostPath directory");
        }
        let mut opts = vec![if m["readOnly"] == true { "ro" } else { "rw" }];
        if m["mountPropagation"] == "HostToContainer" {
            opts.push("rslave");
        }
        let path = m["mountPath"].as_str().expect("mountPath");
        push(&["--volume", &format!("{host}:{path}:{}", opts.join(","))]);
    }
    a.extend(ulimits());
    a.push(c["image"].as_str().expect("image").to_owned());
    // The arguments, with the downward-API address and the port made this
    // test's own (other test runs may share the host network).
    let port = c["ports"][0]["containerPort"].as_u64().expect("port");
    for arg in c["args"].as_sequence().expect("args") {
        let arg = arg.as_str().expect("arg");
        a.push(if arg == format!("$(NODE_IP):{port}") {
            listen.to_string()
        } else {
            assert!(!arg.contains("$("), "unexpanded {arg}");
            arg.to_owned()
        });
    }
    a
}

/// A detached container, removed on drop (also when the test fails).
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "5", &self.0])
            .output();
    }
}

impl Container {
    fn running(&self) -> bool {
        Command::new("podman")
            .args(["inspect", "--format", "{{.State.Running}}", &self.0])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
    }

    fn logs(&self) -> String {
        Command::new("podman")
            .args(["logs", &self.0])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }
}

/// Starts the DaemonSet's container (less the capabilities in `without`)
/// on a port of its own.
fn start(ds: &serde_yaml::Value, without: &[&str], extra: &[&str]) -> (Container, SocketAddr) {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let name = format!("ctscope-test-{}-{}", std::process::id(), listen.port());
    run(Command::new("podman")
        .args(["run", "--detach", "--name", &name])
        .args(podman_args_from_daemonset(ds, listen, without))
        .args(extra));
    (Container(name), listen)
}

/// The value of the first sample whose line starts with `name{` or
/// `name ` and contains every one of `labels`.
fn sample(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn daemonset_container_follows_traffic() {
    require_root();
    if !ready() {
        return;
    }
    let _lock = shared_lock();
    let image = build_image();
    let ds = daemonset(REGISTRY);
    assert!(ds["spec"]["template"]["spec"]["containers"][0]["image"] == image.as_str());

    let ns = Netns::new().expect("namespace");
    // A ruleset drop of its own: every datagram to these ports.
    ns.nft("add rule inet ctscope_test in udp dport 30000-30099 drop")
        .expect("rule");
    let (container, listen) = start(&ds, &[], &[]);
    assert!(
        wait_for(Duration::from_secs(60), || http_get(listen, "/healthz")
            .is_ok_and(|(s, _)| s == 200)),
        "healthz never answered: {:?}\n{}",
        http_get(listen, "/healthz"),
        container.logs()
    );

    let scrape = || -> String {
        let (status, body) = http_get(listen, "/metrics").expect("scrape");
        assert_eq!(status, 200, "{body}");
        body
    };
    let inum = format!("netns=\"{}\"", ns.inum);
    let first = scrape();
    let host_count: f64 = fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .expect("count")
        .trim()
        .parse()
        .expect("number");
    let entries =
        sample(&first, "node_nf_conntrack_entries", &[]).expect("node_nf_conntrack_entries");
    // The host namespace's own count (hostNetwork), within what other
    // tests' traffic can change between the two reads.
    assert!(
        (entries - host_count).abs() <= 1000.0,
        "node_nf_conntrack_entries {entries}, kernel {host_count}"
    );
    let drops_before = sample(&first, "ctscope_drops_total", &["cause=\"ruleset\""]).unwrap_or(0.0);

    // 200 new flows: 100 accepted, 100 dropped by the ruleset.
    let sent = udp_flows(&ns, 100, 20000, false).expect("flows");
    assert_eq!(sent, 100);
    udp_flows(&ns, 100, 30000, false).expect("dropped flows");
    let tracked = ns.count().expect("count") as f64;
    assert!(tracked >= 100.0, "{tracked} entries");

    let mut last = String::new();
    let moved = wait_for(Duration::from_secs(30), || {
        last = scrape();
        sample(&last, "ctscope_netns_entries", &[&inum]) == Some(tracked)
            && sample(
                &last,
                "ctscope_netns_drops_total",
                &[&inum, "cause=\"ruleset\""],
            ) == Some(100.0)
            && sample(&last, "node_nf_conntrack_entries", &[]).is_some()
    });
    assert!(
        moved,
        "after 100 accepted and 100 dropped flows in {} (kernel: {tracked} entries):\n{}\n\
         container log:\n{}",
        ns.inum,
        last.lines()
            .filter(|l| l.contains(&inum) || l.starts_with("node_nf_conntrack"))
            .collect::<Vec<_>>()
            .join("\n"),
        container.logs()
    );
    let drops_after = sample(&last, "ctscope_drops_total", &["cause=\"ruleset\""]).expect("drops");
    assert!(
        drops_after >= drops_before + 100.0,
        "{drops_before} -> {drops_after}"
    );
    drop(container);
}

/// What a container made of: whether it still runs, a /metrics page once
/// `want` holds for it (or the last one after three sampling intervals),
/// and its log.
fn outcome(
    ds: &serde_yaml::Value,
    without: &[&str],
    extra: &[&str],
    want: impl Fn(&str) -> bool,
) -> (bool, Option<String>, String) {
    let interval: f64 = ds["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .skip_while(|a| *a != "--interval")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("--interval");
    let (container, listen) = start(ds, without, extra);
    let answered = wait_for(Duration::from_secs(60), || {
        http_get(listen, "/healthz").is_ok() || !container.running()
    });
    assert!(
        answered,
        "neither answered nor stopped: {}",
        container.logs()
    );
    let mut page = None;
    if container.running() {
        wait_for(Duration::from_secs_f64(interval * 3.0), || {
            page = http_get(listen, "/metrics").ok().map(|(_, b)| b);
            page.as_deref().is_some_and(&want)
        });
    }
    (container.running(), page, container.logs())
}

/// The capabilities the DaemonSet adds, each shown to be needed where this
/// machine can show it: without it ctscope stops with an error that names
/// it, or a metric it serves goes missing.
///
/// - CAP_SYSLOG: kallsyms addresses; ctscope stops.
/// - CAP_BPF, CAP_PERFMON: loading and attaching the programs. CAP_SYS_ADMIN
///   alone also grants both (kernel/bpf/syscall.c `bpf_capable`,
///   include/linux/capability.h `perfmon_capable`), so each is removed
///   together with it; ctscope stops.
/// - CAP_NET_ADMIN: ctnetlink (nfnetlink checks it for every message), the
///   kernel counters' source where /proc/net/stat/nf_conntrack is missing;
///   here forced with `--kernel-stats ctnetlink`, node_nf_conntrack_entries
///   goes missing.
///
/// Not shown here: CAP_SYS_ADMIN for entering other namespaces (on this
/// kernel /metrics read the same without it: per-namespace entries come from
/// the hash-table walk) and CAP_SYS_RESOURCE (this machine's root does not
/// have it to give, see `ulimits`).
#[test]
fn daemonset_capabilities_are_each_needed() {
    require_root();
    if !ready() {
        return;
    }
    let _lock = shared_lock();
    let image = build_image();
    let ds = daemonset(REGISTRY);
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert!(c["image"] == image.as_str());
    let caps: Vec<&str> = c["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();

    for (without, needs) in [
        (&["SYSLOG"][..], "CAP_SYSLOG"),
        (&["BPF", "SYS_ADMIN"], "Operation not permitted"),
        (&["PERFMON", "SYS_ADMIN"], "Operation not permitted"),
    ] {
        for cap in without {
            assert!(caps.contains(cap), "the DaemonSet does not add {cap}");
        }
        let (running, _, logs) = outcome(&ds, without, &[], |_| true);
        eprintln!("without {without:?}: {}", logs.lines().last().unwrap_or(""));
        assert!(!running, "runs without {without:?}:\n{logs}");
        assert!(logs.contains(needs), "without {without:?}:\n{logs}");
    }

    let entries = |page: &str| sample(page, "node_nf_conntrack_entries", &[]).is_some();
    let ctnetlink = ["--kernel-stats", "ctnetlink"];
    let (running, page, logs) = outcome(&ds, &[], &ctnetlink, entries);
    assert!(
        running && page.as_deref().is_some_and(entries),
        "ctnetlink with every capability:\n{logs}"
    );
    assert!(caps.contains(&"NET_ADMIN"));
    let (running, page, logs) = outcome(&ds, &["NET_ADMIN"], &ctnetlink, entries);
    assert!(running, "{logs}");
    assert!(
        !page.as_deref().is_some_and(entries),
        "node_nf_conntrack_entries read through ctnetlink without CAP_NET_ADMIN:\n{logs}"
    );
}
