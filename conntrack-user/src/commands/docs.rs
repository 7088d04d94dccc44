//! `ctscope completions` and `ctscope man`, generated from the clap
//! definitions so they never drift from `--help`.

use std::io::{self, Write as _};

use clap::CommandFactory as _;

use super::{BadInput, stdout_err};
use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics when its writer fails (a
    // closed pipe, `| head -1`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ctscope", &mut script);
    write_stdout(&script)
}

/// All of `data` to stdout; a reader that went away ends the command
/// quietly.
fn write_stdout(data: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(data)
        .and_then(|()| out.flush())
        .map_err(stdout_err)
}

/// The man page of `ctscope`, or of `ctscope-SUBCOMMAND`.
pub fn man(subcommand: Option<&str>) -> anyhow::Result<()> {
    let root = Cli::command();
    let page = match subcommand {
        None => root,
        Some(name) => {
            let sub = root
                .find_subcommand(name)
                .ok_or_else(|| {
                    BadInput(format!(
                        "no subcommand `{name}`; `ctscope --help` lists them"
                    ))
                })?
                .clone();
            let full = format!("ctscope-{name}");
            sub.name(full.clone())
                .display_name(full)
                .version(crate::version::SHORT)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    write_stdout(&out)
}
