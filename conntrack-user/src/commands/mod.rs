//! One module per subcommand; each wires a source, the model and a view.
pub mod buckets;
pub mod demo;
pub mod docs;
pub mod doctor;
pub mod drops;
pub mod export;
pub mod holders;
pub mod info;
pub mod live_record;
pub mod load;
pub mod record;
pub mod replay;
pub mod serve;
pub mod signals;
pub mod stats;
pub mod top;
pub mod tui;

use std::{io, path::Path};

use crate::fsutil;

/// Checks the `--ready-file` path before anything is attached, so a path
/// that cannot work is a bad argument (exit status 2) and costs nothing.
/// The file is written later by [`write_ready_file`].
pub fn check_ready_file(path: Option<&Path>) -> Result<(), BadInput> {
    let Some(path) = path else { return Ok(()) };
    check_output("--ready-file", path)
}

/// `flag`'s file can be created: its directory exists, is writable and is
/// not a link planted by another user, and the path itself is absent or a
/// regular file (replaced, never written into: `fsutil`).
pub fn check_output(flag: &str, path: &Path) -> Result<(), BadInput> {
    let bad = |why: String| BadInput(format!("{flag} {}: {why}", path.display()));
    if path == Path::new("-") {
        // `-` usually means stdout; ctscope only writes files here (a trace
        // is finished in place and rotated), so it must not become a file
        // named `-`.
        return Err(BadInput(format!(
            "{flag} -: ctscope writes this to a file, not to standard output; give a path \
             (`ctscope export FILE --format jsonl` streams a finished trace)"
        )));
    }
    match fsutil::refusal(path) {
        Ok(None) => {}
        Ok(Some(why)) => return Err(BadInput(format!("{flag}: {why}"))),
        Err(e) => return Err(bad(e.to_string())),
    }
    let dir = fsutil::parent_dir(path);
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(bad(format!("{} is not a directory", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(bad(format!(
                "the directory {} does not exist; create it first",
                dir.display()
            )));
        }
        Err(e) => return Err(bad(format!("{}: {e}", dir.display()))),
    }
    if !fsutil::dir_writable(dir) {
        return Err(bad(format!(
            "the directory {} is not writable",
            dir.display()
        )));
    }
    Ok(())
}

/// Creates the `--ready-file` once the probes are attached (its content is
/// ctscope's pid), so scripts can start traffic without sleeping. The file
/// appears whole, with mode 0644, as a new file owned by ctscope's user.
pub fn write_ready_file(path: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let pid = format!("{}\n", std::process::id());
        fsutil::write_replacing(path, pid.as_bytes(), 0o644)
            .map_err(|e| BadInput(format!("writing the ready file {}: {e}", path.display())))?;
    }
    Ok(())
}

/// An argument combination or input that cannot work (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Standard output was closed by its reader (`ctscope ... | head -1`): the
/// command stops quietly, with exit status 0.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// For the result of a write to stdout: a reader that went away becomes
/// [`StdoutClosed`], other errors say they were writing stdout.
/// A line on stderr after a full-screen view. Not `eprintln!`: stderr is
/// often the terminal that just went away, and a failed write must not panic.
pub fn say_after_screen(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(io::stderr().lock(), "{line}");
}

pub fn stdout_err(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}
