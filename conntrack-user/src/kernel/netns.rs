//! Reading the kernel's conntrack counters of every network namespace.
//!
//! Namespaces are identified by their nsfs inode number, the `inum` the kernel prints in
//! "nf_conntrack: table full in netns N" (`__nf_conntrack_alloc`,
//! net/netfilter/nf_conntrack_core.c). The counters of a namespace are visible only
//! from inside it: /proc/<tid>/net and /proc/sys/net show the namespace of the task
//! that opens them, and a netlink socket belongs to the namespace of its creator. So a
//! short-lived worker thread enters each namespace with setns(2) and reads there.
//! setns(CLONE_NEWNET) changes only the calling thread (`nsproxy` is per task), and the
//! thread exits afterwards, so the rest of the process never changes namespace.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ctnetlink::{CtnetlinkError, CtnetlinkSocket};
use super::procfs::{ProcfsError, THREAD_STAT_PATH, parse_stat_text, read_stat_file};
use super::stats::ConntrackStats;
use super::sysctl::read_sysctl;

/// The calling thread's own namespace link (not /proc/self, the thread-group leader's).
const OWN_NS: &str = "/proc/thread-self/ns/net";
/// Where `ip netns add` bind-mounts named namespaces.
const NAMED_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// Which kernel interface to read the counters from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum StatsSource {
    /// /proc/net/stat/nf_conntrack, falling back to ctnetlink if that fails.
    #[default]
    Auto,
    /// Only /proc/net/stat/nf_conntrack (needs CONFIG_NF_CONNTRACK_PROCFS).
    Procfs,
    /// Only ctnetlink, as `conntrack -S` (needs CONFIG_NF_CT_NETLINK).
    Ctnetlink,
}

/// The interface a reading actually came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StatsSourceUsed {
    Procfs,
    Ctnetlink,
}

/// A namespace reachable from this host, with one path that opens it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NetnsHandle {
    pub inum: u32,
    /// /run/netns/<name> or /proc/<pid>/ns/net.
    pub path: PathBuf,
    /// The `ip netns` name, when it has one.
    pub name: Option<String>,
    /// The first process found in it, with the container and pod its
    /// cgroup names ([`describe_owner`]); shown beside the name, or instead
    /// of it. Never used to enter the namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl NetnsHandle {
    /// The name shown for the namespace: its `ip netns` name, else its owner.
    pub fn display_name(&self) -> Option<String> {
        self.name.clone().or_else(|| self.owner.clone())
    }
}

/// The kernel's view of one namespace. Failures are per namespace, in `error`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetnsReading {
    pub inum: u32,
    /// Its `ip netns` name (podman's `netns-UUID`, CNI's `cni-UUID`).
    pub name: Option<String>,
    /// The process holding it, with its container and pod
    /// ([`describe_owner`]): who it belongs to, named or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Entries in this namespace (`nf_conntrack_count`).
    pub count: Option<u64>,
    /// `nf_conntrack_max` (global, the same in every namespace).
    pub max: Option<u64>,
    pub stats: Option<ConntrackStats>,
    pub source_used: Option<StatsSourceUsed>,
    pub error: Option<String>,
    /// How a command can act in this namespace.
    #[serde(default)]
    pub enter: Enter,
    /// Its `nf_conntrack_tcp_timeout_established` (a per-namespace sysctl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_timeout_established: Option<u64>,
}

/// How a command printed for a namespace reaches it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enter {
    /// ctscope's own namespace: a plain command acts there.
    Here,
    /// `ip netns exec NAME`.
    Named(String),
    /// `nsenter -n -t PID` (a process that lives in it).
    Pid(u32),
    /// Not known (a trace, or no process found).
    #[default]
    Unknown,
}

impl Enter {
    /// `cmd` made to act in the namespace, or `None` when it cannot be.
    pub fn wrap(&self, cmd: &str) -> Option<String> {
        match self {
            Enter::Here => Some(cmd.to_owned()),
            Enter::Named(name) => Some(format!("ip netns exec {name} {cmd}")),
            Enter::Pid(pid) => Some(format!("nsenter -n -t {pid} {cmd}")),
            Enter::Unknown => None,
        }
    }

