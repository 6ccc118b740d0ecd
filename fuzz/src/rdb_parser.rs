//! The streaming RDB parser ([`RdbParser`]) on any bytes: what a source sends as
//! the full copy, and what `lockstep rdb` reads from a file.
//!
//! Asserts: no panic; every batch respects the [`Limits`] set here (small, so that
//! small inputs cross them): a whole string or a string piece at most
//! `batch_bytes_max`, pieces in order and inside their string, no element over
//! `string_bytes_max`, a captured raw object at most `raw_capture_bytes_max`, a
//! module payload at most `module_bytes_max`; the parser's offset never goes back
//! nor past the input; it stops after `End` or an error.

use lockstep_sync::rdb::{Elements, Event, Limits, ModulePolicy, ParseOptions, RdbParser};

/// The limits the target sets.
pub fn limits() -> Limits {
    Limits {
        string_bytes_max: 1024 * 1024,
        batch_elements_max: 64,
        batch_bytes_max: 4096,
        raw_capture_bytes_max: 64 * 1024,
        module_bytes_max: 64 * 1024,
    }
}

/// Options chosen from the input's length, so that one corpus covers them all.
pub fn options(len: usize) -> ParseOptions {
    ParseOptions {
        verify_checksum: len.is_multiple_of(2),
        module_policy: if len.is_multiple_of(3) {
            ModulePolicy::Reject
        } else {
            ModulePolicy::Keep
        },
        capture_raw: !len.is_multiple_of(5),
        limits: limits(),
    }
}

pub fn run(data: &[u8]) {
    let opts = options(data.len());
    if data.len().is_multiple_of(7) {
        // The tools' path: whole keys (bounded by the input, not by the batches).
        let _ = lockstep_sync::rdb::parse_all(data, opts);
        return;
    }
    let limits = opts.limits.clone();
    let mut parser = RdbParser::new(data, opts);
    let mut piece_end: Option<(u64, u64)> = None;
    let mut offset = 0;
    // Each event consumes input or emits a bounded batch of a bounded blob.
    for _ in 0..(16 * data.len() + 64) {
        let event = match parser.next_event() {
            Ok(Some(event)) => event,
            Ok(None) | Err(_) => return,
        };
        let now = parser.offset();
        assert!(now >= offset && now <= data.len() as u64, "offset {now}");
        offset = now;
        check_event(&event, &limits, &mut piece_end);
        if matches!(event, Event::End { .. }) {
            assert!(matches!(parser.next_event(), Ok(None)), "events after End");
            return;
        }
    }
    panic!("the parser did not finish within its event bound");
}

fn check_event(event: &Event, limits: &Limits, piece_end: &mut Option<(u64, u64)>) {
    let string_max = limits.string_bytes_max as usize;
    match event {
        Event::Aux { key, value } => assert!(key.len() <= string_max && value.len() <= string_max),
        Event::Function { code } => assert!(code.len() <= string_max),
        Event::ModuleAux { raw, .. } => assert!(raw.len() <= limits.module_bytes_max),
        Event::KeyStart(meta) => {
            assert!(meta.key.len() <= string_max);
            *piece_end = None;
        }
        Event::KeyEnd { raw } => {
            if let Some(raw) = raw {
                assert!(
                    raw.len() <= limits.raw_capture_bytes_max,
                    "raw {}",
                    raw.len()
                );
            }
            if let Some((at, total)) = piece_end.take() {
                assert_eq!(at, total, "a string ended before its last piece");
            }
        }
        Event::Elements(batch) => check_batch(batch, limits, piece_end),
        _ => {}
    }
}

fn check_batch(batch: &Elements, limits: &Limits, piece_end: &mut Option<(u64, u64)>) {
    let string_max = limits.string_bytes_max as usize;
    let fits = |s: &Vec<u8>| s.len() <= string_max;
    match batch {
        Elements::String(s) => assert!(s.len() <= limits.batch_bytes_max, "string {}", s.len()),
        Elements::StringPiece {
            offset,
            total_len,
            bytes,
        } => {
            assert!(bytes.len() <= limits.batch_bytes_max && !bytes.is_empty());
            let expected = piece_end.map_or(0, |(at, _)| at);
            assert_eq!(*offset, expected, "pieces out of order");
            let end = offset + bytes.len() as u64;
            assert!(end <= *total_len && *total_len <= limits.string_bytes_max);
            *piece_end = Some((end, *total_len));
        }
        Elements::List(v) | Elements::Set(v) => assert!(v.iter().all(fits)),
        Elements::ZSet(v) => assert!(v.iter().all(|(m, _)| fits(m))),
        Elements::Hash(v) => assert!(v.iter().all(|f| fits(&f.field) && fits(&f.value))),
        Elements::StreamEntries(v) => {
            assert!(v
                .iter()
                .all(|e| e.fields.iter().all(|(f, x)| fits(f) && fits(x))))
        }
        Elements::Module(m) => assert!(m.raw.len() <= limits.module_bytes_max),
        _ => {}
    }
}
