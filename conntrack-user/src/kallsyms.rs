//! Function addresses from /proc/kallsyms.
//!
//! Only text symbols are needed (data symbols are missing on kernels without
//! CONFIG_KALLSYMS_ALL): `ecache_work` identifies `struct nf_conntrack_net`,
//! and the text ranges of `nf_hook_slow` and `nft_do_chain` tell who freed a
//! dropped packet.

use std::{fs, io, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "/proc/kallsyms shows zero addresses; run ctscope as root (or with CAP_SYSLOG), \
         or lower kernel.kptr_restrict"
    )]
    Hidden,
}

/// Sorted text symbols.
pub struct Kallsyms {
    /// (address, name), sorted by address.
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self, KallsymsError> {
        Self::from_path(Path::new("/proc/kallsyms"))
    }

    pub fn from_path(path: &Path) -> Result<Self, KallsymsError> {
        let text = fs::read_to_string(path).map_err(|source| KallsymsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses kallsyms text: `address type name [module]` per line.
    pub fn parse(text: &str) -> Result<Self, KallsymsError> {
        let mut symbols = Vec::new();
        let mut nonzero = false;
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            nonzero |= addr != 0;
            if matches!(kind, "t" | "T" | "w" | "W") {
                symbols.push((addr, name.to_owned()));
            }
        }
        if !nonzero {
            return Err(KallsymsError::Hidden);
        }
        symbols.sort_unstable();
        Ok(Self { symbols })
    }

    /// Address of a text symbol.
    pub fn addr(&self, name: &str) -> Option<u64> {
        self.symbols
            .iter()
            .find(|(_, n)| n == name)
            .map(|(addr, _)| *addr)
    }

    /// `name+0xoffset` of a code address: the function it is in (the
    /// nearest symbol at or below it), as the kernel prints call traces.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        let (start, name) = self.symbols.get(i.checked_sub(1)?)?;
        Some(format!("{name}+{:#x}", addr - start))
    }

    /// `[start, end)` of a function: up to the next symbol at a higher address.
    pub fn range(&self, name: &str) -> Option<(u64, u64)> {
        let start = self.addr(name)?;
        let end = self
            .symbols
            .iter()
            .map(|(addr, _)| *addr)
            .find(|addr| *addr > start)
            .unwrap_or(start + 1);
        Some((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81f36ae0 t __nf_conntrack_alloc
ffffffff81f37eb0 T nf_conntrack_in
ffffffff81f41f80 t ecache_work
ffffffff81f41f00 t nf_hook_slow
ffffffff82400000 D __start_rodata
ffffffffc0001000 t nft_do_chain\t[nf_tables]
ffffffffc0001400 t nft_other\t[nf_tables]
";

    #[test]
    fn finds_text_symbols_and_ranges() {
        let k = Kallsyms::parse(SAMPLE).expect("parse");
        assert_eq!(k.addr("ecache_work"), Some(0xffffffff81f41f80));
        assert_eq!(
            k.addr("__start_rodata"),
            None,
            "data symbols are not functions"
        );
        assert_eq!(
            k.range("nf_hook_slow"),
            Some((0xffffffff81f41f00, 0xffffffff81f41f80))
        );
        assert_eq!(
            k.range("nft_do_chain"),
            Some((0xffffffffc0001000, 0xffffffffc0001400)),
            "module symbols count"
        );
        assert_eq!(k.range("missing"), None);
        assert_eq!(
            k.symbolize(0xffffffff81f41f8a).as_deref(),
            Some("ecache_work+0xa")
        );
        assert_eq!(
            k.symbolize(0xffffffff81f41f00).as_deref(),
            Some("nf_hook_slow+0x0")
        );
        assert_eq!(k.symbolize(0x1000), None, "below every symbol");
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let hidden = "0000000000000000 T nf_conntrack_in\n0000000000000000 t ecache_work\n";
        let err = Kallsyms::parse(hidden).err().expect("hidden");
        assert!(err.to_string().contains("root"), "{err}");
    }
}