    /// How to get into `h` from `own`, the namespace ctscope runs in.
    fn of(h: &NetnsHandle, own: Option<u32>) -> Self {
        if own == Some(h.inum) {
            return Enter::Here;
        }
        if let Some(name) = &h.name {
            return Enter::Named(name.clone());
        }
        // /proc/PID/ns/net or /proc/PID/task/TID/ns/net
        h.path
            .strip_prefix("/proc")
            .ok()
            .and_then(|rest| rest.iter().next())
            .and_then(|pid| pid.to_str()?.parse().ok())
            .map_or(Enter::Unknown, Enter::Pid)
    }
}

/// Why one namespace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open {path}: {source}; the namespace may have gone away")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is now netns {found}, not {expected}: its process exited")]
    Replaced {
        path: PathBuf,
        found: u64,
        expected: u32,
    },
    #[error("setns into netns {inum} failed: {source}; this needs CAP_SYS_ADMIN (run as root)")]
    Setns {
        inum: u32,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Procfs(#[from] ProcfsError),
    #[error(transparent)]
    Ctnetlink(#[from] CtnetlinkError),
    #[error("procfs: {procfs}; ctnetlink fallback: {ctnetlink}")]
    Both {
        procfs: ProcfsError,
        ctnetlink: CtnetlinkError,
    },
}

/// Inode number of the calling thread's network namespace.
pub fn own_netns_inode() -> io::Result<u32> {
    inum_of(&std::fs::metadata(OWN_NS)?)
}

fn inum_of(meta: &std::fs::Metadata) -> io::Result<u32> {
    u32::try_from(meta.ino()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("namespace inode {} does not fit in 32 bits", meta.ino()),
        )
    })
}

/// Every network namespace reachable from here: named ones under /run/netns (their
/// bind mount is the preferred path), then those of every process and thread in
/// /proc. A namespace held solely by an open fd or a socket is missed. Sorted by
/// inode.
pub fn list_namespaces() -> Vec<NetnsHandle> {
    // Every namespace file lives on the nsfs device; a leftover /run/netns file whose
    // bind mount is gone is a plain tmpfs file and is skipped.
    let nsfs_dev = std::fs::metadata(OWN_NS).ok().map(|m| m.dev());
    let mut owners = Owners::lock();
    let own = own_netns_inode().ok();
    let mut found: BTreeMap<u32, NetnsHandle> = BTreeMap::new();
    let mut add = |path: PathBuf, name: Option<String>, pid: Option<&str>| {
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        if nsfs_dev.is_some_and(|dev| dev != meta.dev()) {
            return;
        }
        let Ok(inum) = inum_of(&meta) else { return };
        let h = found.entry(inum).or_insert_with(|| NetnsHandle {
            inum,
            owner: None,
            path,
            name,
        });
        // The first process found in it owns it, named or not (not
        // ctscope's own namespace: that is the host's, or ctscope's pod).
        if h.owner.is_none()
            && own != Some(inum)
            && let Some(pid) = pid
        {
            h.owner = owners.describe(inum, pid);
        }
    };
    for dir in NAMED_DIRS {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            add(entry.path(), Some(name), None);
        }
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str() else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        add(Path::new("/proc").join(pid).join("ns/net"), None, Some(pid));
        // Threads can live in other namespaces than their leader (setns
        // is per thread; `ctscope load` works that way).
        let tasks = Path::new("/proc").join(pid).join("task");
        for task in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            if task.file_name() != file_name {
                add(task.path().join("ns/net"), None, Some(pid));
            }
        }
    }
    owners.keep(&found);
    found.into_values().collect()
}

