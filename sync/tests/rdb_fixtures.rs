//! Every RDB fixture in fixtures/rdb parses, or fails cleanly, and
//! known contents come out as documented by the fixtures' origins.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use lockstep_sync::rdb::{
    parse_all, Event, Item, Key, ModulePolicy, ParseOptions, RdbError, RdbParser, Value,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/rdb");

fn all_fixtures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["rdbtools-dumps", "redis-tests-assets"] {
        let dir = Path::new(FIXTURES).join(sub);
        let rd = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fixtures at {}: {e}", dir.display()));
        for entry in rd {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "rdb") {
                out.push(path);
            }
        }
    }
    out.sort();
    assert!(
        out.len() >= 30,
        "expected the fixture set, found {}",
        out.len()
    );
    out
}

fn parse_file(path: &Path, opts: ParseOptions) -> Result<Vec<Item>, RdbError> {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_all(BufReader::new(f), opts)
}

fn keys(items: &[Item]) -> Vec<&Key> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Key(k) => Some(k),
            _ => None,
        })
        .collect()
}

fn key<'a>(items: &'a [Item], name: &str) -> &'a Key {
    keys(items)
        .into_iter()
        .find(|k| k.meta.key == name.as_bytes())
        .unwrap_or_else(|| panic!("key {name} not found"))
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURES).join(rel)
}

/// Files that must fail (corrupt), or that hold module values.
fn expectation(path: &Path) -> &'static str {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match name {
        "corrupt_ziplist.rdb" => "error",
        "redis_40_with_module.rdb" | "redis_60_with_module_aux.rdb" => "module",
        _ => "ok",
    }
}

#[test]
fn every_fixture_parses_or_fails_cleanly() {
    for path in all_fixtures() {
        let res = parse_file(&path, ParseOptions::default());
        match expectation(&path) {
            "ok" | "module" => {
                let items = res.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(matches!(
                    items.first(),
                    Some(Item::Event(Event::Header { .. }))
                ));
                assert!(
                    matches!(items.last(), Some(Item::Event(Event::End { .. }))),
                    "{}",
                    path.display()
                );
            }
            _ => {
                let err = res.expect_err("corrupt file must fail");
                assert!(err.offset().is_some(), "{}: {err}", path.display());
                eprintln!("{}: {err}", path.display());
            }
        }
    }
}

#[test]
fn module_values_rejected_on_request() {
    let opts = ParseOptions {
        module_policy: ModulePolicy::Reject,
        ..ParseOptions::default()
    };
    let err =
        parse_file(&fixture("rdbtools-dumps/redis_40_with_module.rdb"), opts).expect_err("rejects");
    let msg = err.to_string();
    assert!(matches!(err, RdbError::ModuleRejected { .. }), "{msg}");
    assert!(msg.contains("module type"), "{msg}");
}

#[test]
fn known_contents() {
    let items = parse_file(
        &fixture("rdbtools-dumps/intset_16.rdb"),
        ParseOptions::default(),
    )
    .expect("parses");
    let Value::Set(mut v) = key(&items, "intset_16").value.clone() else {
        panic!("set")
    };
    v.sort();
    assert_eq!(
        v,
        vec![b"32764".to_vec(), b"32765".to_vec(), b"32766".to_vec()]
    );

    let items = parse_file(
        &fixture("rdbtools-dumps/multiple_databases.rdb"),
        ParseOptions::default(),
    )
    .expect("parses");
    let k0 = key(&items, "key_in_zeroth_database");
    assert_eq!(
        (k0.meta.db, &k0.value),
        (0, &Value::String(b"zero".to_vec()))
    );
    let k2 = key(&items, "key_in_second_database");
    assert_eq!(
        (k2.meta.db, &k2.value),
        (2, &Value::String(b"second".to_vec()))
    );

    let items = parse_file(
        &fixture("rdbtools-dumps/easily_compressible_string_key.rdb"),
        ParseOptions::default(),
    )
    .expect("parses");
    let k = key(&items, &"a".repeat(200));
    assert_eq!(
        k.value,
        Value::String(b"Key that redis should compress easily".to_vec())
    );

    let items = parse_file(
        &fixture("rdbtools-dumps/keys_with_expiry.rdb"),
        ParseOptions::default(),
    )
    .expect("parses");
    assert_eq!(
        key(&items, "expires_ms_precision").meta.expire_ms,
        Some(1671963072573)
    );
}

#[test]
fn every_fixture_parses_in_tiny_batches_identically() {
    for path in all_fixtures() {
        if expectation(&path) == "error" {
            continue;
        }
        let whole = parse_file(&path, ParseOptions::default()).expect("parses");
        let mut opts = ParseOptions::default();
        opts.limits.batch_elements_max = 1;
        opts.limits.batch_bytes_max = 1;
        let tiny = parse_file(&path, opts).expect("parses");
        assert_eq!(
            format!("{whole:?}"),
            format!("{tiny:?}"),
            "{}",
            path.display()
        );
    }
}

