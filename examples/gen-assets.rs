//! Generates man pages (clap_mangen) and shell completions (clap_complete) for both
//! binaries from their clap definitions: `cargo run --example gen-assets -- OUT_DIR`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn man_pages(cmd: clap::Command, dir: &Path, prefix: &str) -> std::io::Result<()> {
    let name =
        if prefix.is_empty() { cmd.get_name().to_owned() } else { format!("{prefix}-{}", cmd.get_name()) };
    let mut out = Vec::new();
    // clap names are &'static str without its `string` feature; this tool runs once.
    let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
    clap_mangen::Man::new(cmd.clone().name(static_name)).render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.1")), out)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub.clone(), dir, &name)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/assets".into()));
    let (man, comp) = (out.join("man"), out.join("completions"));
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    man_pages(receptord::cli::receptor::command().name("receptor"), &man, "")?;
    man_pages(receptord::cli::receptord::Args::command().name("receptord"), &man, "")?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let commands = [
            ("receptor", receptord::cli::receptor::command()),
            ("receptord", receptord::cli::receptord::Args::command()),
        ];
        for (name, cmd) in commands {
            clap_complete::generate_to(shell, &mut cmd.name(name), name, &comp)?;
        }
    }
    println!("man pages in {}, completions in {}", man.display(), comp.display());
    Ok(())
}
