//! The reader against mutated traces: a bounded, deterministic version of
//! the cargo-fuzz target (fuzz/), run with the unit tests.

use std::path::{Path, PathBuf};

use super::{
    Issue, Item, Record, TraceError, TraceReader, WriterOptions,
    format::FRAME_HEADER_LEN,
    tests::{TempDir, messages, record},
};

/// A small deterministic generator (xorshift64*), so the mutation test is
/// the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Applies one to three random mutations; returns the first offset touched.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) -> usize {
    let mut first = data.len();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(data.len());
        first = first.min(at);
        match rng.below(6) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data.truncate(at),
            2 => {
                let end = (at + 1 + rng.below(300)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let junk: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, junk);
            }
            4 => {
                let end = (at + 1 + rng.below(2000)).min(data.len());
                let copy = data[at..end].to_vec();
                let to = rng.below(data.len());
                first = first.min(to);
                data.splice(to..to, copy);
            }
            _ => {
                let end = (at + 1 + rng.below(40)).min(data.len());
                for b in &mut data[at..end] {
                    *b = rng.next() as u8;
                }
            }
        }
        if data.is_empty() {
            break;
        }
    }
    first
}

/// Reads `data` to the end, with a bound on the number of items so a
/// reader that loops forever fails the test instead of hanging it.
fn read_bytes(data: Vec<u8>) -> Result<(Vec<super::Frame>, Vec<Issue>), TraceError> {
    let mut r = TraceReader::from_reader(Path::new("mem"), Box::new(std::io::Cursor::new(data)))?;
    let mut frames = Vec::new();
    let mut issues = Vec::new();
    for _ in 0..100_000 {
        match r.next_item()? {
            Some(Item::Record(f)) => frames.push(f),
            Some(Item::Issue(i)) => issues.push(i),
            None => return Ok((frames, issues)),
        }
    }
    panic!("the reader did not finish");
}

#[test]
fn mutated_traces_never_panic_and_yield_only_what_was_written() {
    let dir = TempDir::new("mutate");
    for compress in [false, true] {
        let path = dir.path("t.ctrace");
        record(
            &path,
            &messages(3, 30),
            WriterOptions {
                compress,
                max_size: None,
            },
        );
        let good = std::fs::read(&path).expect("read");
        let (all, _) = read_bytes(good.clone()).expect("valid");
        let reader = TraceReader::open(&path).expect("open");
        let mut written: Vec<&Record> = all.iter().map(|f| &f.record).collect();
        // A copied range can repeat the header frame too.
        written.push(&reader.header_frame().record);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(compress));
        for round in 0..1500 {
            let mut data = good.clone();
            let first = mutate(&mut rng, &mut data);
            let (frames, issues) = match read_bytes(data) {
                Ok(r) => r,
                Err(e) => {
                    // Only the preamble and header make a file unreadable.
                    assert!(e.is_bad_input(), "round {round}: {e}");
                    assert!(first < 1024, "round {round}: {e} (first change at {first})");
                    continue;
                }
            };
            for f in &frames {
                assert!(
                    written.contains(&&f.record),
                    "round {round}: an unwritten record"
                );
            }
            if !compress {
                // Every frame that ends before the first change is read.
                let intact = all
                    .iter()
                    .take_while(|f| {
                        (f.offset + FRAME_HEADER_LEN as u64 + u64::from(f.len)) as usize <= first
                    })
                    .count();
                assert!(
                    frames.len() >= intact,
                    "round {round}: {} < {intact}",
                    frames.len()
                );
                assert_eq!(frames[..intact], all[..intact], "round {round}");
            }
            for i in &issues {
                assert!(!i.to_string().is_empty());
            }
        }
    }
}

/// Writes the fuzzer's seed corpus (fuzz/seeds) when
/// CTSCOPE_FUZZ_SEEDS names a directory; otherwise does nothing.
#[test]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("CTSCOPE_FUZZ_SEEDS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("seed dir");
    for compress in [false, true] {
        let name = if compress { "zstd.seed" } else { "plain.seed" };
        record(
            &dir.join(name),
            &messages(2, 3),
            WriterOptions {
                compress,
                max_size: None,
            },
        );
    }
}
