//! Helpers for ctscope's integration tests: private network namespaces with
//! conntrack active, real traffic inside them, guarded changes to the global
//! conntrack sysctls, and the real `ctscope` binary driven as users drive it.
//!
//! Every helper that changes something undoes it in `Drop`, so a failing
//! test leaves the machine as it found it.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

pub mod tmux;

/// Path of the binary under test: `CTSCOPE_BIN` (set by `cargo xtask test`),
/// else the workspace's release or debug build.
pub fn ctscope_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CTSCOPE_BIN") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("ctscope");
        if p.exists() {
            return p;
        }
    }
    panic!("no ctscope binary: run the tests with `cargo xtask test`");
}

/// The backend ctscope should report: `CTSCOPE_BACKEND` when the harness
/// forces one (ctscope reads the same variable), else what `auto` picks:
/// kprobe where the kernel has kprobes.
pub fn expected_backend() -> &'static str {
    match std::env::var("CTSCOPE_BACKEND").as_deref() {
        Ok("kprobe") => "kprobe",
        Ok("tracepoint") => "tracepoint",
        _ if Path::new("/sys/bus/event_source/devices/kprobe").exists() => "kprobe",
        _ => "tracepoint",
    }
}

/// True (after saying so) when a tool this test needs is one the VM
/// harness lists in `CTSCOPE_VM_MISSING_TOOLS`; on a normal machine a
/// missing tool is a failure, not a skip.
pub fn skip_without(tool: &str) -> bool {
    let missing = std::env::var("CTSCOPE_VM_MISSING_TOOLS").unwrap_or_default();
    if missing.split([',', ' ']).any(|t| t == tool) {
        eprintln!("SKIPPED: `{tool}` is not available in this VM (CTSCOPE_VM_MISSING_TOOLS)");
        return true;
    }
    false
}

/// `d` stretched by `CTSCOPE_TEST_SLOWDOWN` (a factor, default 1): a guest
/// under software emulation of another architecture (the arm64 VM) attaches
/// ctscope's probes in about a minute where this machine takes a second.
pub fn patience(d: Duration) -> Duration {
    let factor = std::env::var("CTSCOPE_TEST_SLOWDOWN")
        .ok()
        .and_then(|f| f.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 1.0)
        .unwrap_or(1.0);
    d.mul_f64(factor)
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// Whether ctscope can find and walk the hash table on this kernel: with
/// `bpf_loop` (5.17+) always; without it (Debian 11's 5.10) through the
/// bounded walk, which finds the table from kallsyms' `nf_conntrack_hash`
/// (a data symbol, listed with CONFIG_KALLSYMS_ALL, as on Debian).
pub fn walker_available() -> bool {
    kernel_at_least(5, 17) || kallsyms_lists("nf_conntrack_hash")
}

/// Whether /proc/kallsyms lists `name` with its address (root sees them).
pub fn kallsyms_lists(name: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_ascii_whitespace();
            let addr = f.next().unwrap_or("0");
            f.nth(1) == Some(name) && addr.chars().any(|c| c != '0')
        })
}

/// True where ctscope has no hash table walker: a kernel without
/// `bpf_loop` whose kallsyms lacks `nf_conntrack_hash`. There a test of
/// walks checks instead that `ctscope buckets` refuses with the reason
/// (exit status 2, naming bpf_loop), says SKIPPED, and returns true. Never
/// a silent pass. The kernels the suite runs (6.18, Debian 6.12, 6.1 and
/// 5.10) all walk.
pub fn walker_unavailable() -> bool {
    if walker_available() {
        return false;
    }
    assert_refused_without_bpf_loop(&["buckets"]);
    eprintln!(
        "SKIPPED: no hash table walks without bpf_loop and without nf_conntrack_hash in \
         kallsyms; ctscope buckets says so"
    );
    true
}

/// Asserts that `ctscope ARGS` refuses for want of `bpf_loop`: exit status
/// 2, and the reason on stderr.
pub fn assert_refused_without_bpf_loop(args: &[&str]) {
    let out = Command::new(ctscope_bin())
        .args(args)
        .output()
        .expect("run ctscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "ctscope {args:?} without bpf_loop: {stderr}"
    );
    assert!(stderr.contains("bpf_loop"), "the reason is given: {stderr}");
}

/// The integration tests load eBPF programs and create namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the integration tests need root: run `sudo cargo xtask test`"
    );
}

