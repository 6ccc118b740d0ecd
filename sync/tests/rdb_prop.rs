//! Property tests: every encoding round-trips (encode -> decode), DUMP
//! payloads round-trip for every target version, a reader that trickles bytes
//! in arbitrary chunks parses identically, and corrupted or truncated real
//! RDB files never panic nor make a large allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lockstep_sync::rdb::elem::Elem;
use lockstep_sync::rdb::listpack::{self, ListpackWriter};
use lockstep_sync::rdb::ziplist::{self, ZiplistWriter};
use lockstep_sync::rdb::{
    decode_dump, encode_dump, intset, parse_all, stream, zipmap, Consumer, HashField, ParseOptions,
    PendingEntry, Stream, StreamEntry, StreamGroup, StreamId, StreamMeta, Value,
};
use proptest::prelude::*;

/// Records the largest single allocation, to catch allocations sized by a
/// corrupt length field.
struct PeakAlloc;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/rdb");

fn good_fixtures() -> &'static [(PathBuf, Vec<u8>)] {
    static FILES: std::sync::OnceLock<Vec<(PathBuf, Vec<u8>)>> = std::sync::OnceLock::new();
    FILES.get_or_init(load_fixtures)
}

fn load_fixtures() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["rdbtools-dumps", "redis-tests-assets"] {
        let Ok(rd) = std::fs::read_dir(Path::new(FIXTURES).join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rdb") {
                if let Ok(b) = std::fs::read(&p) {
                    out.push((p, b));
                }
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no fixtures under {FIXTURES}");
    out
}

fn elem_strategy() -> impl Strategy<Value = (bool, Vec<u8>, i64)> {
    (
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<i64>(),
    )
}

fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..40),
        1 => any::<i64>().prop_map(|i| i.to_string().into_bytes()),
        1 => (0usize..20_000).prop_map(|n| vec![b'z'; n]),
    ]
}

fn score_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>().prop_filter("no NaN in a zset", |f| !f.is_nan()),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => (-1000i64..1000).prop_map(|i| i as f64),
    ]
}

fn id_strategy() -> impl Strategy<Value = StreamId> {
    (0u64..u64::MAX / 2, 0u64..1000).prop_map(|(ms, seq)| StreamId { ms, seq })
}

fn stream_strategy() -> impl Strategy<Value = Stream> {
    let entries = prop::collection::btree_map(
        id_strategy(),
        prop::collection::vec((bytes_strategy(), bytes_strategy()), 0..4),
        0..150,
    );
    let groups = prop::collection::btree_map(
        bytes_strategy(),
        (
            id_strategy(),
            prop::collection::btree_map(id_strategy(), (any::<u64>(), 0u64..50, 0usize..3), 0..6),
        ),
        0..3,
    );
    (entries, groups, id_strategy(), any::<u64>()).prop_map(|(entries, groups, last, added)| {
        let entries: Vec<StreamEntry> = entries
            .into_iter()
            .map(|(id, fields)| StreamEntry { id, fields })
            .collect();
        let groups = groups
            .into_iter()
            .map(|(name, (last_id, pel))| {
                let mut consumers: Vec<Consumer> = (0..3)
                    .map(|i| Consumer {
                        name: format!("c{i}").into_bytes(),
                        seen_time_ms: 1000 + i,
                        active_time_ms: Some(2000 + i),
                        pending: Vec::new(),
                    })
                    .collect();
                let pel = pel
                    .into_iter()
                    .map(|(id, (time, count, owner))| {
                        consumers[owner].pending.push(id);
                        PendingEntry {
                            id,
                            delivery_time_ms: time,
                            delivery_count: count,
                        }
                    })
                    .collect();
                StreamGroup {
                    name,
                    last_id,
                    entries_read: Some(7),
                    pel,
                    consumers,
                }
            })
            .collect();
        let meta = StreamMeta {
            length: entries.len() as u64,
            last_id: last,
            first_id: Some(entries.first().map(|e| e.id).unwrap_or_default()),
            max_deleted_id: Some(StreamId { ms: 1, seq: 2 }),
            entries_added: Some(added),
        };
        Stream {
            entries,
            meta,
            groups,
        }
    })
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        bytes_strategy().prop_map(Value::String),
        prop::collection::vec(bytes_strategy(), 0..30).prop_map(Value::List),
        prop::collection::btree_set(bytes_strategy(), 0..30)
            .prop_map(|s| Value::Set(s.into_iter().collect())),
        prop::collection::btree_map(bytes_strategy(), score_strategy(), 0..30)
            .prop_map(|m| Value::ZSet(m.into_iter().collect())),
        prop::collection::btree_map(
            bytes_strategy(),
            (bytes_strategy(), prop::option::of(1u64..4_000_000_000_000)),
            0..30
        )
        .prop_map(|m| Value::Hash(
            m.into_iter()
                .map(|(field, (value, expire_ms))| HashField {
                    field,
                    value,
                    expire_ms
                })
                .collect()
        )),
        stream_strategy().prop_map(|s| Value::Stream(Box::new(s))),
    ]
}

