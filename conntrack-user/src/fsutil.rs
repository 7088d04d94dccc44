//! Creating the files ctscope writes (traces, `--ready-file`) without root
//! being turned against the machine.
//!
//! ctscope runs as root and is often pointed at shared directories (/tmp,
//! a CI workspace). Opening the path given with `O_CREAT|O_TRUNC` would
//! follow a symlink planted there by another user, or write through a hard
//! link to a file elsewhere, and an existing file would stay owned by
//! whoever created it. So every file is created new, under a temporary
//! name in the target's directory (`O_CREAT|O_EXCL|O_NOFOLLOW`: never
//! an existing file, never through a link), and then renamed over the
//! target. rename(2) replaces the directory entry itself: a symlink or a
//! hard link at the target is replaced, and what it pointed to is never
//! touched. The new file belongs to the writer (root).
//!
//! Targets that are not regular files (symlinks, directories, devices,
//! FIFOs, sockets) are refused with a message that says why: replacing
//! them is never what the user meant.

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// Distinguishes temporary names made by one process.
static NEXT_TEMP: AtomicU32 = AtomicU32::new(0);
/// Names tried before giving up when every one is taken (someone is
/// squatting on them).
const TEMP_ATTEMPTS: u32 = 64;

/// Why the target cannot be written, or `None` when it does not exist yet
/// or is a regular file (which will be replaced, not written into).
pub fn refusal(path: &Path) -> io::Result<Option<String>> {
    if let Some(why) = foreign_link_on_the_way(path) {
        return Ok(Some(why));
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let ft = meta.file_type();
    let what = if ft.is_file() {
        return Ok(None);
    } else if ft.is_symlink() {
        "a symbolic link (ctscope does not write through links)"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Ok(Some(format!(
        "{} is {what}; give the path of a regular file to create or replace",
        path.display()
    )))
}

/// A directory on the way to `path` that is a symbolic link owned by
/// someone else (not root, not us): a link planted in a shared directory
/// to send root's file elsewhere. Root's own links (/var/run -> /run) are
/// fine.
fn foreign_link_on_the_way(path: &Path) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    path.ancestors().skip(1).find_map(|dir| {
        if dir.as_os_str().is_empty() {
            return None;
        }
        let meta = fs::symlink_metadata(dir).ok()?;
        (meta.file_type().is_symlink() && meta.uid() != 0 && meta.uid() != me).then(|| {
            format!(
                "{} is a symbolic link owned by uid {}: ctscope does not create files \
                 through another user's links; use a path without it",
                dir.display(),
                meta.uid()
            )
        })
    })
}

/// The directory a file at `path` is created in.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Whether the calling process may create files in `dir` (access(2) with
/// the real ids, which are the effective ones here: ctscope is not setuid).
pub fn dir_writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// A file created under a temporary name beside its target; it becomes the
/// target with [`NewFile::publish`], and is removed if dropped before.
#[derive(Debug)]
pub struct NewFile {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    published: bool,
}

impl NewFile {
    /// Creates the temporary file (with `mode`, whatever the umask) after
    /// checking that `target` may be replaced.
    pub fn create(target: &Path, mode: u32) -> io::Result<Self> {
        if let Some(why) = refusal(target)? {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let dir = parent_dir(target);
        let mut last = None;
        for _ in 0..TEMP_ATTEMPTS {
            let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
            let temp = dir.join(format!(".ctscope-{}-{n}.tmp", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp)
            {
                Ok(file) => {
                    let me = Self {
                        file,
                        temp,
                        target: target.to_owned(),
                        published: false,
                    };
                    // The umask may have taken bits away; set exactly `mode`.
                    fchmod(&me.file, mode)?;
                    return Ok(me);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no temporary name was free")))
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Renames the file over the target. The target is checked again
    /// first, so a link put there in the meantime is refused too (and
    /// rename would only replace it, never follow it).
    pub fn publish(mut self) -> io::Result<File> {
        if let Some(why) = refusal(&self.target)? {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        fs::rename(&self.temp, &self.target)?;
        self.published = true;
        // The file is returned; `Drop` only removes unpublished names.
        let file = self.file.try_clone()?;
        Ok(file)
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn fchmod(file: &File, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::fchmod(file.as_raw_fd(), mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates (or replaces) `path` as a new, empty file owned by the caller
/// with `mode`, for writing as it goes (traces: the file is visible under
/// its name from the start, so a crash leaves it readable there).
pub fn create_replacing(path: &Path, mode: u32) -> io::Result<File> {
    NewFile::create(path, mode)?.publish()
}

/// Writes `data` to a new file and renames it over `path` once it is on
/// disk, so readers see either nothing or the whole content.
pub fn write_replacing(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut new = NewFile::create(path, mode)?;
    new.file().write_all(data)?;
    new.file().sync_all()?;
    new.publish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};

    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "ctscope-fsutil-{tag}-{}-{}",
                std::process::id(),
                NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).expect("temp dir");
            Self(dir)
        }

        fn names(&self) -> Vec<String> {
            let mut v: Vec<_> = fs::read_dir(&self.0)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn creates_a_new_file_with_the_mode_asked_and_leaves_no_temp() {
        let dir = Dir::new("new");
        let path = dir.0.join("ready");
        write_replacing(&path, b"42\n", 0o644).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"42\n");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(dir.names(), ["ready"]);
    }

    #[test]
    fn replaces_a_regular_file_with_a_new_inode_and_spares_its_hard_links() {
        let dir = Dir::new("hardlink");
        let victim = dir.0.join("victim");
        let path = dir.0.join("out");
        fs::write(&victim, b"precious").expect("victim");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o666)).expect("chmod");
        fs::hard_link(&victim, &path).expect("link");
        let before = fs::metadata(&path).expect("stat").ino();
        let mut f = create_replacing(&path, 0o600).expect("create");
        f.write_all(b"trace").expect("write");
        drop(f);
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(fs::read(&path).expect("out"), b"trace");
        let meta = fs::metadata(&path).expect("stat");
        assert_ne!(meta.ino(), before, "a new file, not the old one rewritten");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.nlink(), 1);
        assert_eq!(dir.names(), ["out", "victim"]);
    }

    #[test]
    fn refuses_links_directories_and_fifos_and_leaves_them_as_they_were() {
        let dir = Dir::new("refuse");
        let victim = dir.0.join("victim");
        fs::write(&victim, b"precious").expect("victim");
        let link = dir.0.join("link");
        symlink(&victim, &link).expect("symlink");
        let dangling = dir.0.join("dangling");
        symlink(dir.0.join("nothing-here"), &dangling).expect("symlink");
        let sub = dir.0.join("sub");
        fs::create_dir(&sub).expect("dir");
        let fifo = dir.0.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

        for (path, what) in [
            (&link, "symbolic link"),
            (&dangling, "symbolic link"),
            (&sub, "directory"),
            (&fifo, "FIFO"),
        ] {
            let e = write_replacing(path, b"1\n", 0o644).expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains(what), "{e}");
            let e = create_replacing(path, 0o600).expect_err("refused");
            assert!(e.to_string().contains(what), "{e}");
        }
        let e = write_replacing(Path::new("/dev/null"), b"1\n", 0o644).expect_err("device");
        assert!(e.to_string().contains("a device"), "{e}");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        assert!(!dir.0.join("nothing-here").exists());
        assert!(
            fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            dir.names(),
            ["dangling", "fifo", "link", "sub", "victim"],
            "no temporary file left behind"
        );
    }

    #[test]
    fn a_directory_link_owned_by_another_user_is_refused_and_roots_own_is_not() {
        // Only root can give a link to another user.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = Dir::new("foreign");
        let real = dir.0.join("real");
        fs::create_dir(&real).expect("dir");
        let planted = dir.0.join("planted");
        symlink(&real, &planted).expect("symlink");
        let c = CString::new(planted.as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid path; lchown changes the link itself.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
        let e = write_replacing(&planted.join("ready"), b"1\n", 0o644).expect_err("refused");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        assert!(fs::read_dir(&real).expect("list").next().is_none());

        let own = dir.0.join("own");
        symlink(&real, &own).expect("symlink");
        write_replacing(&own.join("ready"), b"1\n", 0o644).expect("root's own link");
        assert_eq!(fs::read(real.join("ready")).expect("read"), b"1\n");
    }

    #[test]
    fn an_unpublished_file_is_removed() {
        let dir = Dir::new("drop");
        let mut new = NewFile::create(&dir.0.join("x"), 0o600).expect("create");
        new.file().write_all(b"half").expect("write");
        assert_eq!(dir.names().len(), 1);
        drop(new);
        assert!(dir.names().is_empty());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_nothing_created() {
        let dir = Dir::new("missing");
        let e = write_replacing(&dir.0.join("no/such/file"), b"", 0o644).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(dir.names().is_empty());
    }
}
