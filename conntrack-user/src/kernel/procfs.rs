//! Parser for /proc/net/stat/nf_conntrack.
//!
//! The file is printed by `ct_cpu_seq_show` (net/netfilter/nf_conntrack_standalone.c):
//! a header row naming the columns, then one row per possible CPU with every value as
//! `%08x`. The first column, `entries`, is the namespace's entry count and is the same
//! on every row; the others are that CPU's counters. Column names and order changed
//! over the years (`searched` became `clashres`, later `delete_list` became
//! `chainlength`, and neither new name matches the counter's real name), so columns
//! are mapped by their header name and unknown ones are skipped.

use std::path::Path;

use super::stats::ConntrackStats;

/// Where the counters of the *calling thread's* namespace are. `/proc/net` is a link
/// to `/proc/self/net`, which follows the thread-group leader's namespace, not the
/// namespace a worker thread entered with setns(2).
pub const THREAD_STAT_PATH: &str = "/proc/thread-self/net/stat/nf_conntrack";

/// What went wrong reading or parsing the procfs statistics table.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    /// The file does not exist: the kernel lacks CONFIG_NF_CONNTRACK_PROCFS, or
    /// nf_conntrack is not loaded.
    #[error(
        "{path} does not exist (kernel built without CONFIG_NF_CONNTRACK_PROCFS, or \
         nf_conntrack not loaded); read the counters over ctnetlink instead"
    )]
    Missing { path: String },
    /// Any other I/O error.
    #[error("cannot read {path}: {source}; check that it is readable (run as root)")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No header row.
    #[error("conntrack stat table is empty: expected a header row naming the columns")]
    Empty,
    /// A header without an `entries` column: not the format this parser knows.
    #[error("conntrack stat header has no `entries` column: {header:?}; unknown format")]
    NoEntriesColumn { header: String },
    /// A header but no per-CPU rows.
    #[error("conntrack stat table has a header but no per-CPU rows")]
    NoRows,
    /// A row whose number of values differs from the header's number of names.
    #[error("conntrack stat row {row} has {got} values but the header names {expected}")]
    RowLength {
        row: usize,
        got: usize,
        expected: usize,
    },
    /// A value that is not hexadecimal.
    #[error("conntrack stat row {row}, column {column}: {value:?} is not a hex number")]
    BadValue {
        row: usize,
        column: String,
        value: String,
    },
}

/// Parses the text of /proc/net/stat/nf_conntrack.
///
/// Returns the namespace's entry count (from the first row) and the counters summed
/// over all CPU rows. Columns that are unknown or deprecated are ignored; counters
/// whose column is missing (older kernels) stay 0.
pub fn parse_stat_text(text: &str) -> Result<(u64, ConntrackStats), ProcfsError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header_line = lines.next().ok_or(ProcfsError::Empty)?;
    let header: Vec<&str> = header_line.split_whitespace().collect();
    let entries_col = header.iter().position(|h| *h == "entries").ok_or_else(|| {
        ProcfsError::NoEntriesColumn {
            header: header_line.to_owned(),
        }
    })?;

    let mut entries = None;
    let mut total = ConntrackStats::default();
    for (row, line) in lines.enumerate() {
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.len() != header.len() {
            return Err(ProcfsError::RowLength {
                row,
                got: values.len(),
                expected: header.len(),
            });
        }
        for (col, (name, raw)) in header.iter().zip(&values).enumerate() {
            let value = u64::from_str_radix(raw, 16).map_err(|_| ProcfsError::BadValue {
                row,
                column: (*name).to_owned(),
                value: (*raw).to_owned(),
            })?;
            if col == entries_col {
                entries.get_or_insert(value);
            } else if let Some(field) = total.field_mut(name) {
                *field = field.wrapping_add(value);
            }
        }
    }
    let entries = entries.ok_or(ProcfsError::NoRows)?;
    Ok((entries, total))
}

/// Reads and parses a stat file, e.g. [`THREAD_STAT_PATH`].
pub fn read_stat_file(path: &Path) -> Result<(u64, ConntrackStats), ProcfsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ProcfsError::Missing {
                path: shown.clone(),
            }
        } else {
            ProcfsError::Io {
                path: shown.clone(),
                source,
            }
        }
    })?;
    parse_stat_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a 2-CPU 6.18 machine (values edited to be distinct).
    const TWO_CPUS_6_18: &str = "\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000032  00000001 0000000a 00000000 00000003 00000000 00000000 00000002 00000000 00000004 00000005 00000006 00000007  00000008 00000009 0000000a 0000000b
00000032  00000010 000000ff 00000000 00000030 00000000 00000000 00000020 00000001 00000040 00000050 00000060 00000070  00000080 00000090 000000a0 000000b0
";

    #[test]
    fn two_cpus_are_summed_by_column_name() {
        let (entries, s) = parse_stat_text(TWO_CPUS_6_18).expect("parses");
        assert_eq!(entries, 0x32);
        let want = ConntrackStats {
            clash_resolve: 0x11,
            found: 0x109,
            invalid: 0x33,
            chaintoolong: 0x22,
            insert: 1,
            insert_failed: 0x44,
            drop: 0x55,
            early_drop: 0x66,
            icmp_error: 0x77,
            expect_new: 0x88,
            expect_create: 0x99,
            expect_delete: 0xaa,
            search_restart: 0xbb,
        };
        assert_eq!(s, want);
    }

    /// The older layout: `searched` and `delete_list` instead of `clashres` and
    /// `chainlength`, with nonzero deprecated columns that must not leak into others.
    #[test]
    fn older_kernel_layout() {
        let text = "\
entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000007  00000100 00000002 00000003 00000001 00000050 00000004 00000004 00000003 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000009
";
        let (entries, s) = parse_stat_text(text).expect("parses");
        assert_eq!(entries, 7);
        assert_eq!((s.found, s.invalid, s.insert), (2, 1, 3));
        assert_eq!((s.clash_resolve, s.chaintoolong), (0, 0));
        assert_eq!(s.search_restart, 9);
    }

    /// 2.6-era layout (no search_restart) in a different order, plus an invented
    /// future column: both tolerated.
    #[test]
    fn reordered_missing_and_unknown_columns() {
        let text = "entries drop searched found future_thing\n\
                    0000000f 00000002 00000001 ffffffff 00000abc\n\
                    0000000f 00000001 00000001 00000001 00000abc\n";
        let (entries, s) = parse_stat_text(text).expect("parses");
        assert_eq!(entries, 15);
        assert_eq!(s.drop, 3);
        assert_eq!(s.found, 0x1_0000_0000);
        assert_eq!(s.search_restart, 0);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(matches!(parse_stat_text(""), Err(ProcfsError::Empty)));
        assert!(matches!(
            parse_stat_text("found drop\n00000001 00000002\n"),
            Err(ProcfsError::NoEntriesColumn { .. })
        ));
        assert!(matches!(
            parse_stat_text("entries found\n"),
            Err(ProcfsError::NoRows)
        ));
        assert!(matches!(
            parse_stat_text("entries found\n00000001\n"),
            Err(ProcfsError::RowLength {
                row: 0,
                got: 1,
                expected: 2
            })
        ));
        let err = parse_stat_text("entries found\n00000001 0000zz01\n").expect_err("bad hex");
        assert!(err.to_string().contains("found"), "{err}");
        assert!(matches!(err, ProcfsError::BadValue { .. }));
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let err = read_stat_file(Path::new("/nonexistent/nf_conntrack")).expect_err("missing");
        assert!(matches!(err, ProcfsError::Missing { .. }));
        assert!(err.to_string().contains("ctnetlink"));
    }
}
