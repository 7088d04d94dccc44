//! Feeds arbitrary bytes to the reader of a rotated recording: the input is
//! split at each `PART_BREAK` and written as FILE, FILE.1, FILE.2, ... in a
//! directory of this process's own. Following END records from part to part
//! must end whatever they name (their own file, an earlier part, a missing
//! or foreign one), and never panic.
#![no_main]

use std::{fs, path::PathBuf};

use ctscope::trace::Trace;
use libfuzzer_sys::fuzz_target;

/// Separates the parts in the input (the seeds use it).
const PART_BREAK: &[u8] = b"\n--ctscope-part--\n";
const MAX_PARTS: usize = 4;

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while parts.len() + 1 < MAX_PARTS {
        let Some(at) = data.windows(PART_BREAK.len()).position(|w| w == PART_BREAK) else {
            break;
        };
        parts.push(&data[..at]);
        data = &data[at + PART_BREAK.len()..];
    }
    parts.push(data);
    parts
}

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("ctscope-fuzz-parts-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");
    let first = dir.join("t.ctrace");
    for (n, part) in split(data).into_iter().enumerate() {
        let path = if n == 0 {
            first.clone()
        } else {
            dir.join(format!("t.ctrace.{n}"))
        };
        fs::write(path, part).expect("write part");
    }
    let Ok(mut trace) = Trace::open(&first) else {
        return;
    };
    // Every item consumes input or ends a part, and each part is read at
    // most once, so this bound is never reached by a correct reader.
    for _ in 0..1_000_000 {
        match trace.next_item() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!("reading {} bytes in parts did not end", data.len());
});
