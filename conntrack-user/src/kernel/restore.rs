//! A record of every global sysctl ctscope changes, kept while the change
//! lasts, so that a run that cannot undo its change (SIGKILL, power cut of
//! the terminal, OOM) is repaired by the next ctscope command.
//!
//! `demo --squeeze N` and `load --squeeze N` lower `nf_conntrack_max`, which
//! holds every namespace of the machine. Before the write, [`Guard::lower`]
//! saves `{original, set, owner pid and start time}` to [`RECORD_PATH`]; the
//! guard puts the value back and removes the record when dropped. If the
//! owner died first, [`repair`] (run at the start of every command) finds a
//! record whose owner is gone and writes the original back — but only if the
//! sysctl still holds the value ctscope set: a value changed since is
//! somebody's decision and is left alone (the record is then dropped).
//!
//! The record lives under /run, a tmpfs emptied at boot, when the sysctls
//! return to their defaults too; its directory is root's and closed to
//! writes by others, and it is readable by all, so an unprivileged
//! `ctscope doctor` can tell what is left and what to run.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sysctl::{read_sysctl, write_sysctl};

/// Directory of the record.
pub const RECORD_DIR: &str = "/run/ctscope";
/// The record itself.
pub const RECORD_PATH: &str = "/run/ctscope/restore.json";

/// One global sysctl changed by a running ctscope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Name under /proc/sys/net/netfilter.
    pub sysctl: String,
    /// The value before ctscope changed it.
    pub original: u64,
    /// The value ctscope wrote.
    pub set: u64,
    /// The process that changed it, and its start time (clock ticks since
    /// boot, /proc/PID/stat field 22), so a reused pid is not mistaken for
    /// it.
    pub pid: u32,
    pub start_time: u64,
    /// The command that changed it, for messages.
    pub command: String,
}

impl GuardError {
    /// The machine's state or the user's rights are at fault (exit status 2).
    pub fn is_environment(&self) -> bool {
        match self {
            GuardError::Busy { .. } | GuardError::Unreadable { .. } => true,
            GuardError::Record { source, .. } | GuardError::Write { source, .. } => {
                source.kind() == io::ErrorKind::PermissionDenied
            }
        }
    }
}

impl Record {
    /// The command that restores the original value by hand.
    pub fn restore_command(&self) -> String {
        format!("sysctl -w net.netfilter.{}={}", self.sysctl, self.original)
    }
}

/// What to do with a record found at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Its owner is still running: its guard will restore the value.
    Leave,
    /// The owner is gone and the sysctl still holds what it set: put the
    /// original back.
    Restore,
    /// The owner is gone and the value was changed since (or the sysctl is
    /// gone): not ctscope's to undo; drop the record.
    Forget,
}

/// The decision, a pure function of what was found.
pub fn decide(record: &Record, owner_alive: bool, now: Option<u64>) -> Action {
    if owner_alive {
        Action::Leave
    } else if now == Some(record.set) {
        Action::Restore
    } else {
        Action::Forget
    }
}

/// What [`repair`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// No record (or none readable by this user).
    Clean,
    /// A running ctscope holds the change.
    Held(Record),
    /// A change left by a dead run was undone now.
    Restored(Record),
    /// A change left by a dead run could not be undone (not root, write
    /// failed): the value is still lowered.
    Stuck { record: Record, error: String },
    /// A dead run's record whose value had been changed since; dropped.
    Superseded { record: Record, now: Option<u64> },
}

impl Leftover {
    /// The line to print at start, if any.
    pub fn message(&self) -> Option<String> {
        match self {
            Leftover::Clean | Leftover::Held(_) => None,
            Leftover::Restored(r) => Some(format!(
                "ctscope: {} was left at {} by an earlier `{}` (pid {}) that did not \
                 end cleanly; restored it to {}",
                r.sysctl, r.set, r.command, r.pid, r.original
            )),
            Leftover::Stuck { record: r, error } => Some(format!(
                "ctscope: {} is still at {}, lowered by an earlier `{}` (pid {}) that \
                 did not end cleanly, and could not be restored ({error}); run `{}` as root",
                r.sysctl,
                r.set,
                r.command,
                r.pid,
                r.restore_command()
            )),
            Leftover::Superseded { .. } => None,
        }
    }
}

/// Start time of `pid` in clock ticks since boot, if it is running.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // Field 22 of the line is the 20th after the command name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn owner_alive(r: &Record) -> bool {
    start_time(r.pid) == Some(r.start_time)
}

/// Reads the record at `path`; `None` when there is none or it cannot be
/// read.
fn load(path: &Path) -> Option<Record> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Looks for a change left by a ctscope that did not end cleanly, and undoes
/// it when it is still in place. Runs at the start of every command.
pub fn repair() -> Leftover {
    repair_at(Path::new(RECORD_PATH))
}

fn repair_at(path: &Path) -> Leftover {
    let Some(record) = load(path) else {
        return Leftover::Clean;
    };
    let now = read_sysctl(&record.sysctl).ok().flatten();
    match decide(&record, owner_alive(&record), now) {
        Action::Leave => Leftover::Held(record),
        Action::Forget => {
            let _ = fs::remove_file(path);
            Leftover::Superseded { record, now }
        }
        Action::Restore => match write_sysctl(&record.sysctl, record.original) {
            Ok(()) => {
                let _ = fs::remove_file(path);
                Leftover::Restored(record)
            }
            Err(e) => Leftover::Stuck {
                record,
                error: e.to_string(),
            },
        },
    }
}

