//! The README and `docs/` stay true to the code: `docs/configuration.md` is exactly
//! every binary's current `--help`; the README opens with the two commands (the test
//! command is what `.ci/run` runs), stays short and links every doc from its first
//! screen; and every relative link in the docs reaches a file and a heading that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// The width `docs/configuration.sh` renders the help at (COLUMNS, no terminal).
const HELP_WIDTH: usize = 100;
/// The README's limit, so that it stays an entry point rather than the manual.
const README_MAX_LINES: usize = 250;
/// What a reader sees before scrolling: every doc is linked within it.
const FIRST_SCREEN_LINES: usize = 50;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// clap shows a variable's value when it is set (`[env: BUCKET=lake]`); the script runs
/// the binaries in an empty environment, and this test may run in any.
fn without_env_value(line: &str) -> String {
    let trimmed = line.trim_start();
    match trimmed.strip_prefix("[env: ").and_then(|rest| rest.split_once('=')) {
        Some((name, _)) => format!("{}[env: {name}=]", &line[..line.len() - trimmed.len()]),
        None => line.to_string(),
    }
}

/// As the script writes it: no env values, trailing spaces of each line and trailing
/// newlines gone.
fn normalized(help: &str) -> String {
    help.lines()
        .map(without_env_value)
        .map(|line| line.trim_end().to_string())
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

#[test]
fn readme_opens_with_the_two_commands_ci_runs_the_test_one() {
    let readme = read("README.md");
    let first_block: Vec<&str> = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a sh block")
        .lines()
        .collect();
    let command = |line: &str| line.split('#').next().unwrap_or_default().trim().to_string();
    assert_eq!(
        first_block.iter().map(|line| command(line)).collect::<Vec<_>>(),
        ["deploy/local/demo", "deploy/local/test"],
        "the README's first commands are the demo and the test command"
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == "exec deploy/local/test"),
        ".ci/run runs exactly the README's test command:\n{ci}"
    );
}

#[test]
fn readme_is_short_and_links_every_doc_on_its_first_screen() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}"
    );
    let first_screen: String = readme.lines().take(FIRST_SCREEN_LINES).collect::<Vec<_>>().join("\n");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "docs/ holds the documentation");
    for doc in docs {
        let name = doc.file_name().expect("a file name").to_string_lossy().to_string();
        assert!(
            first_screen.contains(&format!("(docs/{name})")),
            "README.md's first {FIRST_SCREEN_LINES} lines do not link docs/{name}"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The lines of a Markdown file outside code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut in_code = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links in the prose.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find(')') else { break };
            targets.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    targets
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut files = vec![
        PathBuf::from("README.md"),
        PathBuf::from("infra/README.md"),
        PathBuf::from("fuzz/README.md"),
        PathBuf::from("sample-data/README.md"),
    ];
    for entry in std::fs::read_dir(repo().join("docs")).expect("docs/") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(Path::new("docs").join(path.file_name().expect("a file name")));
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = read(&file.to_string_lossy());
        let dir = file.parent().unwrap_or(Path::new(""));
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() { file.clone() } else { dir.join(path) };
            let on_disk = repo().join(&linked);
            if !on_disk.exists() {
                broken.push(format!("{}: {target} (no {})", file.display(), linked.display()));
                continue;
            }
            if !fragment.is_empty() && on_disk.extension().is_some_and(|e| e == "md") {
                let headings = anchors(&read(&linked.to_string_lossy()));
                if !headings.contains(fragment) {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(checked > 0, "the docs link to each other");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