/// Owner texts by (namespace, pid), kept from one listing to the next so
/// that a sample reads /proc/PID/comm and cgroup only for namespaces new
/// since the last one (a listing runs at every sample).
struct Owners<'a>(std::sync::MutexGuard<'a, BTreeMap<(u32, String), Option<String>>>);

impl Owners<'_> {
    fn lock() -> Self {
        static CACHE: std::sync::Mutex<BTreeMap<(u32, String), Option<String>>> =
            std::sync::Mutex::new(BTreeMap::new());
        Owners(
            CACHE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn describe(&mut self, inum: u32, pid: &str) -> Option<String> {
        self.0
            .entry((inum, pid.to_owned()))
            .or_insert_with(|| describe_process(pid))
            .clone()
    }

    /// Forgets what the listing no longer holds.
    fn keep(&mut self, found: &BTreeMap<u32, NetnsHandle>) {
        self.0.retain(|(inum, _), owner| {
            found
                .get(inum)
                .is_some_and(|h| h.owner.is_some() && h.owner == *owner)
        });
    }
}

/// `COMM (pid N[, container ID][, pod UID])` for process `pid`, from its
/// comm and cgroup.
fn describe_process(pid: &str) -> Option<String> {
    let proc_dir = Path::new("/proc").join(pid);
    let comm = std::fs::read_to_string(proc_dir.join("comm")).ok()?;
    let cgroup = std::fs::read_to_string(proc_dir.join("cgroup")).unwrap_or_default();
    Some(describe_owner(comm.trim(), pid, &cgroup))
}

/// The owner text from a process's comm, pid and `/proc/PID/cgroup`: the
/// container id (12 digits, as `docker ps`, `podman ps` and `crictl ps`
/// show it) and the Kubernetes pod UID when the cgroup path holds them
/// (systemd and cgroupfs layouts of docker, podman, containerd and CRI-O).
pub fn describe_owner(comm: &str, pid: &str, cgroup: &str) -> String {
    let mut text = format!("{comm} (pid {pid}");
    // The v2 line ("0::PATH"), else the first line that names a container.
    let path = cgroup
        .lines()
        .find(|l| l.starts_with("0::"))
        .or_else(|| cgroup.lines().find(|l| container_of(l).is_some()))
        .and_then(|l| l.splitn(3, ':').nth(2))
        .unwrap_or("");
    if let Some(id) = container_of(path) {
        text.push_str(&format!(", container {}", &id[..12]));
    }
    if let Some(uid) = pod_of(path) {
        text.push_str(&format!(", pod {uid}"));
    }
    text.push(')');
    text
}

/// The last 64-hex-digit container id in a cgroup path, bare (cgroupfs:
/// `/docker/ID`, `/kubepods/…/pod…/ID`) or in a systemd scope
/// (`docker-ID.scope`, `libpod-ID.scope`, `cri-containerd-ID.scope`,
/// `crio-ID.scope`).
fn container_of(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = part.rsplit('-').next().unwrap_or(part);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    })
}

