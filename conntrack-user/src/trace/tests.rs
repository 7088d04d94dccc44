//! Unit tests of the trace format.