fn sh(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// Ruleset that makes conntrack track everything in a namespace.
pub const CT_RULESET: &str = "
table inet ctscope_test {
    chain in { type filter hook input priority 0; ct state established,related accept; }
    chain out { type filter hook output priority 0; ct state established,related accept; }
}";

/// A private network namespace with loopback up and conntrack active.
/// Deleted on drop.
pub struct Netns {
    pub name: String,
    pub inum: u32,
}

impl Netns {
    pub fn new() -> Result<Self> {
        let name = format!(
            "ctscope-t{}-{}",
            std::process::id(),
            NEXT_NS.fetch_add(1, Ordering::Relaxed)
        );
        sh(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self {
            inum: fs::metadata(format!("/run/netns/{name}"))?.ino() as u32,
            name,
        };
        sh(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        ns.nft(CT_RULESET)?;
        // UDP entries live 30 s by default; under software emulation (the
        // VM suite) a test can take longer than that, and entries it counts
        // on would expire under it. Per-namespace sysctls.
        ns.run(|| {
            for name in [
                "nf_conntrack_udp_timeout",
                "nf_conntrack_udp_timeout_stream",
            ] {
                let _ = fs::write(format!("/proc/sys/net/netfilter/{name}"), "600");
            }
        })?;
        Ok(ns)
    }

    /// Loads nft rules (`nft -f -` syntax) inside the namespace.
    pub fn nft(&self, rules: &str) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, rules.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        sh(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it
    /// creates live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || -> Result<T> {
            let file = File::open(&path)?;
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// The kernel's conntrack counters in this namespace, summed over CPUs
    /// (/proc/net/stat/nf_conntrack read from inside it).
    pub fn kernel_stats(&self) -> Result<HashMap<String, u64>> {
        let text = self.run(|| fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack"))??;
        parse_stat(&text)
    }

    /// `nf_conntrack_count` of this namespace.
    pub fn count(&self) -> Result<u64> {
        let text =
            self.run(|| fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count"))??;
        Ok(text.trim().parse()?)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Sums /proc/net/stat/nf_conntrack over CPUs, by column name.
pub fn parse_stat(text: &str) -> Result<HashMap<String, u64>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .context("empty stat file")?
        .split_whitespace()
        .collect();
    let mut sums: HashMap<String, u64> = HashMap::new();
    for line in lines {
        for (name, value) in header.iter().zip(line.split_whitespace()) {
            let v = u64::from_str_radix(value, 16)?;
            if *name == "entries" {
                sums.insert("entries".into(), v);
            } else {
                *sums.entry((*name).to_owned()).or_default() += v;
            }
        }
    }
    Ok(sums)
}

/// Sends one UDP datagram to each of `n` ports from `first_port` on, from
/// inside `ns` (`v6` for ::1). Each is a new conntrack flow. Returns how
/// many sends the kernel accepted (a drop at OUTPUT fails the send).
pub fn udp_flows(ns: &Netns, n: u16, first_port: u16, v6: bool) -> Result<usize> {
    ns.run(move || -> Result<usize> {
        let (bind, dst): (SocketAddr, std::net::IpAddr) = if v6 {
            ((Ipv6Addr::LOCALHOST, 0).into(), Ipv6Addr::LOCALHOST.into())
        } else {
            ((Ipv4Addr::LOCALHOST, 0).into(), Ipv4Addr::LOCALHOST.into())
        };
        let sock = UdpSocket::bind(bind)?;
        let mut sent = 0;
        for i in 0..n {
            if sock.send_to(b"ctscope", (dst, first_port + i)).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })?
}

/// Opens and closes `m` TCP connections to a listener, all inside `ns`.
pub fn tcp_connections(ns: &Netns, m: usize) -> Result<()> {
    ns.run(move || -> Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        for _ in 0..m {
            let client = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            let (server, _) = listener.accept()?;
            drop(client);
            drop(server);
        }
        Ok(())
    })?
}

const LOCK_PATH: &str = "/run/ctscope-tests.lock";

fn lock(mode: libc::c_int) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), mode) } != 0 {
        bail!("locking {LOCK_PATH}: {}", std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Held by every test that generates traffic or counts programs: such tests
/// may share the machine with each other (and with other checkouts' test
/// runs), but not with a test that changes the global conntrack sysctls.
pub fn shared_lock() -> File {
    lock(libc::LOCK_SH).expect("test lock")
}

/// Serialises tests that change the global conntrack sysctls, across
/// processes too, and restores every value it changed on drop (also when
/// the test panics).
pub struct SysctlGuard {
    _lock: File,
    saved: Vec<(String, String)>,
}

impl SysctlGuard {
    pub fn new() -> Result<Self> {
        Ok(Self {
            _lock: lock(libc::LOCK_EX)?,
            saved: Vec::new(),
        })
    }

    /// Sets /proc/sys/net/netfilter/<name> in the initial namespace.
    pub fn set(&mut self, name: &str, value: u64) -> Result<()> {
        let path = format!("/proc/sys/net/netfilter/{name}");
        if !self.saved.iter().any(|(n, _)| n == name) {
            self.saved.push((
                name.to_owned(),
                fs::read_to_string(&path)?.trim().to_owned(),
            ));
        }
        fs::write(&path, value.to_string()).with_context(|| format!("writing {path}"))
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        for (name, value) in self.saved.iter().rev() {
            let path = format!("/proc/sys/net/netfilter/{name}");
            if let Err(e) = fs::write(&path, value) {
                eprintln!("could not restore {path} to {value}: {e}");
            }
        }
    }
}

/// A running `ctscope`, with its stdout lines delivered as they come.
pub struct Ctscope {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    ready: PathBuf,
}

impl Ctscope {
    /// Starts ctscope with `args` plus `--ready-file`, and waits until the
    /// probes are attached.
    pub fn start(args: &[&str]) -> Result<Self> {
        let ready = std::env::temp_dir().join(format!(
            "ctscope-ready-{}-{}",
            std::process::id(),
            NEXT_NS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_file(&ready);
        let mut child = Command::new(ctscope_bin())
            .args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ctscope")?;
        let lines = pipe_lines(child.stdout.take());
        let stderr = pipe_lines(child.stderr.take());
        let mut me = Self {
            child,
            lines,
            stderr,
            ready,
        };
        let attach = patience(Duration::from_secs(30));
        let deadline = Instant::now() + attach;
        while !me.ready.exists() {
            if let Some(status) = me.child.try_wait()? {
                bail!(
                    "ctscope exited with {status} before attaching: {}",
                    me.stderr_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "ctscope did not attach within {} s: {}",
                    attach.as_secs(),
                    me.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, waiting up to `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Result<String> {
        self.lines
            .recv_timeout(timeout)
            .with_context(|| format!("no output from ctscope within {timeout:?}"))
    }

    /// The next stdout line parsed as JSON.
    pub fn next_json(&self, timeout: Duration) -> Result<serde_json::Value> {
        let line = self.next_line(timeout)?;
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))
    }

    /// Everything ctscope wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Sends a signal and waits for the exit.
    pub fn signal(&mut self, sig: libc::c_int) -> Result<ExitStatus> {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        self.wait(Duration::from_secs(10))
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("ctscope did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `ctscope ARGS` to completion and asserts that it succeeded;
/// returns its stdout.
pub fn ctscope_ok(args: &[&str]) -> String {
    let out = Command::new(ctscope_bin())
        .args(args)
        .output()
        .expect("run ctscope");
    assert!(
        out.status.success(),
        "ctscope {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Ctscope {
    /// `ctscope serve` on a free loopback port, sampling every 0.5 s, with
    /// `extra` arguments; returns it with the address it listens on.
    pub fn serve(extra: &[&str]) -> Result<(Self, SocketAddr)> {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let addr = listen.to_string();
        let mut args = vec!["serve", "--listen", &addr, "--interval", "0.5"];
        args.extend_from_slice(extra);
        Ok((Self::start(&args)?, listen))
    }
}

impl Drop for Ctscope {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.ready);
    }
}

fn pipe_lines(pipe: Option<impl std::io::Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(pipe) = pipe {
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// IDs of the eBPF programs a process holds, from the `prog_id:` line of
/// each fd's fdinfo (links hold their program too).
pub fn program_ids_of(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in dir.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some(id) = line
                .strip_prefix("prog_id:")
                .and_then(|v| v.trim().parse().ok())
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids
}

/// Which of these program IDs are still loaded in the kernel.
pub fn still_loaded(ids: &[u32]) -> Vec<u32> {
    ids.iter()
        .copied()
        .filter(|id| {
            Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string()])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The row of namespace `inum` in a `stats --json` record.
pub fn netns_row(record: &serde_json::Value, inum: u32) -> Option<&serde_json::Value> {
    record
        .get("netns")?
        .as_array()?
        .iter()
        .find(|r| r.get("inum").and_then(|i| i.as_u64()) == Some(u64::from(inum)))
}

/// A number at a JSON pointer, or 0.
pub fn num(v: &serde_json::Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Checks a record against one of the JSON Schemas in docs/.
pub fn assert_schema(schema_file: &str, record: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(schema_file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator
        .iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_file}: {errors:?}\n{record}");
}

/// Starts a TCP connection from exactly `src` to `dst` inside `ns` and
/// abandons it after `wait`: the SYN leaves at once; closing before the
/// retransmission timer (1 s) fires keeps it to one SYN.
pub fn tcp_syn(ns: &Netns, src: SocketAddr, dst: SocketAddr, wait: Duration) -> Result<()> {
    ns.run(move || -> Result<()> {
        let domain = if src.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket syscalls on an fd this closure owns.
        unsafe {
            let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            if fd < 0 {
                bail!("socket: {}", std::io::Error::last_os_error());
            }
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as u32,
            );
            let (sa, len) = sockaddr(src);
            if libc::bind(fd, (&raw const sa).cast(), len) != 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                bail!("bind {src}: {e}");
            }
            let (da, len) = sockaddr(dst);
            libc::connect(fd, (&raw const da).cast(), len);
            thread::sleep(wait);
            libc::close(fd);
        }
        Ok(())
    })?
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            (storage, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            (storage, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// A TCP listener inside `ns` (it stays there after the call returns).
pub fn tcp_listener(ns: &Netns, addr: SocketAddr) -> Result<TcpListener> {
    ns.run(move || TcpListener::bind(addr))?
        .with_context(|| format!("listening on {addr}"))
}

/// Reads stdout lines of a running ctscope until `stop` returns true for
/// one or `timeout` passes; returns every line read.
pub fn read_until(
    ct: &Ctscope,
    timeout: Duration,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match ct.next_line(left) {
            Ok(line) => {
                let done = stop(&line);
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    lines
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