/// The pod UID in a Kubernetes cgroup path: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd).
fn pod_of(path: &str) -> Option<String> {
    path.split('/').find_map(|part| {
        let part = part.strip_suffix(".slice").unwrap_or(part);
        let uid = part.rsplit_once("pod").map(|(_, uid)| uid)?;
        let uid = uid.replace('_', "-");
        (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
    })
}

/// Reads every reachable namespace (see [`list_namespaces`]).
pub fn read_namespaces(source: StatsSource) -> Vec<NetnsReading> {
    read_these(&list_namespaces(), source)
}

/// Reads the namespace with inode `inum`, if it is reachable.
pub fn read_one(inum: u32, source: StatsSource) -> Option<NetnsReading> {
    let handle = list_namespaces().into_iter().find(|h| h.inum == inum)?;
    read_these(&[handle], source).into_iter().next()
}

/// Reads the given namespaces on one dedicated thread, in order.
///
/// Files under /proc/sys/net are opened once per sample at most, not once
/// per namespace: the kernel keeps one dentry per namespace for each name
/// there, all on one hash chain, so opening such a file costs time in
/// proportion to the number of namespaces (`proc_sys_compare`), and opening
/// it in each of N namespaces costs N². `nf_conntrack_max` is global and
/// read once; each namespace's count comes from its stat file (or
/// ctnetlink); the per-namespace TCP timeout is read in the fullest
/// namespace only, the one the advice is about.
pub fn read_these(handles: &[NetnsHandle], source: StatsSource) -> Vec<NetnsReading> {
    read_with(handles, source, OpenStats::default(), false).0
}

/// Each namespace's stat file, kept open between samples: a file under
/// /proc/net is bound to the namespace it was opened in, so reading it again
/// needs neither setns(2) nor a path walk. Opening, closing (its dentry is
/// not cached) and entering were 70 % of the reading's cost with 1,000
/// namespaces.
///
/// An open file holds a reference on its namespace (`seq_open_net`), so a
/// file is closed as soon as its namespace is no longer listed (the sample
/// after its last process exits or its name is deleted): ctscope keeps no
/// namespace alive for longer than one interval. At most [`MAX_OPEN`] files,
/// and never more than a quarter of the open-file limit.
#[derive(Debug, Default)]
pub struct OpenStats {
    files: HashMap<u32, File>,
}

/// Stat files kept open at most.
const MAX_OPEN: usize = 4096;

impl OpenStats {
    /// Reads every reachable namespace (see [`list_namespaces`]).
    pub fn read(self, source: StatsSource) -> (Vec<NetnsReading>, OpenStats) {
        read_with(&list_namespaces(), source, self, true)
    }

    /// Whether namespace `inum`'s stat file is held open.
    pub fn holds(&self, inum: u32) -> bool {
        self.files.contains_key(&inum)
    }

    /// How many files may be open: a quarter of the soft open-file limit.
    fn budget() -> usize {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 0;
        }
        usize::try_from(lim.rlim_cur / 4)
            .unwrap_or(MAX_OPEN)
            .min(MAX_OPEN)
    }

    /// The kept file's reading of namespace `inum`, if it has one that
    /// still reads; a file that fails is closed (the namespace is read the
    /// long way).
    fn reread(&mut self, inum: u32) -> Option<(u64, ConntrackStats)> {
        let file = self.files.get_mut(&inum)?;
        let read = (|| {
            let mut text = String::new();
            file.seek(SeekFrom::Start(0)).ok()?;
            file.read_to_string(&mut text).ok()?;
            parse_stat_text(&text).ok()
        })();
        if read.is_none() {
            self.files.remove(&inum);
        }
        read
    }
}

