//! The config file loader of `lockstep sync --config FILE` (`cli/src/config.rs`):
//! any text as the file, through the real loader and the real clap arguments.
//!
//! The `lockstep` crate is a binary only, so its `args.rs` and `config.rs` are
//! compiled into this crate as they are (`#[path]` modules, no copy and no change
//! to the binary); `args.rs` needs one name from `chaos`, stubbed below (the chaos
//! options are not the sync's and no config key reaches them).
//!
//! Asserts: no panic; and no error message shows a string value that holds an
//! `@` (a URL with a password, or a password itself) of 12 bytes or more that is
//! not also part of a key or of the file's path.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config;

/// Where each process writes the file it loads.
fn file_path() -> PathBuf {
    std::env::temp_dir().join(format!("lockstep-fuzz-config-{}.toml", std::process::id()))
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = file_path();
    if std::fs::write(&path, text).is_err() {
        return;
    }
    let argv: Vec<OsString> = vec![
        "lockstep".into(),
        "sync".into(),
        "--config".into(),
        path.clone().into_os_string(),
    ];
    let Err(err) = config::parse_from(argv) else {
        return;
    };
    let message = err.to_string();
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let path_text = path.display().to_string();
    for (key, value) in &table {
        for secret in strings(value) {
            let clear = secret.len() < 12
                || !secret.contains('@')
                || table.keys().any(|k| k.contains(secret))
                || path_text.contains(secret);
            assert!(
                clear || !message.contains(secret),
                "the value of `{key}` shows in the message: {message}"
            );
        }
    }
}

/// The strings of a value (an array's too).
fn strings(value: &toml::Value) -> Vec<&str> {
    match value {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}