/// What a decoded value of `version` can hold of `v`: older stream types
/// lack some metadata, which decoding reports as None or derives.
fn expected_after(v: &Value, version: u16) -> Value {
    let mut v = v.clone();
    if let Value::Stream(s) = &mut v {
        if version < 10 {
            s.meta.first_id = None;
            s.meta.max_deleted_id = None;
            s.meta.entries_added = None;
            for g in &mut s.groups {
                g.entries_read = None;
            }
        }
        if version < 11 {
            for g in &mut s.groups {
                for c in &mut g.consumers {
                    c.active_time_ms = None;
                }
            }
        }
    }
    v
}

/// A reader that returns at most the next chunk size per call.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    i: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.sizes[self.i % self.sizes.len()]
            .min(buf.len())
            .min(self.data.len());
        self.i += 1;
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn listpack_round_trip(items in prop::collection::vec(elem_strategy(), 0..200)) {
        let mut w = ListpackWriter::new();
        let want: Vec<Elem<'_>> = items.iter().map(|(is_int, s, i)| if *is_int { Elem::Int(*i) } else { Elem::Str(s) }).collect();
        for e in &want {
            w.push(*e);
        }
        let lp = w.finish();
        prop_assert_eq!(listpack::decode_all(&lp).map_err(|e| TestCaseError::fail(e.to_string()))?, want);
    }

    #[test]
    fn ziplist_round_trip(items in prop::collection::vec(elem_strategy(), 0..200)) {
        let mut w = ZiplistWriter::new();
        let want: Vec<Elem<'_>> = items.iter().map(|(is_int, s, i)| if *is_int { Elem::Int(*i) } else { Elem::Str(s) }).collect();
        for e in &want {
            w.push(*e);
        }
        let zl = w.finish();
        prop_assert_eq!(ziplist::decode_all(&zl).map_err(|e| TestCaseError::fail(e.to_string()))?, want);
    }

    #[test]
    fn intset_round_trip(set in prop::collection::btree_set(any::<i64>(), 0..200)) {
        let v: Vec<i64> = set.iter().copied().collect();
        let blob = intset::encode(&v);
        let mut got = Vec::new();
        intset::decode(&blob, |x| { got.push(x); Ok(()) }).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, v);
    }

    #[test]
    fn zipmap_round_trip(m in prop::collection::btree_map(bytes_strategy(), bytes_strategy(), 0..40)) {
        let pairs: Vec<(&[u8], &[u8])> = m.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        let blob = zipmap::encode(&pairs);
        let mut got = Vec::new();
        zipmap::decode(&blob, |k, v| { got.push((k, v)); Ok(()) }).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, pairs);
    }

    #[test]
    fn stream_nodes_round_trip(s in stream_strategy()) {
        let nodes = stream::encode_nodes(&s.entries);
        let mut got = Vec::new();
        for (master, lp) in &nodes {
            stream::decode_node(*master, lp, &mut got).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(got, s.entries);
    }

    #[test]
    fn dump_round_trip_every_version(v in value_strategy()) {
        for version in [7u16, 8, 9, 10, 11, 12] {
            let Ok(payload) = encode_dump(&v, version) else {
                // Only what the version cannot hold may fail.
                let ttl = matches!(&v, Value::Hash(h) if h.iter().any(|f| f.expire_ms.is_some()));
                prop_assert!((matches!(v, Value::Stream(_)) && version < 9) || (ttl && version < 12));
                continue;
            };
            let d = decode_dump(&payload, &Default::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(d.version, version);
            prop_assert_eq!(d.value, expected_after(&v, version));
        }
    }

    #[test]
    fn trickled_input_parses_identically(file in 0usize..64, sizes in prop::collection::vec(1usize..300, 1..8)) {
        let fixtures = good_fixtures();
        let (path, data) = &fixtures[file % fixtures.len()];
        let whole = parse_all(&data[..], ParseOptions::default());
        let trickled = parse_all(Trickle { data, sizes, i: 0 }, ParseOptions::default());
        prop_assert_eq!(format!("{whole:?}"), format!("{trickled:?}"), "{}", path.display());
    }

    /// Tiny batches make every string longer than a few bytes come out in pieces (LZF
    /// ones decompressed across pieces through the 8 KiB window): joined, the keys are
    /// what whole reads give.
    #[test]
    fn strings_in_small_pieces_parse_identically(file in 0usize..64, piece in 1usize..100) {
        let fixtures = good_fixtures();
        let (path, data) = &fixtures[file % fixtures.len()];
        let whole = parse_all(&data[..], ParseOptions::default());
        let mut opts = ParseOptions::default();
        opts.limits.batch_bytes_max = piece;
        let pieces = parse_all(&data[..], opts);
        prop_assert_eq!(format!("{whole:?}"), format!("{pieces:?}"), "{}", path.display());
    }
}

/// Cases of the corruption test: `PROPTEST_CASES` or 2000.
fn corruption_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: corruption_cases(), ..ProptestConfig::default() })]

    #[test]
    fn corrupted_files_never_panic_nor_allocate_big(
        file in 0usize..64,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        checksum in any::<bool>(),
        small_pieces in any::<bool>(),
    ) {
        let fixtures = good_fixtures();
        let (_, data) = &fixtures[file % fixtures.len()];
        let mut bytes = data.clone();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        let mut opts = ParseOptions { verify_checksum: checksum, ..ParseOptions::default() };
        if small_pieces {
            opts.limits.batch_bytes_max = 16; // strings (and LZF ones) in pieces
        }
        LARGEST.store(0, Ordering::Relaxed);
        let res = parse_all(&bytes[..], opts);
        let largest = LARGEST.load(Ordering::Relaxed);
        prop_assert!(largest < 16 << 20, "an allocation of {largest} bytes");
        if let Err(e) = res {
            // Every error but a checksum mismatch names where it happened.
            let _ = e.to_string();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: corruption_cases(), ..ProptestConfig::default() })]

    /// Blob decoders on arbitrary bytes: errors, never panics.
    #[test]
    fn blob_decoders_never_panic(blob in prop::collection::vec(any::<u8>(), 0..200), lead in 0u8..4) {
        let mut b = blob;
        // Often give them a plausible header so they get past it.
        if lead > 0 && b.len() >= 10 {
            let n = (b.len() as u32).to_le_bytes();
            b[..4].copy_from_slice(&n);
        }
        let _ = listpack::decode(&b, |_| Ok(()));
        let _ = ziplist::decode(&b, |_| Ok(()));
        let _ = intset::decode(&b, |_| Ok(()));
        let _ = zipmap::decode(&b, |_, _| Ok(()));
        let mut out = Vec::new();
        let _ = stream::decode_node(StreamId::default(), &b, &mut out);
    }

    /// Valid DUMP payloads with bytes flipped and the CRC fixed up (so the
    /// parser, not the checksum, meets the damage): errors, never panics.
    #[test]
    fn mutated_dump_payloads_never_panic(
        v in value_strategy(),
        version in 7u16..=12,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let Ok(payload) = encode_dump(&v, version) else { return Ok(()) };
        let mut body = payload[..payload.len() - 8].to_vec();
        for (at, x) in &flips {
            let i = at.index(body.len());
            body[i] ^= x;
        }
        if let Some(c) = cut {
            body.truncate(c.index(body.len()).max(1));
        }
        let crc = lockstep_sync::rdb::crc64::crc64(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        LARGEST.store(0, Ordering::Relaxed);
        let _ = decode_dump(&body, &Default::default());
        prop_assert!(LARGEST.load(Ordering::Relaxed) < 16 << 20);
    }
}

#[test]
fn intset_round_trip_dedups() {
    let v: BTreeSet<i64> = [3, 1, 2].into_iter().collect();
    let blob = intset::encode(&[3, 1, 2, 3]);
    let mut got = Vec::new();
    intset::decode(&blob, |x| {
        got.push(x);
        Ok(())
    })
    .expect("decodes");
    assert_eq!(got, v.into_iter().collect::<Vec<_>>());
    let _unused: BTreeMap<u8, u8> = BTreeMap::new();
}
