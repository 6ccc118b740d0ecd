//! The DUMP payload decoder ([`decode_dump`]): what a source's `DUMP` answers
//! (the full copy reads some keys that way) on any bytes.
//!
//! Most inputs get a correct CRC64 written into their trailer first (even
//! lengths), or the checksum would stop nearly every mutation before the body;
//! odd lengths keep the input's trailer, to exercise the check itself.
//!
//! Asserts: no panic; every string in the value at most the limit set here; and
//! a decoded value that [`encode_dump`] can write for the payload's version
//! decodes back to the same value (a stream of an older type may gain the fields
//! its newer type derives, once: a second round trip changes nothing).

use lockstep_sync::rdb::crc64::crc64;
use lockstep_sync::rdb::{decode_dump, encode_dump, DumpOptions, ParseOptions, Value};

use crate::rdb_parser::limits;

pub fn run(data: &[u8]) {
    let mut payload = data.to_vec();
    if payload.len() >= 11 && payload.len().is_multiple_of(2) {
        let body_end = payload.len() - 8;
        let crc = crc64(&payload[..body_end]);
        payload[body_end..].copy_from_slice(&crc.to_le_bytes());
    }
    let opts = DumpOptions {
        parse: ParseOptions {
            limits: limits(),
            ..ParseOptions::default()
        },
    };
    let Ok(dump) = decode_dump(&payload, &opts) else {
        return;
    };
    let string_max = opts.parse.limits.string_bytes_max as usize;
    assert!(strings(&dump.value).all(|len| len <= string_max));
    let Ok(encoded) = encode_dump(&dump.value, dump.version) else {
        return;
    };
    let once = decode_dump(&encoded, &opts).expect("what encode_dump wrote decodes");
    // A stream of an older type than the version's gains the fields the newer type
    // derives (first ID, entries added, ...), as a server loading it does: the value
    // may change once, then never again, and its entries never.
    let twice = encode_dump(&once.value, dump.version).expect("encodes again");
    let twice = decode_dump(&twice, &opts).expect("decodes again");
    assert_eq!(
        debug(&twice.value),
        debug(&once.value),
        "a second DUMP round trip"
    );
    match (&once.value, &dump.value) {
        (Value::Stream(after), Value::Stream(before)) => {
            assert_eq!(
                debug(&after.entries),
                debug(&before.entries),
                "stream entries"
            );
            assert_eq!(after.groups.len(), before.groups.len(), "stream groups");
        }
        (after, before) => assert_eq!(debug(after), debug(before), "a DUMP round trip"),
    }
}

/// Values compare through `Debug`, so that NaN scores compare equal.
fn debug(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}")
}

/// The lengths of the strings of a value.
fn strings(value: &Value) -> Box<dyn Iterator<Item = usize> + '_> {
    match value {
        Value::String(s) => Box::new(std::iter::once(s.len())),
        Value::List(v) | Value::Set(v) => Box::new(v.iter().map(Vec::len)),
        Value::ZSet(v) => Box::new(v.iter().map(|(m, _)| m.len())),
        Value::Hash(v) => Box::new(v.iter().flat_map(|f| [f.field.len(), f.value.len()])),
        Value::Stream(s) => Box::new(
            s.entries
                .iter()
                .flat_map(|e| e.fields.iter().flat_map(|(f, v)| [f.len(), v.len()])),
        ),
        Value::Module(m) => Box::new(std::iter::once(m.raw.len())),
    }
}
