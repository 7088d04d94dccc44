//! The command line people script against: version, completions, man pages.

use std::process::Command;

use ctscope_integration::ctscope_bin;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(ctscope_bin())
        .args(args)
        .output()
        .expect("run ctscope");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn version_names_the_embedded_ebpf_object() {
    let (ok, text) = run(&["--version"]);
    assert!(ok);
    assert!(text.starts_with("ctscope "), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("eBPF object build id: "));
    assert!(
        id.is_some_and(|id| id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, text) = run(&["completions", shell]);
        assert!(ok, "{shell}");
        for sub in ["stats", "drops", "load", "serve", "top"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    assert!(
        !run(&["completions", "tcsh"]).0,
        "unknown shell is an error"
    );
}

#[test]
fn man_pages_render_for_the_tool_and_its_subcommands() {
    let (ok, page) = run(&["man"]);
    assert!(ok && page.contains(".TH ctscope 1"), "{page}");
    let (ok, page) = run(&["man", "drops"]);
    assert!(ok && page.contains(".TH ctscope-drops 1"), "{page}");
    assert!(page.contains("syn"), "options are documented");
    let (ok, page) = run(&["man", "top"]);
    assert!(ok && page.contains(".TH ctscope-top 1"), "{page}");
    assert!(
        page.contains("NO_COLOR"),
        "the keys and NO_COLOR are documented"
    );
    assert!(!run(&["man", "nope"]).0);
}
