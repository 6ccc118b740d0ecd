//! `lockstep verify --script` and the audit pair key `script` (issue 17): a scripted
//! rename proven consistent (exit 0), a break found (exit 1), a command the model
//! does not know NOT VERIFIED (exit 3, never 0), and a missing file or a syntax error
//! refused before any connection (exit 2), naming the file and the line.

use std::path::Path;
use std::process::Command;

use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};

const RENAME: &str = "keys = {\"user:*\"}\nfunction transform(db, argv, at)\n  argv[2] = (argv[2]:gsub(\"^user:\", \"u:\"))\n  return {argv}\nend\n";

/// `lockstep <args>`: exit code and stdout + stderr.
fn lockstep(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .output()
        .expect("lockstep runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

#[tokio::test]
async fn verify_with_a_script_exits_as_an_audit_needs() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    source.client().await?.run::<()>("SET user:1 v").await?;
    source.client().await?.run::<()>("SET plain k").await?;
    target.client().await?.run::<()>("SET u:1 v").await?;
    target.client().await?.run::<()>("SET plain k").await?;
    let dir = tempfile::tempdir()?;
    let script = write(dir.path(), "rename.lua", RENAME)?;
    let (s, t) = (source.url(), target.url());
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--source", &s, "--target", &t];
        args.extend_from_slice(extra);
        lockstep(&args)
    };
    let (code, text) = verify(&["--script", &script]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("CONSISTENT") && text.contains("1 keys judged through the script"),
        "{text}"
    );
    let (code, text) = verify(&[]);
    assert_eq!(code, Some(1), "without the script the names differ: {text}");

    // A command the model does not know: NOT VERIFIED, exit 3.
    let lpushx = RENAME.replace("return {argv}", "return {{\"APPEND\", argv[2], argv[3]}}");
    let unknown = write(dir.path(), "append.lua", &lpushx)?;
    let (code, text) = verify(&["--script", &unknown]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("NOT VERIFIED") && text.contains("APPEND"),
        "{text}"
    );

    // A break: exit 1, named.
    target.client().await?.run::<()>("SET u:1 other").await?;
    let (code, text) = verify(&[
        "--script",
        &script,
        "--script-timeout",
        "500",
        "--script-memory",
        "8",
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("\"u:1\"") && text.contains("source key \"user:1\""),
        "{text}"
    );

    // Refused before any connection: a missing file, a syntax error with its line,
    // a rename rule beside a script.
    let (code, text) = verify(&["--script", "/nonexistent/x.lua"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("/nonexistent/x.lua") && text.contains("cannot read"),
        "{text}"
    );
    let broken = write(
        dir.path(),
        "broken.lua",
        "keys = {\"a*\"}\nfunction transform(\n  return\nend\n",
    )?;
    let (code, text) = verify(&["--script", &broken]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("broken.lua:3:") && text.contains("syntax error"),
        "{text}"
    );
    let (code, text) = verify(&["--script", &script, "--rename-prefix", "a:=b:"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("--script cannot be combined with --rename-prefix"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn an_audit_pair_takes_the_script_key() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    source.client().await?.run::<()>("RPUSH user:1 a b").await?;
    target.client().await?.run::<()>("RPUSH u:1 a b").await?;
    let dir = tempfile::tempdir()?;
    write(dir.path(), "rename.lua", RENAME)?;
    let config = |extra: &str| -> anyhow::Result<String> {
        write(
            dir.path(),
            "audits.toml",
            &format!(
                "history = \"history.db\"\n[[pair]]\nname = \"scripted\"\nsource = \"{}\"\ntarget = \"{}\"\ninterval_secs = 60\n{extra}\n",
                source.url(),
                target.url()
            ),
        )
    };
    let once = |path: &str| lockstep(&["audit", "--config", path, "--once"]);
    let path = config("script = \"rename.lua\"\nscript_timeout = 200\nscript_memory = 16")?;
    let (code, text) = once(&path);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit `scripted`: CONSISTENT"), "{text}");
    target.client().await?.run::<()>("RPUSH u:1 c").await?;
    let (code, text) = once(&path);
    assert_eq!(code, Some(1), "{text}");
    for (extra, named) in [
        ("script = \"missing.lua\"", "key `script`"),
        (
            "script = \"rename.lua\"\nscript_timeout = 0",
            "`script_timeout`",
        ),
        (
            "script = \"rename.lua\"\nrename_prefix = [\"a:=b:\"]",
            "--script cannot be combined",
        ),
    ] {
        let path = config(extra)?;
        let (code, text) = once(&path);
        assert_eq!(code, Some(2), "{extra}: {text}");
        assert!(
            text.contains(named) && text.contains("audits.toml"),
            "{extra}: {text}"
        );
    }
    Ok(())
}
