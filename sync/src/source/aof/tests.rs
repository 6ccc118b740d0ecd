//! The pre-scan and the replay over files written here (the real servers' files
//! are in tests/tests/sync_aof.rs).

use super::*;
use tokio::io::AsyncReadExt;

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

fn set(key: &str, value: &str) -> Vec<u8> {
    command(&["SET", key, value])
}

fn spec(path: &Path) -> AofSpec {
    AofSpec {
        path: path.to_path_buf(),
        until: None,
        truncated_tail_ok: false,
    }
}

/// A manifest directory: a base of commands and two incr files.
fn multi_part(dir: &Path, incr2: &[u8]) {
    std::fs::write(
        dir.join("appendonly.aof.manifest"),
        "file appendonly.aof.1.base.aof seq 1 type b\n\
         file appendonly.aof.1.incr.aof seq 1 type i\n\
         file appendonly.aof.2.incr.aof seq 2 type i\n",
    )
    .expect("manifest");
    let mut base = b"#TS:100\r\n".to_vec();
    base.extend(set("a", "base"));
    std::fs::write(dir.join("appendonly.aof.1.base.aof"), base).expect("base");
    let mut incr1 = b"#TS:110\r\n".to_vec();
    incr1.extend(command(&["SELECT", "0"]));
    incr1.extend(set("b", "110"));
    std::fs::write(dir.join("appendonly.aof.1.incr.aof"), incr1).expect("incr1");
    std::fs::write(dir.join("appendonly.aof.2.incr.aof"), incr2).expect("incr2");
}

fn incr2() -> Vec<u8> {
    let mut incr2 = b"#TS:120\r\n".to_vec();
    incr2.extend(set("c", "120"));
    incr2.extend(b"#TS:130\r\n");
    incr2.extend(set("d", "130"));
    incr2
}

/// Everything the command stream yields.
async fn replayed(source: AofSource) -> Vec<u8> {
    let (stream, _) = source.into_stream(0);
    let mut reader = stream.into_reader().into_parts().0;
    let mut all = Vec::new();
    reader.read_to_end(&mut all).await.expect("replays");
    all
}

#[tokio::test]
async fn a_multi_part_directory_replays_base_then_incr_files_without_annotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    multi_part(dir.path(), &incr2());
    let source = AofSource::open(&spec(dir.path())).await.expect("opens");
    assert!(source.preamble.is_none());
    // Each file starts in database 0, as Redis loads it.
    let select_0 = command(&["SELECT", "0"]);
    let mut expected = select_0.clone();
    expected.extend(set("a", "base"));
    expected.extend(&select_0);
    expected.extend(&select_0);
    expected.extend(set("b", "110"));
    expected.extend(&select_0);
    expected.extend(set("c", "120"));
    expected.extend(set("d", "130"));
    assert_eq!(replayed(source).await, expected);
}

#[tokio::test]
async fn until_cuts_before_the_first_later_stamp_and_reads_no_later_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    multi_part(dir.path(), &incr2());
    let at_115 = AofSpec {
        until: Some(115),
        ..spec(dir.path())
    };
    let source = AofSource::open(&at_115).await.expect("opens");
    assert_eq!(source.parts.len(), 3);
    let all = replayed(source).await;
    assert!(
        all.ends_with(&set("b", "110")),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    let at_125 = AofSpec {
        until: Some(125),
        ..spec(dir.path())
    };
    let all = replayed(AofSource::open(&at_125).await.expect("opens")).await;
    assert!(all.ends_with(&set("c", "120")));
    // A later incr file is never read after the cut, even if damaged.
    std::fs::write(dir.path().join("appendonly.aof.2.incr.aof"), b"garbage").expect("write");
    let at_105 = AofSpec {
        until: Some(105),
        ..spec(dir.path())
    };
    let source = AofSource::open(&at_105).await.expect("opens");
    // The cut is at the first incr file's start (its first stamp is 110).
    assert_eq!(source.parts.len(), 2);
    assert_eq!((source.parts[1].start, source.parts[1].end), (0, 0));
    let mut expected = command(&["SELECT", "0"]);
    expected.extend(set("a", "base"));
    assert_eq!(replayed(source).await, expected);
}

#[tokio::test]
async fn until_without_annotations_says_how_to_get_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("appendonly.aof");
    std::fs::write(&file, set("a", "1")).expect("write");
    let until = AofSpec {
        until: Some(1),
        ..spec(&file)
    };
    let err = AofSource::open(&until).await.expect_err("no stamps");
    assert!(
        err.to_string().contains("aof-timestamp-enabled yes"),
        "{err}"
    );
    AofSource::open(&spec(&file))
        .await
        .expect("without --until it replays");
}

