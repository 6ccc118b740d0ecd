//! The key table ([`key_indices`], [`split_into`], [`split_part`]) on random argv:
//! every command of the stream goes through it (the filter, cluster routing), with
//! counts such as EVAL's numkeys taken from the stream.
//!
//! The input is the argv, arguments separated by spaces; a first argument of one
//! byte names the table's command of that index, so that every entry is reached.
//! Asserts: no panic; every key position lies inside argv, in increasing order but
//! for the one extra key (a destination first, a STORE key last), and
//! `is_empty` agrees with the positions; a split keeps the command's name and gives
//! each key's arguments once.

use bytes::Bytes;
use lockstep_sync::keys::{key_indices, split_into, split_part, splittable, table};

/// The argv an input stands for.
pub fn argv(data: &[u8]) -> Vec<Bytes> {
    let mut argv: Vec<Bytes> = data
        .split(|&b| b == b' ')
        .map(Bytes::copy_from_slice)
        .collect();
    if let Some(first) = argv.first_mut() {
        if let [index] = first[..] {
            let names = table();
            *first = Bytes::from_static(names[index as usize % names.len()].0.as_bytes());
        }
    }
    argv
}

pub fn run(data: &[u8]) {
    let argv = argv(data);
    if let Ok(indices) = key_indices(&argv) {
        let empty = indices.is_empty();
        let positions: Vec<usize> = indices.take(argv.len() + 2).collect();
        assert!(
            positions.len() <= argv.len(),
            "{positions:?} for {} arguments",
            argv.len()
        );
        assert!(
            positions.iter().all(|&i| i >= 1 && i < argv.len()),
            "{positions:?}"
        );
        assert_eq!(empty, positions.is_empty());
        let rising = positions.windows(2).filter(|w| w[0] >= w[1]).count();
        assert!(rising <= 1, "positions out of order: {positions:?}");
    }
    let Some(parts) = split_into(&argv, |key| key.first().copied()) else {
        return;
    };
    let Some((width, rename)) = splittable(&argv[0]) else {
        panic!("split a command that is not splittable");
    };
    for (_, part) in &parts {
        let head = rename.map_or(&argv[0][..], |r| r);
        assert_eq!(&part[0][..], head);
        assert!(part.len() > 1 && part.len() <= 1 + width * (argv.len() - 1));
    }
    let args: usize = parts.iter().map(|(_, p)| p.len() - 1).sum();
    assert!(args < argv.len(), "{args} arguments from {}", argv.len());
    let kept = split_part(&argv, |key| key.len() % 2 == 0).expect("splittable");
    assert!(!kept.is_empty() && kept.len() <= argv.len());
}
