//! Feeds arbitrary bytes to the trace reader: it must never panic, hang or
//! allocate without bound, whatever the file holds.
#![no_main]

use std::{io::Cursor, path::Path};

use ctscope::trace::TraceReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Box::new(Cursor::new(data.to_vec()));
    let Ok(mut reader) = TraceReader::from_reader(Path::new("fuzz"), input) else {
        return;
    };
    // Every item consumes input, so this bound is never reached by a
    // correct reader; hitting it means a loop.
    for _ in 0..1_000_000 {
        match reader.next_item() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!("the reader did not reach the end of {} bytes", data.len());
});