/// Reads the namespaces on one dedicated thread, in order, using `open`
/// and, with `fill`, adding the files of namespaces read the long way
/// (procfs only; ctnetlink is always read the long way).
fn read_with(
    handles: &[NetnsHandle],
    source: StatsSource,
    mut open: OpenStats,
    fill: bool,
) -> (Vec<NetnsReading>, OpenStats) {
    let work = handles.to_vec();
    let max = read_sysctl("nf_conntrack_max").ok().flatten();
    // The namespace ctscope runs in, read here: the worker moves from
    // namespace to namespace, so its own is not ctscope's after the first.
    let own = own_netns_inode().ok();
    // Close what is no longer listed first: it may be all that keeps a
    // departed namespace alive.
    let listed: HashSet<u32> = work.iter().map(|h| h.inum).collect();
    open.files.retain(|inum, _| listed.contains(inum));
    let keep = if fill && source != StatsSource::Ctnetlink {
        OpenStats::budget()
    } else {
        0
    };
    let worker = std::thread::Builder::new()
        .name("ctscope-netns".to_owned())
        .spawn(move || {
            let mut at = own;
            let mut readings: Vec<NetnsReading> = work
                .iter()
                .map(|h| {
                    let kept = |(count, stats)| NetnsReading {
                        count: Some(count),
                        stats: Some(stats),
                        source_used: Some(StatsSourceUsed::Procfs),
                        error: None,
                        ..failed(h, String::new(), own)
                    };
                    if let Some(read) = open.reread(h.inum) {
                        return kept(read);
                    }
                    // A namespace not held yet: enter it, open its file
                    // once, read it, and keep it for next time.
                    if open.files.len() < keep
                        && enter(h, &mut at).is_ok()
                        && let Ok(file) = File::open(THREAD_STAT_PATH)
                    {
                        open.files.insert(h.inum, file);
                        if let Some(read) = open.reread(h.inum) {
                            return kept(read);
                        }
                    }
                    read_in_worker(h, source, own, &mut at)
                })
                .collect();
            for r in &mut readings {
                r.max = r.max.or(max);
            }
            let fullest = readings
                .iter()
                .enumerate()
                .filter(|(_, r)| r.count.is_some())
                .max_by_key(|(_, r)| r.count)
                .map(|(i, _)| i);
            if let Some(i) = fullest {
                readings[i].tcp_timeout_established = enter(&work[i], &mut at)
                    .ok()
                    .and_then(|()| read_sysctl("nf_conntrack_tcp_timeout_established").ok())
                    .flatten();
            }
            (readings, open)
        });
    let failure = match worker.map(|w| w.join()) {
        Ok(Ok(done)) => return done,
        Ok(Err(_)) => "the namespace worker thread panicked".to_owned(),
        Err(e) => format!("cannot start the namespace worker thread: {e}"),
    };
    (
        handles
            .iter()
            .map(|h| failed(h, failure.clone(), own))
            .collect(),
        OpenStats::default(),
    )
}

fn failed(h: &NetnsHandle, error: String, own: Option<u32>) -> NetnsReading {
    NetnsReading {
        inum: h.inum,
        name: h.name.clone(),
        owner: h.owner.clone(),
        count: None,
        max: None,
        stats: None,
        source_used: None,
        error: Some(error),
        enter: Enter::of(h, own),
        tcp_timeout_established: None,
    }
}

/// Runs on the worker thread: enter the namespace, then read it. `at` is
/// the namespace the worker is in (`own` at first).
fn read_in_worker(
    h: &NetnsHandle,
    source: StatsSource,
    own: Option<u32>,
    at: &mut Option<u32>,
) -> NetnsReading {
    let base = failed(h, String::new(), own);
    match enter(h, at).and_then(|()| read_current(source)) {
        Ok((count, max, stats, used)) => NetnsReading {
            count,
            max,
            stats: Some(stats),
            source_used: Some(used),
            error: None,
            ..base
        },
        Err(e) => NetnsReading {
            error: Some(e.to_string()),
            ..base
        },
    }
}

/// Moves the calling thread into the namespace `h`, after checking that the path still
/// names that namespace (a pid may have been reused since it was listed). Does nothing
/// if the thread is already there (`at`), so an unprivileged caller can still read its
/// own namespace (setns needs CAP_SYS_ADMIN even into the current one).
fn enter(h: &NetnsHandle, at: &mut Option<u32>) -> Result<(), NetnsError> {
    if *at == Some(h.inum) {
        return Ok(());
    }
    let open_err = |source| NetnsError::Open {
        path: h.path.clone(),
        source,
    };
    let file = File::open(&h.path).map_err(open_err)?;
    let ino = file.metadata().map_err(open_err)?.ino();
    if ino != u64::from(h.inum) {
        return Err(NetnsError::Replaced {
            path: h.path.clone(),
            found: ino,
            expected: h.inum,
        });
    }
    // SAFETY: `file` is an open namespace fd; setns only reads it.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Setns {
            inum: h.inum,
            source: io::Error::last_os_error(),
        });
    }
    *at = Some(h.inum);
    Ok(())
}

type Current = (Option<u64>, Option<u64>, ConntrackStats, StatsSourceUsed);

