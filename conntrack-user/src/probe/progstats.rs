//! Per-program statistics aya does not expose: `recursion_misses`, the
//! invocations the kernel skipped because the same program was already
//! running on that CPU (kernel/trace/bpf_trace.c, `__bpf_trace_run`).

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::programs::ProgramFd;

/// BPF_OBJ_GET_INFO_BY_FD (include/uapi/linux/bpf.h).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Offset of `recursion_misses` in the uapi `struct bpf_prog_info` (a stable
/// ABI, appended to in later kernels, not a kernel-internal layout).
const RECURSION_MISSES_OFFSET: usize = 208;
const INFO_LEN: usize = 256;

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

pub fn recursion_misses(fd: &ProgramFd) -> std::io::Result<u64> {
    let mut info = [0u8; INFO_LEN];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        info_len: INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points to a valid bpf_attr prefix for this command and
    // `info` outlives the call; the kernel writes at most info_len bytes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if (attr.info_len as usize) < RECURSION_MISSES_OFFSET + 8 {
        return Ok(0);
    }
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&info[RECURSION_MISSES_OFFSET..RECURSION_MISSES_OFFSET + 8]);
    Ok(u64::from_ne_bytes(bytes))
}
