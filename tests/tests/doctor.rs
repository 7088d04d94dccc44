//! `ctscope doctor` on this machine: what it finds, the commands it gives,
//! and an exit status that follows the worst finding.

use std::process::Command;

use ctscope_integration::*;
use serde_json::Value;

fn doctor(uid: Option<u32>) -> (i32, Value) {
    let mut cmd = Command::new(ctscope_bin());
    cmd.args(["doctor", "--json"]);
    if let Some(uid) = uid {
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
    }
    let out = cmd.output().expect("run doctor");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), v)
}

fn check<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no {id} check: {v}"))
}

fn expected_exit(status: &Value) -> i32 {
    match status.as_str() {
        Some("ok" | "info") => 0,
        Some("warning") => 1,
        _ => 2,
    }
}

#[test]
fn this_machine_can_run_ctscope() {
    require_root();
    let _lock = shared_lock();
    let (code, v) = doctor(None);
    assert_eq!(code, expected_exit(&v["status"]), "{v}");
    for id in [
        "privileges",
        "btf",
        "tracepoints",
        "kallsyms",
        "probes",
        "counters",
    ] {
        assert_eq!(check(&v, id)["status"], "ok", "{id}: {v}");
    }
    // Which backend, and why: on the build machine (no kprobes) the
    // tracepoints; in the VM suite whatever CTSCOPE_BACKEND forces.
    let backend = check(&v, "backend");
    let message = backend["message"].as_str().unwrap_or_default();
    let expected = match std::env::var("CTSCOPE_BACKEND").as_deref() {
        Ok("kprobe") => "kprobe backend",
        Ok("tracepoint") => "tracepoint backend",
        _ if std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() => "backend",
        _ => "tracepoint backend",
    };
    assert!(message.contains(expected), "{backend}");
    assert!(message.contains(": "), "says why: {backend}");
    // Which features this kernel has, and which causes are exact here
    // (issue 16: 5.10 lacks drop reasons, bpf_loop, ...).
    let features = check(&v, "features");
    assert_eq!(features["status"], "info", "{features}");
    let text = features["message"].as_str().unwrap_or_default();
    assert!(text.contains("bpf_loop"), "{features}");
    let causes = check(&v, "causes");
    let text = causes["message"].as_str().unwrap_or_default();
    assert!(
        text.contains("exact drop causes") && text.contains("table_full"),
        "table_full is exact everywhere: {causes}"
    );
}

#[test]
fn a_full_namespace_is_critical_with_the_commands_to_fix_it() {
    require_root();
    let mut sysctl = SysctlGuard::new().expect("lock");
    let ns = Netns::new().expect("namespace");
    sysctl.set("nf_conntrack_max", 40).expect("max");
    tcp_connections(&ns, 40).expect("fill");
    let (code, v) = doctor(None);
    assert_eq!(v["status"], "critical", "{v}");
    assert_eq!(code, 2);
    let raise = check(&v, "raise-max");
    assert_eq!(raise["status"], "critical");
    let cmds: Vec<&str> = raise["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(
        cmds.iter()
            .any(|c| c.starts_with("sysctl -w net.netfilter.nf_conntrack_max=")),
        "{cmds:?}"
    );
    assert!(
        raise["message"]
            .as_str()
            .is_some_and(|m| m.contains(&ns.inum.to_string())),
        "names the namespace: {raise}"
    );
}

#[test]
fn without_privileges_it_says_so_and_exits_2() {
    require_root();
    let (code, v) = doctor(Some(65534));
    assert_eq!(code, 2, "{v}");
    let p = check(&v, "privileges");
    assert_eq!(p["status"], "critical");
    assert!(
        p["message"].as_str().is_some_and(|m| m.contains("root")),
        "{p}"
    );
}

