//! Per-CPU stacks of keyed frames: how the kprobe backend pairs a kernel
//! function's entry probe with its return probe, and a conntrack probe's
//! finding with the drop probe that follows it on the same CPU
//! (conntrack-ebpf/src/kprobe.rs).
//!
//! Why a stack per CPU, keyed by the task (docs/drop-causes.md, "With the
//! kprobe backend"):
//!
//! * Keying by `bpf_get_current_pid_tgid()` alone is wrong in softirq:
//!   a softirq runs in whatever task it interrupted, very often the idle
//!   task, which is pid 0 on *every* CPU, so two CPUs overwrite each
//!   other's state; and a softirq that runs inside a process-context call
//!   (at `__nf_conntrack_confirm`'s own `local_bh_enable`, or at the exit
//!   of an interrupt) has the same pid as the call it interrupts.
//! * The return probe cannot read the function's arguments (a kretprobe
//!   sees the return value; the argument registers are clobbered), and
//!   fexit, which could, cannot attach to module functions with aya 0.14.
//! * The stack pointer could tell frames apart, but what a return probe
//!   sees in it depends on the architecture and on the kernel's
//!   kretprobe/rethook trampoline.
//!
//! So each CPU keeps a small stack. Calls that nest on a CPU (process
//! context, then a softirq inside it) return in the reverse order of their
//! entries, and all of them run in the same `current` task, so the return
//! takes the topmost frame of its task. Kprobe programs never run nested in
//! one another on a CPU (`bpf_prog_active`, kernel/trace/bpf_trace.c), so
//! plain reads and writes of the CPU's value are enough. The task key is
//! what keeps the pairing right when a process-context call is preempted
//! and another task runs the same function on that CPU before it resumes:
//! each return finds its own task's frame, not merely the top one. A call
//! that migrates to another CPU between entry and return finds no frame
//! there (the return is ignored) and leaves one behind, which the oldest-
//! first eviction of a full stack clears.

/// Frames kept per CPU: process context, a softirq inside it, and room for
/// frames nothing takes any more (a call that migrated; a failed confirm
/// whose drop the drop probe missed because it was itself running on that
/// CPU, interrupted by the softirq), which must not push out a frame that
/// is still wanted.
pub const DEPTH: usize = 8;

/// One pending call or finding: `key` says whose it is (the task for
/// entry/return pairs, the packet or namespace for findings).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<T> {
    pub key: u64,
    pub value: T,
}

/// A stack of [`Frame`]s; all zeroes is the empty stack (a fresh per-CPU
/// map value).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Frames<T> {
    pub len: u64,
    pub frames: [Frame<T>; DEPTH],
}

impl<T: Copy> Frames<T> {
    /// Pushes a frame; when the stack is full the oldest frame goes (a
    /// frame that nothing will take any more: its call migrated, or its
    /// finding was never claimed).
    #[inline(always)]
    pub fn push(&mut self, key: u64, value: T) {
        let mut len = (self.len as usize).min(DEPTH);
        if len == DEPTH {
            for i in 0..DEPTH - 1 {
                self.frames[i] = self.frames[i + 1];
            }
            len = DEPTH - 1;
        }
        if let Some(f) = self.frames.get_mut(len) {
            *f = Frame { key, value };
        }
        self.len = (len + 1) as u64;
    }

    /// Takes the topmost frame with this key, if any. Every index below is
    /// a constant once the loops are unrolled, so the eBPF build has no
    /// bounds-check panic to refuse.
    #[inline(always)]
    pub fn take(&mut self, key: u64) -> Option<T> {
        let len = (self.len as usize).min(DEPTH);
        let mut found = DEPTH;
        for i in (0..DEPTH).rev() {
            if i < len && found == DEPTH && self.frames[i].key == key {
                found = i;
            }
        }
        if found == DEPTH {
            return None;
        }
        let value = self.frames.get(found).map(|f| f.value);
        for i in 0..DEPTH - 1 {
            if i >= found && i + 1 < len {
                self.frames[i] = self.frames[i + 1];
            }
        }
        self.len = (len - 1) as u64;
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Frames<u32> {
        Frames {
            len: 0,
            frames: [Frame { key: 0, value: 0 }; DEPTH],
        }
    }

    #[test]
    fn a_softirq_nested_in_a_call_of_the_same_task_returns_first() {
        let mut s = empty();
        s.push(7, 1); // process context, task 7
        s.push(7, 2); // a softirq at its local_bh_enable, same task
        assert_eq!(s.take(7), Some(2));
        assert_eq!(s.take(7), Some(1));
        assert_eq!(s.take(7), None);
        assert_eq!(s.len, 0);
    }

    #[test]
    fn a_preempted_call_finds_its_own_frame() {
        let mut s = empty();
        s.push(7, 1); // task 7 enters, is preempted
        s.push(9, 2); // task 9 enters on the same CPU, is preempted too
        assert_eq!(s.take(7), Some(1)); // task 7 resumes and returns
        assert_eq!(s.take(9), Some(2));
        assert_eq!(s.len, 0);
    }

    #[test]
    fn a_return_without_entry_takes_nothing() {
        let mut s = empty();
        s.push(7, 1);
        assert_eq!(s.take(8), None);
        assert_eq!(s.len, 1);
        assert_eq!(s.take(7), Some(1));
    }

    #[test]
    fn a_full_stack_forgets_the_oldest_frame() {
        let mut s = empty();
        for v in 0..DEPTH as u32 + 2 {
            s.push(u64::from(v), v);
        }
        assert_eq!(s.len, DEPTH as u64);
        assert_eq!(s.take(0), None);
        assert_eq!(s.take(1), None);
        for v in (2..DEPTH as u32 + 2).rev() {
            assert_eq!(s.take(u64::from(v)), Some(v));
        }
        assert_eq!(s.len, 0);
    }

    #[test]
    fn taking_from_the_middle_keeps_the_order_of_the_rest() {
        let mut s = empty();
        s.push(1, 10);
        s.push(2, 20);
        s.push(3, 30);
        assert_eq!(s.take(2), Some(20));
        assert_eq!(
            s.frames[..2],
            [Frame { key: 1, value: 10 }, Frame { key: 3, value: 30 }]
        );
        assert_eq!(s.take(3), Some(30));
        assert_eq!(s.take(1), Some(10));
    }
}
