//! Golden tests of `--help` for every subcommand: the expected text is stored in
//! `cli/tests/golden/help-<subcommand>.txt`. After an intended change, rewrite the
//! files with `UPDATE_GOLDEN=1 cargo test -p lockstep --test help` and review the
//! diff (`git diff cli/tests/golden`).

#[path = "../src/golden.rs"]
mod golden;

use std::process::Command;

/// Every subcommand path, and the golden file's name for it.
const SUBCOMMANDS: &[(&[&str], &str)] = &[
    (&[], "lockstep"),
    (&["sync"], "sync"),
    (&["check"], "check"),
    (&["verify"], "verify"),
    (&["status"], "status"),
    (&["rdb"], "rdb"),
    (&["rdb", "inspect"], "rdb-inspect"),
    (&["demo"], "demo"),
    (&["chaos"], "chaos"),
    (&["audit"], "audit"),
    (&["audit", "history"], "audit-history"),
];

#[test]
fn help_of_every_subcommand_matches_its_golden_file() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    for (path, name) in SUBCOMMANDS {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockstep"));
        command.args(*path).arg("--help");
        // Values of the environment would show in the help text.
        for (key, _) in std::env::vars() {
            if key.starts_with("LOCKSTEP_") {
                command.env_remove(key);
            }
        }
        let out = command.output().expect("lockstep runs");
        assert!(out.status.success(), "{path:?} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        golden::check(&format!("{dir}/help-{name}.txt"), &text);
    }
}

#[test]
fn every_subcommand_has_a_golden_help_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .arg("--help")
        .output()
        .expect("lockstep runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = text
        .split("Commands:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(!listed.is_empty(), "{text}");
    for name in listed {
        assert!(
            SUBCOMMANDS
                .iter()
                .any(|(path, _)| path.first() == Some(&name)),
            "the subcommand {name} has no golden --help test"
        );
    }
}