#[tokio::test]
async fn a_truncated_tail_names_the_file_and_offset_and_is_cut_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cut = incr2();
    let complete = cut.len() - set("d", "130").len();
    cut.truncate(cut.len() - 3);
    multi_part(dir.path(), &cut);
    let err = AofSource::open(&spec(dir.path())).await.expect_err("cut");
    let text = err.to_string();
    assert!(text.contains("appendonly.aof.2.incr.aof"), "{text}");
    assert!(
        text.contains(&format!("at byte {complete} of {}", cut.len())),
        "{text}"
    );
    assert!(text.contains("--truncated-tail ok"), "{text}");
    let ok = AofSpec {
        truncated_tail_ok: true,
        ..spec(dir.path())
    };
    let all = replayed(AofSource::open(&ok).await.expect("opens")).await;
    assert!(all.ends_with(&set("c", "120")));
}

#[tokio::test]
async fn a_truncated_file_that_is_not_the_last_is_always_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    multi_part(dir.path(), &incr2());
    let incr1 = dir.path().join("appendonly.aof.1.incr.aof");
    let bytes = std::fs::read(&incr1).expect("read");
    std::fs::write(&incr1, &bytes[..bytes.len() - 2]).expect("write");
    let ok = AofSpec {
        truncated_tail_ok: true,
        ..spec(dir.path())
    };
    let err = AofSource::open(&ok).await.expect_err("not the last");
    assert!(
        err.to_string().contains("appendonly.aof.1.incr.aof"),
        "{err}"
    );
    assert!(err.to_string().contains("not the last file"), "{err}");
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_is_an_error_whatever_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("appendonly.aof");
    let mut bytes = set("a", "1");
    let at = bytes.len();
    bytes.extend(b"*2\r\n$3\r\nGET\r\n:1\r\n");
    bytes.extend(set("b", "2"));
    std::fs::write(&file, bytes).expect("write");
    let ok = AofSpec {
        truncated_tail_ok: true,
        ..spec(&file)
    };
    let err = AofSource::open(&ok).await.expect_err("corrupt");
    let text = err.to_string();
    assert!(
        text.contains(&format!("appendonly.aof is corrupt at byte {at}:")),
        "{text}"
    );
}

#[tokio::test]
async fn a_single_file_with_a_preamble_gives_it_as_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("appendonly.aof");
    let mut bytes = EMPTY_RDB.to_vec();
    bytes.extend(command(&["SELECT", "0"]));
    bytes.extend(set("a", "1"));
    std::fs::write(&file, &bytes).expect("write");
    let mut source = AofSource::open(&spec(&file)).await.expect("opens");
    let mut snapshot = source.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.bytes_total(), Some(EMPTY_RDB.len() as u64));
    let mut rdb = Vec::new();
    while let Some(piece) = source
        .next_snapshot_chunk(&mut snapshot)
        .await
        .expect("reads")
    {
        rdb.extend_from_slice(&piece);
    }
    assert_eq!(rdb, EMPTY_RDB);
    let mut expected = command(&["SELECT", "0"]);
    expected.extend(command(&["SELECT", "0"]));
    expected.extend(set("a", "1"));
    assert_eq!(replayed(source).await, expected);
}

#[tokio::test]
async fn a_damaged_preamble_is_an_error_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("appendonly.aof");
    let mut bytes = b"REDIS0009\xfe".to_vec();
    bytes.extend(set("a", "1"));
    std::fs::write(&file, &bytes).expect("write");
    let err = AofSource::open(&spec(&file))
        .await
        .expect_err("bad preamble");
    assert!(err.to_string().contains("RDB preamble"), "{err}");
}

#[tokio::test]
async fn a_file_changed_after_the_pre_scan_fails_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("appendonly.aof");
    let mut bytes = set("a", "1");
    bytes.extend(set("b", "2"));
    std::fs::write(&file, &bytes).expect("write");
    let source = AofSource::open(&spec(&file)).await.expect("opens");
    std::fs::write(&file, &bytes[..bytes.len() - 4]).expect("shorten");
    let (stream, _) = source.into_stream(0);
    let mut reader = stream.into_reader().into_parts().0;
    let mut all = Vec::new();
    let err = reader.read_to_end(&mut all).await.expect_err("changed");
    assert!(
        err.to_string().contains("since it was pre-scanned"),
        "{err}"
    );
}