/// A `load --squeeze` killed with SIGKILL cannot put nf_conntrack_max back.
/// Its restore record lets an unprivileged doctor say so (critical, with the
/// command), and the next ctscope run as root puts the limit back itself.
#[test]
fn a_limit_left_lowered_by_a_killed_run_is_reported_then_restored() {
    require_root();
    let mut sysctl = SysctlGuard::new().expect("sysctl lock");
    let max_path = "/proc/sys/net/netfilter/nf_conntrack_max";
    let read_max = || -> u64 {
        std::fs::read_to_string(max_path)
            .expect("nf_conntrack_max")
            .trim()
            .parse()
            .expect("a number")
    };
    let before = read_max();
    // The guard puts the value back should ctscope not.
    sysctl
        .set("nf_conntrack_max", before)
        .expect("remember nf_conntrack_max");
    let mut load = Command::new(ctscope_bin())
        .args([
            "load",
            "--squeeze",
            "300",
            "--rate",
            "100",
            "--duration",
            "60",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ctscope load");
    let lowered = wait_for(std::time::Duration::from_secs(10), || read_max() == 300);
    load.kill().expect("SIGKILL");
    let _ = load.wait();
    assert!(lowered, "load --squeeze did not lower the limit");
    assert_eq!(read_max(), 300, "SIGKILL leaves the limit lowered");

    // Unprivileged: cannot write the sysctl, so it is still lowered.
    let (code, v) = doctor(Some(65534));
    assert_eq!(code, 2, "{v}");
    let restore = check(&v, "restore");
    assert_eq!(restore["status"], "critical", "{restore}");
    assert_eq!(
        restore["commands"][0],
        format!("sysctl -w net.netfilter.nf_conntrack_max={before}"),
        "{restore}"
    );
    assert_eq!(read_max(), 300);

    // As root, any command repairs it first and says so.
    let out = Command::new(ctscope_bin())
        .args(["doctor", "--json", "--no-load"])
        .output()
        .expect("run doctor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("restored it to {before}")),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    assert_eq!(check(&v, "restore")["status"], "warning", "{v}");
    assert_eq!(read_max(), before, "restored by the next run");
    // Done: a further run finds nothing to report.
    let (_, v) = doctor(None);
    assert!(
        v["checks"]
            .as_array()
            .is_some_and(|a| a.iter().all(|c| c["id"] != "restore")),
        "{v}"
    );
}

/// Runs a printed command as a user pasting it would, word by word (the
/// commands have no quoting; no shell, because the VM's busybox `sh` runs
/// its own `ip` applet, which has no `netns`).
fn run_words(cmd: &str) -> bool {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    words.split_first().is_some_and(|(program, args)| {
        Command::new(program)
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The per-namespace timeout advice is about the fullest namespace, and the
/// command it prints acts there: `ip netns exec NAME ...` for a named one,
/// `nsenter -n -t PID ...` for one held only by a process. Each printed
/// command is run and must change that namespace's value, not the host's.
#[test]
fn the_timeout_advice_runs_in_the_namespace_it_is_about() {
    require_root();
    let _lock = shared_lock();
    let sysctl = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";
    let host_before = std::fs::read_to_string(sysctl).expect("host timeout");
    let host_count: u64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .expect("count")
        .trim()
        .parse()
        .expect("a number");
    let ns = Netns::new().expect("namespace");
    // The fullest namespace on the machine, by a margin.
    let flows = u16::try_from(host_count + 500).unwrap_or(u16::MAX / 2);
    udp_flows(&ns, flows, 20_000, false).expect("flows");
    let ns_timeout = |enter: &[&str]| -> u64 {
        let out = Command::new(enter[0])
            .args(&enter[1..])
            .args(["cat", sysctl])
            .output()
            .expect("read the namespace's timeout");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a number")
    };
    let advice = || -> String {
        let out = Command::new(ctscope_bin())
            .args(["doctor", "--json", "--no-load"])
            .output()
            .expect("run doctor");
        let v: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
        let c = check(&v, "tcp-timeout");
        c["commands"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no command: {c}"))
            .to_owned()
    };
    let set = "sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=21600";

    // Named: the default 5 days inside it.
    assert_eq!(ns_timeout(&["ip", "netns", "exec", &ns.name]), 432_000);
    let cmd = advice();
    assert_eq!(cmd, format!("ip netns exec {} {set}", ns.name));
    assert!(run_words(&cmd), "{cmd}");
    assert_eq!(ns_timeout(&["ip", "netns", "exec", &ns.name]), 21_600);
    assert_eq!(std::fs::read_to_string(sysctl).expect("host"), host_before);

    // Unnamed: only a process holds it once its name is removed.
    let _ = ns.exec(&["sh", "-c", &format!("echo 432000 > {sysctl}")]);
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sleep", "120"])
        .spawn()
        .expect("a process in the namespace");
    let pid = holder.id().to_string();
    let in_ns = |p: &str| {
        std::fs::read_link(format!("/proc/{p}/ns/net"))
            .is_ok_and(|l| l.to_string_lossy() == format!("net:[{}]", ns.inum))
    };
    assert!(wait_for(std::time::Duration::from_secs(5), || in_ns(&pid)));
    Command::new("ip")
        .args(["netns", "del", &ns.name])
        .status()
        .expect("remove the name");
    let cmd = advice();
    let prefix = format!("nsenter -n -t {pid} ");
    let ok = cmd == format!("{prefix}{set}");
    let ran = ok && run_words(&cmd);
    let inside = ns_timeout(&["nsenter", "-n", "-t", &pid]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(ok, "{cmd}");
    assert!(ran, "{cmd}");
    assert_eq!(inside, 21_600);
    assert_eq!(std::fs::read_to_string(sysctl).expect("host"), host_before);
}