/// Why a global sysctl could not be changed safely.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "another ctscope (`{command}`, pid {pid}) has {sysctl} lowered to {set} and will \
         restore it to {original}; wait for it to end"
    )]
    Busy {
        command: String,
        pid: u32,
        sysctl: String,
        set: u64,
        original: u64,
    },
    #[error("{sysctl} is not readable; is nf_conntrack loaded?")]
    Unreadable { sysctl: String },
    #[error("keeping the restore record {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {sysctl}: {source}")]
    Write {
        sysctl: String,
        #[source]
        source: io::Error,
    },
}

/// A global sysctl changed for the length of a run: restored, and its record
/// removed, when dropped (normal end, signals turned into a normal end,
/// unwinding). SIGKILL leaves the record for [`repair`].
#[derive(Debug)]
pub struct Guard {
    record: Record,
    path: PathBuf,
}

impl Guard {
    /// Sets `sysctl` to `value`, after recording the value it had.
    pub fn lower(sysctl: &str, value: u64, command: &str) -> Result<Self, GuardError> {
        Self::lower_at(Path::new(RECORD_PATH), sysctl, value, command)
    }

    fn lower_at(path: &Path, sysctl: &str, value: u64, command: &str) -> Result<Self, GuardError> {
        // A dead run's leftover is undone first, so `original` is the real one.
        if let Leftover::Held(other) = repair_at(path) {
            return Err(GuardError::Busy {
                command: other.command,
                pid: other.pid,
                sysctl: other.sysctl,
                set: other.set,
                original: other.original,
            });
        }
        let original =
            read_sysctl(sysctl)
                .ok()
                .flatten()
                .ok_or_else(|| GuardError::Unreadable {
                    sysctl: sysctl.to_owned(),
                })?;
        let pid = std::process::id();
        let record = Record {
            sysctl: sysctl.to_owned(),
            original,
            set: value,
            pid,
            start_time: start_time(pid).unwrap_or(0),
            command: command.to_owned(),
        };
        save(path, &record).map_err(|source| GuardError::Record {
            path: path.to_owned(),
            source,
        })?;
        let guard = Self {
            record,
            path: path.to_owned(),
        };
        write_sysctl(sysctl, value).map_err(|source| GuardError::Write {
            sysctl: sysctl.to_owned(),
            source,
        })?;
        Ok(guard)
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Puts the original back and removes the record.
    pub fn restore(&self) -> io::Result<()> {
        write_sysctl(&self.record.sysctl, self.record.original)?;
        let _ = fs::remove_file(&self.path);
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let r = &self.record;
        match self.restore() {
            Ok(()) => eprintln!("{}: {} restored to {}", r.command, r.sysctl, r.original),
            Err(e) => eprintln!(
                "{}: could not restore {} to {}: {e}; run `{}` (the next ctscope run \
                 as root will also try)",
                r.command,
                r.sysctl,
                r.original,
                r.restore_command()
            ),
        }
    }
}

/// Writes the record through a new file renamed into place (`fsutil`), in a directory
/// that must be a real directory owned by root (or by us) and not writable
/// by others.
fn save(path: &Path, record: &Record) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a directory of uid {euid} closed to others",
            dir.display()
        )));
    }
    let text = serde_json::to_string(record).map_err(io::Error::other)?;
    crate::fsutil::write_replacing(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            sysctl: "nf_conntrack_max".into(),
            original: 262_144,
            set: 300,
            pid: 4242,
            start_time: 77,
            command: "ctscope demo".into(),
        }
    }

    #[test]
    fn a_live_owner_keeps_its_change() {
        assert_eq!(decide(&record(), true, Some(300)), Action::Leave);
    }

    #[test]
    fn a_dead_owners_value_still_in_place_is_restored() {
        assert_eq!(decide(&record(), false, Some(300)), Action::Restore);
    }

    #[test]
    fn a_value_changed_since_is_left_alone() {
        assert_eq!(decide(&record(), false, Some(1000)), Action::Forget);
        assert_eq!(decide(&record(), false, None), Action::Forget);
    }

    #[test]
    fn the_restore_command_names_the_original_value() {
        assert_eq!(
            record().restore_command(),
            "sysctl -w net.netfilter.nf_conntrack_max=262144"
        );
    }

    #[test]
    fn messages_say_what_happened_and_what_to_run() {
        let restored = Leftover::Restored(record()).message().unwrap_or_default();
        assert!(restored.contains("restored it to 262144"), "{restored}");
        let stuck = Leftover::Stuck {
            record: record(),
            error: "Permission denied".into(),
        }
        .message()
        .unwrap_or_default();
        assert!(
            stuck.contains("sysctl -w net.netfilter.nf_conntrack_max=262144"),
            "{stuck}"
        );
        assert_eq!(Leftover::Held(record()).message(), None);
    }

    #[test]
    fn records_round_trip_and_a_dead_pid_is_not_alive() {
        let dir = std::env::temp_dir().join(format!("ctscope-restore-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("restore.json");
        let saved = save(&path, &record());
        let loaded = load(&path);
        let _ = fs::remove_dir_all(&dir);
        assert!(saved.is_ok(), "{saved:?}");
        assert_eq!(loaded, Some(record()));
        // pid 4242 with start time 77 is not this boot's process.
        assert!(!owner_alive(&Record {
            pid: std::process::id(),
            start_time: u64::MAX,
            ..record()
        }));
        let me = Record {
            pid: std::process::id(),
            start_time: start_time(std::process::id()).unwrap_or(0),
            ..record()
        };
        assert!(owner_alive(&me));
    }
}
