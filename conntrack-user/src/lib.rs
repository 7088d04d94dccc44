//! ctscope: a live observer of the Linux conntrack table.
pub mod kernel;
