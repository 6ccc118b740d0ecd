//! No password in any message, for any input: seeded random URLs with random
//! passwords (any printable byte, `/ # @ ? : %` at any position, typos in the scheme
//! and the host part) go through the error paths of every subcommand that takes a
//! Redis URL (`sync`, `check`, `verify`), as the source and as the target, and through
//! the config file of `sync`; the password never appears on stdout or stderr.
//!
//! The servers named are real but unreachable (a port nobody listens on) or the URL
//! does not parse, so every run ends in an error message quickly. Found from outside
//! before this test: `redis://:pa/ss@host:1` said "empty host" while quoting the URL,
//! and `redis//:S3CRET@host:1` printed the password.

use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A port with nothing listening on it (bound once, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A password with the marker in it and URL syntax around it; the marker is what
/// must never show (a password of one character could appear by chance elsewhere).
fn password(rng: &mut ChaCha8Rng) -> String {
    const CHARS: &[u8] = b"abcXYZ019/#@?:%!.~-_+=&$";
    let side = |rng: &mut ChaCha8Rng| -> String {
        let n = rng.random_range(0..6);
        (0..n)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    };
    format!("{}PWMARK{}", side(rng), side(rng))
}

/// A URL carrying `password`, well formed or with a typical typo.
fn url(rng: &mut ChaCha8Rng, password: &str, port: u16) -> String {
    let scheme = [
        "redis://",
        "redis://",
        "rediss://",
        "redis//",
        "redis:/",
        "http://",
        "",
    ];
    let user = ["", "", "alice"];
    let rest = [
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{port}/3"),
        format!("127.0.0.1:{port}/x"),
        "127.0.0.1:notaport".to_owned(),
        format!("127.0.0.1:{port}?db=1"),
        String::new(),
        format!("[::1]:{port}"),
    ];
    let pick = |rng: &mut ChaCha8Rng, n: usize| rng.random_range(0..n);
    format!(
        "{}{}:{password}@{}",
        scheme[pick(rng, scheme.len())],
        user[pick(rng, user.len())],
        rest[pick(rng, rest.len())]
    )
}

/// Runs `lockstep <args>` and returns stdout + stderr.
fn run(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .env_remove("LOCKSTEP_SOURCE_PASSWORD")
        .env_remove("LOCKSTEP_TARGET_PASSWORD")
        .env("RUST_LOG", "debug")
        .output()
        .expect("lockstep runs");
    assert!(!out.status.success(), "{args:?} succeeded");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn random_urls_never_show_their_password_in_any_subcommand() {
    let seed = 0x5eed_0014;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let good = format!("redis://127.0.0.1:{port}");
    for case in 0..10 {
        let secret = password(&mut rng);
        let bad = url(&mut rng, &secret, port);
        let checkpoints = dir.path().join(format!("ck{case}"));
        let checkpoints = checkpoints.to_string_lossy().into_owned();
        for (source, target) in [(&bad, &good), (&good, &bad)] {
            let sides = |command: &str| -> Vec<String> {
                [command, "--source", source, "--target", target]
                    .map(str::to_owned)
                    .to_vec()
            };
            let sync = [
                sides("sync"),
                vec!["--checkpoint-dir".into(), checkpoints.clone()],
            ];
            for args in [sides("check"), sides("verify"), sync.concat()] {
                let text = run(&args);
                assert!(
                    !text.contains("PWMARK"),
                    "seed {seed} case {case}: {args:?} showed the password:\n{text}"
                );
            }
        }
        // The same URL from a config file.
        let config = dir.path().join(format!("c{case}.toml"));
        let body =
            format!("source = {bad:?}\ntarget = [{good:?}]\ncheckpoint_dir = {checkpoints:?}\n");
        std::fs::write(&config, body).expect("config");
        let text = run(&[
            "sync".into(),
            "--config".into(),
            config.to_string_lossy().into(),
        ]);
        assert!(
            !text.contains("PWMARK"),
            "seed {seed} case {case}: the config's URL showed its password:\n{text}"
        );
    }
}

#[test]
fn verify_and_sync_say_the_same_about_an_unreachable_side() {
    let port = closed_port();
    let url = format!("redis://:pa/ss@127.0.0.1:{port}");
    let verify = run(&[
        "verify".into(),
        "--source".into(),
        url.clone(),
        "--target".into(),
        url.clone(),
    ]);
    let expected = format!(
        "cannot connect to redis://:***@127.0.0.1:{port}: Connection refused (os error 111)"
    );
    assert!(verify.contains(&expected), "{verify}");
    assert_eq!(
        verify.matches("Connection refused").count(),
        1,
        "said once: {verify}"
    );
    assert!(!verify.contains("InvalidClientConfig"), "{verify}");
    let dir = tempfile::tempdir().expect("tempdir");
    let sync = run(&[
        "sync".into(),
        "--source".into(),
        url.clone(),
        "--target".into(),
        url,
        "--checkpoint-dir".into(),
        dir.path().to_string_lossy().into(),
    ]);
    assert!(sync.contains(&expected), "{sync}");
}
