//! `lockstep rdb inspect` on real files: every fixture prints valid JSON lines (or a
//! clear error for a corrupt one), and a dump written by a real server prints the keys
//! and values the server itself returns.

use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/rdb")
}

fn inspect(file: &Path, format: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["rdb", "inspect", "--format", format])
        .arg(file)
        .output()
        .expect("lockstep runs")
}

fn keys(output: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .filter(|v| v.get("key").is_some())
        .collect()
}

#[test]
fn every_fixture_prints_json_lines_or_a_clear_error() {
    let mut files = 0;
    for dir in ["rdbtools-dumps", "redis-tests-assets"] {
        for entry in std::fs::read_dir(fixtures().join(dir)).expect("fixtures are beside the clone")
        {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("rdb") {
                continue;
            }
            files += 1;
            let out = inspect(&path, "jsonl");
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.starts_with("corrupt_ziplist") {
                assert_eq!(out.status.code(), Some(2), "{name}");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("not a valid RDB file") && err.contains("offset"),
                    "{name}: {err}"
                );
                continue;
            }
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            keys(&out.stdout);
            let summary = inspect(&path, "summary");
            assert!(summary.status.success(), "{name}");
            assert!(
                String::from_utf8_lossy(&summary.stdout).contains("RDB version"),
                "{name}"
            );
        }
    }
    assert!(files > 30, "only {files} fixtures found");
}

#[test]
fn the_streams_fixture_prints_entries_groups_and_consumers() {
    let out = inspect(
        &fixtures().join("rdbtools-dumps/redis_50_with_streams.rdb"),
        "jsonl",
    );
    let all = keys(&out.stdout);
    let stream = all
        .iter()
        .find(|k| k["type"] == "stream")
        .expect("a stream key");
    assert_eq!(stream["value"]["entries"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        stream["value"]["entries"][0]["fields"][0],
        serde_json::json!(["message", "apple"])
    );
    assert!(stream["value"]["groups"][0]["consumers"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
}

#[tokio::test]
async fn a_dump_from_a_real_server_prints_what_the_server_holds() -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        let mut conn = server.client().await?;
        redis::pipe()
            .cmd("SET")
            .arg("s")
            .arg("text")
            .ignore()
            .cmd("SET")
            .arg("long")
            .arg(long_string())
            .ignore()
            .cmd("SET")
            .arg(b"bin\x00\xff")
            .arg(b"\xfe\x00")
            .ignore()
            .cmd("RPUSH")
            .arg("l")
            .arg("a")
            .arg("b")
            .arg("c")
            .ignore()
            .cmd("ZADD")
            .arg("z")
            .arg("1.5")
            .arg("m")
            .arg("-inf")
            .arg("n")
            .ignore()
            .cmd("HSET")
            .arg("h")
            .arg("f")
            .arg("v")
            .ignore()
            .cmd("SADD")
            .arg("set")
            .arg(1)
            .arg(2)
            .ignore()
            .cmd("PEXPIREAT")
            .arg("s")
            .arg(4_102_444_800_000u64)
            .ignore()
            .cmd("SAVE")
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        let out = inspect(&server.rdb_path(), "jsonl");
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = keys(&out.stdout);
        assert_eq!(all.len(), 7, "{version}");
        let by_key = |k: Value| {
            all.iter()
                .find(|v| v["key"] == k)
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(by_key("s".into())["value"], "text");
        assert_eq!(by_key("s".into())["expire_ms"], 4_102_444_800_000u64);
        assert_eq!(
            by_key(serde_json::json!({"base64": "YmluAP8="}))["value"],
            serde_json::json!({"base64": "/gA="}),
            "{version}"
        );
        assert_eq!(
            by_key("l".into())["value"],
            serde_json::json!(["a", "b", "c"])
        );
        let mut zset = by_key("z".into())["value"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        zset.sort_by_key(|v| v.to_string());
        assert_eq!(
            zset,
            vec![
                serde_json::json!(["m", 1.5]),
                serde_json::json!(["n", "-inf"])
            ]
        );
        assert_eq!(by_key("h".into())["value"], serde_json::json!([["f", "v"]]));
        // Longer than a parser batch: printed whole from its pieces.
        assert!(
            by_key("long".into())["value"] == long_string(),
            "{version}: the long string differs"
        );
    }
    Ok(())
}

/// A string of 2.5 MB: the parser gives it in pieces (LZF-compressed in the dump).
fn long_string() -> String {
    (0..700_000)
        .map(|i| format!("{:04}", i % 9973))
        .collect::<String>()[..2_500_000]
        .to_owned()
}
