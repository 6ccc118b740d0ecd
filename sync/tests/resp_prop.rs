//! Property tests of the RESP codec: commands survive any split into reads with the
//! same byte counts, frames round-trip, and garbage never panics.

use bytes::{Bytes, BytesMut};
use lockstep_sync::resp::{
    check_frame, decode_frame, decode_frame_slice, encode_command, encode_frame, CommandDecoder,
    Entry, Frame, Limits, Status,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Item {
    Command(Vec<Vec<u8>>),
    Inline(Vec<String>),
    Newline(&'static [u8]),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        8 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8)
            .prop_map(Item::Command),
        1 => prop::collection::vec("[a-zA-Z0-9]{1,8}", 1..4).prop_map(Item::Inline),
        1 => prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..])].prop_map(Item::Newline),
    ]
}

fn encode_item(item: &Item, out: &mut BytesMut) -> usize {
    let start = out.len();
    match item {
        Item::Command(argv) => encode_command(out, argv),
        Item::Inline(words) => {
            out.extend_from_slice(words.join(" ").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Item::Newline(nl) => out.extend_from_slice(nl),
    }
    out.len() - start
}

/// Feed `wire` in chunks of the given sizes, decoding after each read.
fn decode_in_chunks(wire: &[u8], chunks: &[usize]) -> Vec<(Entry, usize)> {
    let mut dec = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < wire.len() {
        let n = (*sizes.next().unwrap_or(&1)).min(wire.len() - fed);
        buf.extend_from_slice(&wire[fed..fed + n]);
        fed += n;
        while let Status::Complete(entry, len) = dec.decode(&mut buf).expect("valid stream") {
            out.push((entry, len));
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    out
}

fn leaf() -> impl Strategy<Value = Frame> {
    let line = "[^\r\n]{0,20}".prop_map(|s| Bytes::from(s.into_bytes()));
    let blob = prop::collection::vec(any::<u8>(), 0..30).prop_map(Bytes::from);
    prop_oneof![
        line.clone().prop_map(Frame::Simple),
        line.prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        blob.clone().prop_map(Frame::Bulk),
        Just(Frame::NullBulk),
        Just(Frame::NullArray),
        Just(Frame::Null),
        any::<bool>().prop_map(Frame::Boolean),
        prop_oneof![
            any::<f64>().prop_filter("NaN != NaN", |d| !d.is_nan()),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
        ]
        .prop_map(Frame::Double),
        "-?[0-9]{1,60}".prop_map(|s| Frame::BigNumber(Bytes::from(s.into_bytes()))),
        (any::<[u8; 3]>(), blob.clone())
            .prop_map(|(format, text)| Frame::Verbatim { format, text }),
        blob.prop_map(Frame::BlobError),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        let items = prop::collection::vec(inner.clone(), 0..6);
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            items.clone().prop_map(Frame::Array),
            items.clone().prop_map(Frame::Set),
            items.prop_map(Frame::Push),
            pairs.clone().prop_map(Frame::Map),
            (pairs, inner).prop_map(|(attrs, value)| Frame::Attribute {
                attrs,
                value: Box::new(value)
            }),
        ]
    })
}

/// Bytes drawn mostly from RESP's own alphabet, so garbage reaches deep paths.
fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: &[u8] = b"*$:+-_#,(=!%~|>0123456789\r\n\r\n -?tfxi.:e";
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(alphabet.to_vec()),
            1 => any::<u8>(),
        ],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn commands_survive_any_split(
        items in prop::collection::vec(item(), 1..30),
        chunks in prop::collection::vec(1usize..64, 1..20),
    ) {
        let mut wire = BytesMut::new();
        let lens: Vec<usize> = items.iter().map(|i| encode_item(i, &mut wire)).collect();
        let got = decode_in_chunks(&wire, &chunks);
        prop_assert_eq!(got.len(), items.len());
        for ((item, want_len), (entry, len)) in items.iter().zip(&lens).zip(&got) {
            prop_assert_eq!(len, want_len);
            match (item, entry) {
                (Item::Command(argv), Entry::Command(c)) => {
                    prop_assert_eq!(c.wire_bytes, *want_len);
                    prop_assert!(!c.inline);
                    let got: Vec<&[u8]> = c.argv.iter().map(|a| &a[..]).collect();
                    let want: Vec<&[u8]> = argv.iter().map(|a| &a[..]).collect();
                    prop_assert_eq!(got, want);
                }
                (Item::Inline(words), Entry::Command(c)) => {
                    prop_assert!(c.inline);
                    let got: Vec<&[u8]> = c.argv.iter().map(|a| &a[..]).collect();
                    let want: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
                    prop_assert_eq!(got, want);
                }
                (Item::Newline(_), Entry::Blank) => {}
                (item, entry) => prop_assert!(false, "{:?} decoded as {:?}", item, entry),
            }
        }
        prop_assert_eq!(got.iter().map(|(_, n)| n).sum::<usize>(), wire.len());
    }

    #[test]
    fn frames_round_trip(frames in prop::collection::vec(frame(), 1..5), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        let mut lens = Vec::new();
        for f in &frames {
            let before = wire.len();
            encode_frame(&mut wire, f);
            lens.push(wire.len() - before);
        }
        // Any prefix that ends inside the first frame is incomplete.
        let first = lens[0];
        let at = cut.index(first);
        prop_assert_eq!(decode_frame_slice(&wire[..at], &Limits::default()), Ok(Status::Incomplete));
        // The whole pipeline decodes back, frame by frame, with the same lengths.
        let mut buf = wire.clone();
        for (f, len) in frames.iter().zip(&lens) {
            prop_assert_eq!(check_frame(&buf, &Limits::default()), Ok(Status::Complete((), *len)));
            let got = decode_frame(&mut buf, &Limits::default());
            prop_assert_eq!(got, Ok(Status::Complete(f.clone(), *len)));
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn garbage_never_panics(bytes in resp_ish()) {
        let tight = Limits { bulk_bytes_max: 64, array_len_max: 16, nesting_depth_max: 4, line_bytes_max: 32, inline_bytes_max: 32 };
        for limits in [Limits::default(), tight] {
            let _ = decode_frame_slice(&bytes, &limits);
            let mut buf = BytesMut::from(&bytes[..]);
            let mut dec = CommandDecoder::new(limits.clone());
            // Decode until error or incomplete; each success must consume bytes.
            while let Ok(Status::Complete(_, n)) = dec.decode(&mut buf) {
                prop_assert!(n > 0);
            }
            // Byte by byte through the resumable path too.
            let mut dec = CommandDecoder::new(limits.clone());
            let mut buf = BytesMut::new();
            for b in &bytes {
                buf.extend_from_slice(&[*b]);
                match dec.decode(&mut buf) {
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn corrupted_frames_never_panic(f in frame(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut wire = BytesMut::new();
        encode_frame(&mut wire, &f);
        let i = pos.index(wire.len());
        wire[i] = byte;
        let _ = decode_frame_slice(&wire, &Limits::default());
        let mut dec = CommandDecoder::new(Limits::default());
        let _ = dec.decode(&mut wire);
    }
}
