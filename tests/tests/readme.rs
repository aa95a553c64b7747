//! `docs/configuration.md` is exactly every binary's current `--help`.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;

/// The width `docs/configuration.sh` renders the help at (COLUMNS, no terminal).
const HELP_WIDTH: usize = 100;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// As the script writes it: trailing spaces of each line and trailing newlines gone.
fn normalized(help: &str) -> String {
    help.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

/// `(command line, long help)` of a command and each of its subcommands, depth first
/// in the order the help lists them, as `docs/configuration.sh` walks them.
fn helps(command: &mut clap::Command, into: &mut Vec<(String, String)>) {
    let line = command.get_bin_name().unwrap_or(command.get_name()).to_string();
    into.push((line, normalized(&command.render_long_help().to_string())));
    for sub in command.get_subcommands_mut() {
        if sub.get_name() != "help" {
            helps(sub, into);
        }
    }
}

fn every_help() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for command in [
        s3_connector::Config::command(),
        redshift_connector::Config::command(),
        cron_connector::Config::command(),
        player_state_worker::Config::command(),
        pipelinectl::Cli::command(),
    ] {
        let mut command = command.term_width(HELP_WIDTH);
        command.build();
        helps(&mut command, &mut all);
    }
    all
}

#[test]
fn configuration_doc_is_every_binarys_current_help() {
    let doc = read("docs/configuration.md");
    let helps = every_help();
    for (line, help) in &helps {
        assert!(
            doc.contains(&format!("`{line}`\n")) && doc.contains(&format!("```text\n{help}\n```\n")),
            "docs/configuration.md does not hold the current `{line} --help`: run docs/configuration.sh"
        );
    }
    let blocks = doc.matches("```text\n").count();
    assert_eq!(
        blocks,
        helps.len(),
        "docs/configuration.md has {blocks} help blocks for {} commands: run docs/configuration.sh",
        helps.len()
    );
}

#[test]
fn configuration_doc_names_every_env_var() {
    let doc = read("docs/configuration.md");
    let mut missing = BTreeSet::new();
    let mut commands = vec![
        s3_connector::Config::command(),
        redshift_connector::Config::command(),
        cron_connector::Config::command(),
        player_state_worker::Config::command(),
        pipelinectl::Cli::command(),
    ];
    while let Some(command) = commands.pop() {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                if !doc.contains(&format!("[env: {env}=")) {
                    missing.insert(env.to_string());
                }
            }
        }
        commands.extend(command.get_subcommands().cloned());
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document {missing:?}"
    );
}
