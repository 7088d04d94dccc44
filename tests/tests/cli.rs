//! The command line people script against: version, completions, man
//! pages, exit statuses, pipes closed early, signals, and the files ctscope
//! creates as root in directories other users can write.

use std::{
    fs,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{MetadataExt as _, PermissionsExt as _},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use ctscope_integration::*;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(ctscope_bin())
        .args(args)
        .output()
        .expect("run ctscope");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn version_names_the_embedded_ebpf_object() {
    let (ok, text) = run(&["--version"]);
    assert!(ok);
    assert!(text.starts_with("ctscope "), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("eBPF object build id: "));
    assert!(
        id.is_some_and(|id| id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, text) = run(&["completions", shell]);
        assert!(ok, "{shell}");
        for sub in ["stats", "drops", "load", "serve", "top"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    assert!(
        !run(&["completions", "tcsh"]).0,
        "unknown shell is an error"
    );
}

#[test]
fn man_pages_render_for_the_tool_and_its_subcommands() {
    let (ok, page) = run(&["man"]);
    assert!(ok && page.contains(".TH ctscope 1"), "{page}");
    let (ok, page) = run(&["man", "drops"]);
    assert!(ok && page.contains(".TH ctscope-drops 1"), "{page}");
    assert!(page.contains("syn"), "options are documented");
    let (ok, page) = run(&["man", "top"]);
    assert!(ok && page.contains(".TH ctscope-top 1"), "{page}");
    assert!(
        page.contains("NO_COLOR"),
        "the keys and NO_COLOR are documented"
    );
    assert!(!run(&["man", "nope"]).0);
}

/// A directory of this test's own, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ctscope-it-cli-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("scratch dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The uid and gid of `nobody`, the other user of these tests.
const NOBODY: u32 = 65534;

fn chown(path: &Path, uid: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid path; lchown changes a link itself, not its target.
    assert_eq!(unsafe { libc::lchown(c.as_ptr(), uid, uid) }, 0, "{path:?}");
}

/// Runs ctscope to its end (killed after `limit`, failing the test).
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ctscope");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} did not end within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn ctscope(args: &[&str]) -> Command {
    let mut cmd = Command::new(ctscope_bin());
    cmd.args(args);
    cmd
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status 2, a one-line message containing `says`, and nothing
/// attached first (attaching prints the backend chosen).
fn assert_refused_up_front(args: &[&str], says: &str) {
    let started = Instant::now();
    let out = run_within(&mut ctscope(args), Duration::from_secs(20));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
    assert!(
        !err.contains("backend") && err.lines().count() == 1,
        "{args:?} attached before refusing: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
}

#[test]
fn wrong_arguments_and_environments_exit_with_status_2() {
    let out = run_within(&mut ctscope(&["man", "bogus"]), Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no subcommand `bogus`"));

    let dir = Scratch::new("status");
    let trace_dir = dir.arg("");
    for args in [
        &["info", &trace_dir][..],
        &["export", &trace_dir],
        &["replay", &trace_dir, "--stats"],
    ] {
        let out = run_within(&mut ctscope(args), Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    }

    require_root();
    let missing = dir.arg("no-such-dir/ready");
    for args in [
        &["stats", "--count", "1", "--ready-file", &missing][..],
        &["drops", "--duration", "1", "--ready-file", &missing],
        &["buckets", "--ready-file", &missing],
        &[
            "record",
            "-o",
            &dir.arg("t.ctrace"),
            "--ready-file",
            &missing,
        ],
        &["load", "--count", "1", "--ready-file", &missing],
    ] {
        assert_refused_up_front(args, "does not exist");
    }
    assert_refused_up_front(&["stats", "--ready-file", &dir.arg("")], "is a directory");
    assert_refused_up_front(
        &["record", "-o", &dir.arg("no-such-dir/t.ctrace")],
        "does not exist",
    );
    assert_refused_up_front(&["record", "-o", "/dev/null"], "is a device");
    // `-` is not a file named `-` (nor standard output).
    assert_refused_up_front(&["record", "-o", "-"], "not to standard output");
    assert!(!Path::new("-").exists());
    // Sub-100 ms intervals are refused by the argument parser.
    let out = run_within(
        &mut ctscope(&["stats", "--interval", "0.0000001"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("at least 100 ms"), "{}", stderr(&out));

    let name = format!("ctscope-it-missing-{}", std::process::id());
    let out = run_within(
        &mut ctscope(&["load", "--netns", &name, "--count", "1"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));

    // Unprivileged: no namespace can be created or entered.
    for args in [
        &["load", "--count", "1"][..],
        &["load", "--netns", "/proc/1/ns/net"],
    ] {
        let mut cmd = ctscope(args);
        cmd.uid(NOBODY).gid(NOBODY).current_dir("/");
        let out = run_within(&mut cmd, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("not permitted") || err.contains("Permission denied"),
            "{err}"
        );
    }
}

/// Runs `args` with stdout a pipe nobody reads any more (its reader is
/// closed before ctscope starts): the command must end quietly.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = ctscope(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ctscope");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "{args:?} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn assert_quiet_end(args: &[&str], out: &Output) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("os error 32"),
        "{args:?}: {err}"
    );
    assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
        &["man", "drops"],
        &["--help"],
    ] {
        assert_quiet_end(args, &into_closed_pipe(args));
    }
    // The way people meet it (bash for PIPESTATUS; the VM has only busybox).
    if !skip_without("bash") {
        let script = format!(
            "{} completions bash | head -1 >/dev/null; exit ${{PIPESTATUS[0]}}",
            ctscope_bin().display()
        );
        let out = run_within(
            Command::new("bash").args(["-c", &script]),
            Duration::from_secs(10),
        );
        assert_quiet_end(&["completions", "bash", "| head -1"], &out);
    }

    require_root();
    let _lock = shared_lock();
    let dir = Scratch::new("pipe");
    let trace = dir.arg("t.ctrace");
    let out = run_within(
        &mut ctscope(&["record", "-o", &trace, "--duration", "1"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [
        &["info", &trace][..],
        &["info", &trace, "--json"],
        &["export", &trace, "--kind", "snapshots"],
        &["replay", &trace, "--stats"],
        &["stats", "--count", "3", "--interval", "0.2"],
        &["stats", "--json", "--count", "3", "--interval", "0.2"],
        &["drops", "--json", "--duration", "1"],
        &["drops", "--duration", "1"],
        &["buckets", "--json"],
        &["load", "--count", "10", "--json"],
    ] {
        // No table walker on a kernel without bpf_loop and without
        // nf_conntrack_hash in kallsyms: tests/buckets.rs checks that it
        // says so there.
        if args[0] == "buckets" && !walker_available() {
            eprintln!("SKIPPED: `ctscope buckets` without a table walker here");
            continue;
        }
        assert_quiet_end(args, &into_closed_pipe(args));
    }
    let out = into_closed_pipe(&["doctor", "--json"]);
    assert!(
        !stderr(&out).contains("panicked") && !stderr(&out).contains("Broken pipe"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn drops_piped_into_head_ends_quietly_at_the_next_drop() {
    if skip_without("bash") {
        return;
    }
    require_root();
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    ns.nft("add rule inet ctscope_test in udp dport 9 drop")
        .expect("drop rule");
    let dir = Scratch::new("head");
    let ready = dir.path("ready");
    let script = format!(
        "{} drops --json --duration 20 --ready-file {} | head -1 >{}; exit ${{PIPESTATUS[0]}}",
        ctscope_bin().display(),
        ready.display(),
        dir.arg("first"),
    );
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    assert!(
        wait_for(Duration::from_secs(30), || ready.exists()),
        "never attached"
    );
    let started = Instant::now();
    for _ in 0..3 {
        udp_flows(&ns, 1, 9, false).expect("udp");
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "drops went on after head left");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ended at the next write, not at --duration"
    );
    assert_quiet_end(&["drops", "--json", "| head -1"], &out);
    let first = fs::read_to_string(dir.path("first")).expect("head's line");
    let v: serde_json::Value = serde_json::from_str(first.trim()).expect("a JSON drop line");
    assert_eq!(v["dport"], 9, "{v}");
}

#[test]
fn ready_file_links_are_refused_and_their_targets_untouched() {
    require_root();
    // A directory another user controls, and a root file elsewhere.
    let shared = Scratch::new("shared");
    chown(&shared.0, NOBODY);
    let safe = Scratch::new("safe");
    let victim = safe.path("victim");
    fs::write(&victim, "precious\n").expect("victim");

    // The attacker's links: to the victim, to a file not yet there, and a
    // directory link.
    let link = shared.path("ready");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    chown(&link, NOBODY);
    let dangling = shared.path("dangling");
    let created = safe.path("created-by-root");
    std::os::unix::fs::symlink(&created, &dangling).expect("symlink");
    chown(&dangling, NOBODY);
    let dir_link = shared.path("dir");
    std::os::unix::fs::symlink(&safe.0, &dir_link).expect("symlink");
    chown(&dir_link, NOBODY);

    for (path, says) in [
        (link.clone(), "symbolic link"),
        (dangling.clone(), "symbolic link"),
        (dir_link.join("victim"), "owned by uid 65534"),
    ] {
        let arg = path.to_string_lossy().into_owned();
        assert_refused_up_front(&["stats", "--count", "1", "--ready-file", &arg], says);
        assert_refused_up_front(&["record", "-o", &arg], says);
    }
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious\n");
    assert!(
        !created.exists(),
        "nothing created through the dangling link"
    );
    assert!(
        fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );

    // A hard link to the victim, and a file of the other user's: both are
    // replaced by a new file of root's, the victim keeps its content.
    let hard = shared.path("hard");
    fs::hard_link(&victim, &hard).expect("hard link");
    let theirs = shared.path("theirs");
    fs::write(&theirs, "theirs\n").expect("theirs");
    chown(&theirs, NOBODY);
    for path in [&hard, &theirs] {
        let arg = path.to_string_lossy().into_owned();
        let out = run_within(
            &mut ctscope(&["stats", "--count", "1", "--ready-file", &arg]),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let meta = fs::metadata(path).expect("ready file");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
        let pid: u32 = fs::read_to_string(path)
            .expect("ready")
            .trim()
            .parse()
            .expect("a pid");
        assert!(pid > 0);
    }
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious\n");
    assert_eq!(fs::metadata(&victim).expect("victim").nlink(), 1);
    let names: Vec<_> = fs::read_dir(&shared.0)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "no temporary file left: {names:?}"
    );
}

#[test]
fn record_over_another_users_file_writes_a_new_file_of_roots() {
    require_root();
    let _lock = shared_lock();
    let shared = Scratch::new("record");
    chown(&shared.0, NOBODY);
    let out_path = shared.path("t.ctrace");
    fs::write(&out_path, "theirs\n").expect("theirs");
    fs::set_permissions(&out_path, fs::Permissions::from_mode(0o666)).expect("chmod");
    chown(&out_path, NOBODY);
    let other = shared.path("other-name");
    fs::hard_link(&out_path, &other).expect("hard link");

    let arg = out_path.to_string_lossy().into_owned();
    let out = run_within(
        &mut ctscope(&["record", "-o", &arg, "--duration", "1"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = fs::metadata(&out_path).expect("trace");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777, meta.nlink()),
        (0, 0o600, 1)
    );
    let info = run_within(&mut ctscope(&["info", &arg]), Duration::from_secs(10));
    assert!(info.status.success(), "{}", stderr(&info));
    assert_eq!(fs::read_to_string(&other).expect("other"), "theirs\n");
    let meta = fs::metadata(&other).expect("other");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (NOBODY, 0o666));
}

#[test]
fn sighup_ends_record_with_its_end_record_and_drops_with_its_summary() {
    require_root();
    let _lock = shared_lock();
    let dir = Scratch::new("hup");
    let trace = dir.arg("t.ctrace");
    let mut rec = Ctscope::start(&["record", "-o", &trace]).expect("record");
    std::thread::sleep(Duration::from_millis(300));
    let status = rec.signal(libc::SIGHUP).expect("exit");
    assert!(status.success(), "{status}: {}", rec.stderr_text());
    let out = run_within(
        &mut ctscope(&["info", &trace, "--json"]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["end_reason"], "signal", "{summary}");
    assert_eq!(summary["truncated"], false, "{summary}");

    let mut drops = Ctscope::start(&["drops", "--json"]).expect("drops");
    let status = drops.signal(libc::SIGHUP).expect("exit");
    assert!(status.success(), "{status}: {}", drops.stderr_text());
    let line = drops.next_line(Duration::from_secs(2)).expect("summary");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["type"], "summary", "{v}");

    let mut stats = Ctscope::start(&["stats", "--json"]).expect("stats");
    let status = stats.signal(libc::SIGHUP).expect("exit");
    assert!(status.success(), "{status}: {}", stats.stderr_text());
}
