//! `ctscope completions` and `ctscope man`, generated from the clap
//! definitions so they never drift from `--help`.

use std::io::{self, Write as _};

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "ctscope", &mut io::stdout());
    Ok(())
}

/// The man page of `ctscope`, or of `ctscope-SUBCOMMAND`.
pub fn man(subcommand: Option<&str>) -> anyhow::Result<()> {
    let root = Cli::command();
    let page = match subcommand {
        None => root,
        Some(name) => {
            let sub = root
                .find_subcommand(name)
                .with_context(|| format!("no subcommand `{name}`; `ctscope --help` lists them"))?
                .clone();
            let full = format!("ctscope-{name}");
            sub.name(full.clone())
                .display_name(full)
                .version(crate::version::SHORT)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    io::stdout().write_all(&out)?;
    Ok(())
}