#[test]
fn raw_capture_round_trips_through_dump_decode() {
    for path in all_fixtures() {
        if expectation(&path) != "ok" {
            continue;
        }
        let opts = ParseOptions {
            capture_raw: true,
            ..ParseOptions::default()
        };
        let f = File::open(&path).expect("open");
        let mut p = RdbParser::new(BufReader::new(f), opts);
        let mut version = 0;
        while let Some(item) = p.next_item().expect("parses") {
            match item {
                Item::Event(Event::Header { version: v }) => version = v,
                Item::Key(k) => {
                    let raw = k.raw.expect("captured");
                    assert_eq!(raw[0], k.meta.rdb_type.as_u8());
                    let payload = lockstep_sync::rdb::dump::wrap_raw(&raw, version as u16);
                    let d = lockstep_sync::rdb::decode_dump(&payload, &Default::default())
                        .unwrap_or_else(|e| {
                            panic!("{}: key {:?}: {e}", path.display(), k.meta.key)
                        });
                    assert_eq!(d.value, k.value);
                }
                _ => {}
            }
        }
    }
}

#[test]
fn unknown_type_names_offset_and_byte() {
    let mut data = b"REDIS0009".to_vec();
    data.extend_from_slice(&[0xfe, 0x00, 0x1e, 0x01, b'k']);
    let err = parse_all(&data[..], ParseOptions::default()).expect_err("type 0x1e is unknown");
    assert!(
        matches!(
            err,
            RdbError::UnknownType {
                offset: 11,
                byte: 0x1e
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("0x1e at byte offset 11"), "{err}");
}

#[test]
fn checksum_mismatch_and_disabled() {
    let path = fixture("rdbtools-dumps/rdb_version_5_with_checksum.rdb");
    let good = std::fs::read(&path).expect("read");
    parse_all(&good[..], ParseOptions::default()).expect("the original parses");
    // Damage a value byte, keeping the structure valid.
    let at = good
        .windows(6)
        .position(|w| w == b"thisis")
        .expect("value in the file");
    let mut bad = good.clone();
    bad[at] ^= 0x20;
    let err = parse_all(&bad[..], ParseOptions::default()).expect_err("checksum must fail");
    assert!(matches!(err, RdbError::ChecksumMismatch { .. }), "{err}");
    // A stored checksum of 0 means disabled.
    let n = bad.len();
    bad[n - 8..].fill(0);
    parse_all(&bad[..], ParseOptions::default()).expect("checksum 0 is disabled");
    // And verification can be turned off.
    let mut bad2 = good.clone();
    bad2[at] ^= 0x20;
    let opts = ParseOptions {
        verify_checksum: false,
        ..ParseOptions::default()
    };
    parse_all(&bad2[..], opts).expect("not verified");
}

#[test]
fn truncated_file_is_eof_error_with_offset() {
    let good = std::fs::read(fixture("redis-tests-assets/encodings.rdb")).expect("read");
    for cut in [5, 9, 20, good.len() / 2, good.len() - 9, good.len() - 1] {
        let err = parse_all(&good[..cut], ParseOptions::default()).expect_err("truncated");
        assert!(
            err.offset().is_some_and(|o| o <= cut as u64),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn module_values_and_aux_kept_raw() {
    let items = parse_file(
        &fixture("rdbtools-dumps/redis_40_with_module.rdb"),
        ParseOptions::default(),
    )
    .expect("parses");
    let modules: Vec<(String, u16, usize)> = keys(&items)
        .iter()
        .filter_map(|k| match &k.value {
            Value::Module(m) => Some((m.name.clone(), m.encver, m.raw.len())),
            _ => None,
        })
        .collect();
    eprintln!("module values: {modules:?}");
    assert!(!modules.is_empty());
    assert!(modules
        .iter()
        .all(|(name, _, raw)| name.len() == 9 && *raw > 0));

    let items = parse_file(
        &fixture("rdbtools-dumps/redis_60_with_module_aux.rdb"),
        ParseOptions::default(),
    )
    .expect("parses");
    let aux: Vec<(String, u64, usize)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Event(Event::ModuleAux {
                name, when, raw, ..
            }) => Some((name.clone(), *when, raw.len())),
            _ => None,
        })
        .collect();
    eprintln!("module aux: {aux:?}");
    assert_eq!(aux, vec![("test__rdb".to_string(), 2, 12)]);
}

#[test]
fn aof_with_rdb_preamble_hands_back_the_aof_tail() {
    let data = std::fs::read(fixture("redis-tests-assets/rdb-preamble.aof")).expect("read");
    let mut p = RdbParser::new(&data[..], ParseOptions::default());
    let mut keys = 0;
    while let Some(ev) = p.next_event().expect("the preamble parses") {
        if matches!(ev, Event::KeyStart(_)) {
            keys += 1;
        }
    }
    let consumed = p.offset() as usize;
    let (rest_reader, ahead) = p.into_parts();
    let mut tail = ahead;
    tail.extend_from_slice(rest_reader);
    assert_eq!(tail, &data[consumed..]);
    assert!(
        tail.starts_with(b"*"),
        "the AOF tail starts with a RESP command"
    );
    eprintln!(
        "{keys} keys in the preamble, {} bytes of AOF after it",
        tail.len()
    );
}
