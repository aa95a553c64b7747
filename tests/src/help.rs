//! Checks that a binary documents every setting in `--help`.

use std::process::Command;

/// Runs `binary --help` and asserts that every argument of `command` (except help
/// and version) is listed with its env var, its default when it has one, and a
/// description; that every argument has an env var at all, and that the flag is
/// the variable's name in lower case with dashes.
pub fn assert_every_setting_documented(binary: &str, command: &clap::Command) {
    assert_every_setting_documented_in(binary, &["--help"], command);
}

/// Like [`assert_every_setting_documented`] for the help printed by `binary args…`
/// (a subcommand's help, say).
pub fn assert_every_setting_documented_in(binary: &str, args: &[&str], command: &clap::Command) {
    let output = Command::new(binary).args(args).output().expect("run --help");
    assert!(output.status.success(), "--help failed: {output:?}");
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("setting {id} has no env var"))
            .to_string_lossy()
            .to_string();
        let long = arg.get_long().unwrap_or_else(|| panic!("setting {id} has no --flag"));
        // The flag is the variable in lower case with dashes; a subcommand's own
        // variables carry its name as a prefix (SETUP_VERIFY is `setup --verify`).
        let expected = env.to_lowercase().replace('_', "-");
        let is_subcommand = args.len() > 1;
        let subcommand_prefix = format!("{}-", command.get_name());
        let expected = match expected.strip_prefix(&subcommand_prefix) {
            Some(rest) if is_subcommand => rest,
            _ => &expected,
        };
        assert_eq!(long, expected, "the flag of {env} does not match it");
        assert!(
            help.contains(&format!("--{long}")),
            "--help does not list --{long}:\n{help}"
        );
        assert!(
            help.contains(&format!("[env: {env}")),
            "--help does not list {env}:\n{help}"
        );
        assert!(arg.get_help().is_some(), "setting {id} has no description");
        for default in arg.get_default_values() {
            let default = default.to_string_lossy();
            // clap quotes defaults that contain spaces.
            assert!(
                help.contains(&format!("[default: {default}]")) || help.contains(&format!("[default: \"{default}\"]")),
                "--help does not show the default {default} of {env}:\n{help}"
            );
        }
    }
}