/// Reads the calling thread's current namespace.
fn read_current(source: StatsSource) -> Result<Current, NetnsError> {
    match source {
        StatsSource::Procfs => Ok(via_procfs()?),
        StatsSource::Ctnetlink => Ok(via_ctnetlink()?),
        StatsSource::Auto => via_procfs().or_else(|procfs| {
            via_ctnetlink().map_err(|ctnetlink| NetnsError::Both { procfs, ctnetlink })
        }),
    }
}

/// The stat file's `entries` column is the namespace's `nf_conntrack_count`
/// (`ct_cpu_seq_show` prints it); `max` is filled in by the caller.
fn via_procfs() -> Result<Current, ProcfsError> {
    let (entries, stats) = read_stat_file(Path::new(THREAD_STAT_PATH))?;
    Ok((Some(entries), None, stats, StatsSourceUsed::Procfs))
}

fn via_ctnetlink() -> Result<Current, CtnetlinkError> {
    let r = CtnetlinkSocket::open()?.read()?;
    // Old kernels' ctnetlink lacks the count: only then the sysctl.
    let count = r
        .entries
        .or_else(|| read_sysctl("nf_conntrack_count").ok().flatten());
    Ok((count, r.max_entries, r.stats, StatsSourceUsed::Ctnetlink))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2b9a8d7e6f50413a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";

    #[test]
    fn owners_name_their_container_and_pod() {
        let cases = [
            // podman (systemd)
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container"),
                "nginx (pid 42, container 3f1c2b9a8d7e)",
            ),
            // containerd under Kubernetes (systemd)
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b6e4a52_1c3d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope"
                ),
                "nginx (pid 42, container 3f1c2b9a8d7e, pod 0b6e4a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b)",
            ),
            // Kubernetes with the cgroupfs driver, cgroup v1 lines
            (
                format!(
                    "12:pids:/kubepods/burstable/pod0b6e4a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b/{ID}\n1:name=systemd:/kubepods/burstable/pod0b6e4a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b/{ID}"
                ),
                "nginx (pid 42, container 3f1c2b9a8d7e, pod 0b6e4a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b)",
            ),
            // docker (cgroupfs)
            (
                format!("0::/docker/{ID}"),
                "nginx (pid 42, container 3f1c2b9a8d7e)",
            ),
            // a plain process in a session scope: no container
            (
                "0::/user.slice/user-0.slice/session-3.scope".to_owned(),
                "nginx (pid 42)",
            ),
            (String::new(), "nginx (pid 42)"),
        ];
        for (cgroup, want) in cases {
            assert_eq!(describe_owner("nginx", "42", &cgroup), want, "{cgroup}");
        }
    }

    /// A namespace found through a process is shown by its owner, entered
    /// by pid; a named one keeps its name.
    #[test]
    fn the_owner_is_shown_but_never_used_to_enter() {
        let h = NetnsHandle {
            inum: 7,
            path: PathBuf::from("/proc/42/ns/net"),
            name: None,
            owner: Some("nginx (pid 42)".to_owned()),
        };
        assert_eq!(h.display_name().as_deref(), Some("nginx (pid 42)"));
        assert_eq!(Enter::of(&h, Some(1)), Enter::Pid(42));
        let named = NetnsHandle {
            name: Some("blue".to_owned()),
            ..h
        };
        assert_eq!(named.display_name().as_deref(), Some("blue"));
    }

    /// Works as root or not: never panics, and the own namespace is always listed.
    #[test]
    fn lists_and_reads_own_namespace_without_panicking() {
        let own = own_netns_inode().expect("own netns inode");
        assert!(list_namespaces().iter().any(|h| h.inum == own));
        let readings = read_namespaces(StatsSource::Auto);
        let mine = readings.iter().find(|r| r.inum == own).expect("own listed");
        if Path::new("/proc/net/stat/nf_conntrack").exists() {
            assert_eq!(mine.error, None);
            assert_eq!(mine.source_used, Some(StatsSourceUsed::Procfs));
        }
        assert_eq!(read_one(0, StatsSource::Auto), None);
    }
}
