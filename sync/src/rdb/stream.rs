//! Stream nodes: the listpacks a stream's entries are stored in, keyed by a
//! 16-byte big-endian master ID.
//!
//! A node listpack starts with a master entry: live count, deleted count, the
//! number of master fields, the master field names, and a 0 terminator. Each
//! entry follows as: flags, ms delta, seq delta (from the master ID), then, if
//! the SAMEFIELDS flag is set, just the values of the master fields, else the
//! field count and field-value pairs; and finally the entry's element count
//! ("lp-count", for backward traversal). Entries with the DELETED flag are
//! tombstones and are skipped.
//!
//! How it fits: the parser decodes each stream node with [`decode_node`]; the DUMP
//! encoder builds nodes with [`encode_nodes`]. Element positions in its errors are
//! element indexes of the node. It never panics, and an entry count that does
//! not match the master entry is an error, never a silently short stream.

use super::elem::Elem;
use super::error::BlobError;
use super::listpack::{self, ListpackWriter};
use super::value::{StreamEntry, StreamId};

const WHAT: &str = "stream listpack";
const FLAG_DELETED: i64 = 1;
const FLAG_SAMEFIELDS: i64 = 2;

/// Entries per node when encoding (Redis's stream-node-max-entries default).
pub const NODE_ENTRIES_MAX: usize = 100;

struct Cursor<'a> {
    elems: Vec<Elem<'a>>,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self, what: &str) -> Result<Elem<'a>, BlobError> {
        let e = self
            .elems
            .get(self.i)
            .copied()
            .ok_or_else(|| BlobError::new(WHAT, self.i, format!("ends before the {what}")))?;
        self.i += 1;
        Ok(e)
    }

    fn int(&mut self, what: &str) -> Result<i64, BlobError> {
        let at = self.i;
        self.next(what)?
            .as_int()
            .ok_or_else(|| BlobError::new(WHAT, at, format!("the {what} is not an integer")))
    }

    fn count(&mut self, what: &str) -> Result<usize, BlobError> {
        let at = self.i;
        let v = self.int(what)?;
        let n = usize::try_from(v)
            .map_err(|_| BlobError::new(WHAT, at, format!("negative {what} {v}")))?;
        if n > self.elems.len() {
            return Err(BlobError::new(
                WHAT,
                at,
                format!(
                    "{what} {n} exceeds the node's {} elements",
                    self.elems.len()
                ),
            ));
        }
        Ok(n)
    }
}

/// Decodes one node. `master` is the node's key; live entries are appended to `out`.
/// Element positions in errors are element indexes, not bytes.
pub fn decode_node(
    master: StreamId,
    blob: &[u8],
    out: &mut Vec<StreamEntry>,
) -> Result<(), BlobError> {
    let elems = listpack::decode_all(blob)?;
    if elems.is_empty() {
        return Err(BlobError::new(WHAT, 0, "empty node"));
    }
    let mut c = Cursor { elems, i: 0 };
    let live = c.count("live count")?;
    let deleted = c.count("deleted count")?;
    let master_fields = read_master_fields(&mut c)?;
    let total = live
        .checked_add(deleted)
        .ok_or_else(|| BlobError::new(WHAT, 0, "entry counts overflow"))?;
    let mut seen_live = 0;
    for _ in 0..total {
        let (entry, deleted) = read_entry(&mut c, master, &master_fields)?;
        if !deleted {
            seen_live += 1;
            out.push(entry);
        }
    }
    if c.i != c.elems.len() {
        return Err(BlobError::new(WHAT, c.i, "elements after the last entry"));
    }
    if seen_live != live {
        return Err(BlobError::new(
            WHAT,
            0,
            format!("master entry counts {live} live entries, found {seen_live}"),
        ));
    }
    Ok(())
}

/// The master entry's field names, through its 0 terminator.
fn read_master_fields<'a>(c: &mut Cursor<'a>) -> Result<Vec<Elem<'a>>, BlobError> {
    let nmaster = c.count("master field count")?;
    let mut master_fields = Vec::with_capacity(nmaster);
    for _ in 0..nmaster {
        master_fields.push(c.next("master field")?);
    }
    if c.int("master terminator")? != 0 {
        return Err(BlobError::new(
            WHAT,
            c.i - 1,
            "master entry not terminated by 0",
        ));
    }
    Ok(master_fields)
}

/// One entry (live or tombstone) and whether it is deleted; checks its lp-count.
fn read_entry(
    c: &mut Cursor<'_>,
    master: StreamId,
    master_fields: &[Elem<'_>],
) -> Result<(StreamEntry, bool), BlobError> {
    let start = c.i;
    let flags = c.int("entry flags")?;
    let ms_delta = c.int("ms delta")?;
    let seq_delta = c.int("seq delta")?;
    let id = StreamId {
        ms: master.ms.wrapping_add(ms_delta as u64),
        seq: master.seq.wrapping_add(seq_delta as u64),
    };
    let same = flags & FLAG_SAMEFIELDS != 0;
    let mut fields;
    if same {
        fields = Vec::with_capacity(master_fields.len());
        for master_field in master_fields {
            let value = c.next("entry value")?.to_bytes();
            fields.push((master_field.to_bytes(), value));
        }
    } else {
        let nfields = c.count("entry field count")?;
        fields = Vec::with_capacity(nfields);
        for _ in 0..nfields {
            let field = c.next("entry field")?.to_bytes();
            let value = c.next("entry value")?.to_bytes();
            fields.push((field, value));
        }
    }
    let nfields = fields.len();
    let lp_count = c.int("entry lp-count")?;
    let expect = if same { nfields + 3 } else { 2 * nfields + 4 };
    if lp_count as usize != expect || c.i - start != expect + 1 {
        return Err(BlobError::new(
            WHAT,
            c.i - 1,
            format!("entry lp-count {lp_count}, expected {expect}"),
        ));
    }
    Ok((StreamEntry { id, fields }, flags & FLAG_DELETED != 0))
}

/// Encodes entries (sorted by ID) as nodes of at most `NODE_ENTRIES_MAX` entries:
/// (master ID, listpack) pairs.
pub fn encode_nodes(entries: &[StreamEntry]) -> Vec<(StreamId, Vec<u8>)> {
    let mut nodes = Vec::new();
    for chunk in entries.chunks(NODE_ENTRIES_MAX) {
        let master = chunk[0].id;
        let master_fields: Vec<&[u8]> = chunk[0].fields.iter().map(|(f, _)| f.as_slice()).collect();
        let mut w = ListpackWriter::new();
        w.push_int(chunk.len() as i64);
        w.push_int(0);
        w.push_int(master_fields.len() as i64);
        for f in &master_fields {
            w.push_str(f);
        }
        w.push_int(0);
        for e in chunk {
            let same = e.fields.len() == master_fields.len()
                && e.fields
                    .iter()
                    .zip(&master_fields)
                    .all(|((f, _), m)| f.as_slice() == *m);
            w.push_int(if same { FLAG_SAMEFIELDS } else { 0 });
            w.push_int(e.id.ms.wrapping_sub(master.ms) as i64);
            w.push_int(e.id.seq.wrapping_sub(master.seq) as i64);
            if !same {
                w.push_int(e.fields.len() as i64);
            }
            for (f, v) in &e.fields {
                if !same {
                    w.push_str(f);
                }
                w.push_str(v);
            }
            let n = e.fields.len();
            w.push_int(if same { n + 3 } else { 2 * n + 4 } as i64);
        }
        nodes.push((master, w.finish()));
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ms: u64, seq: u64, fields: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: StreamId { ms, seq },
            fields: fields
                .iter()
                .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        let mut entries = vec![
            entry(1000, 0, &[("a", "1"), ("b", "x")]),
            entry(1000, 1, &[("a", "2"), ("b", "y")]),
            entry(999_999_999_999, 7, &[("c", "-5")]),
            entry(999_999_999_999, 8, &[]),
        ];
        for i in 0..250 {
            entries.push(entry(1_000_000_000_000 + i, 0, &[("n", "v")]));
        }
        let nodes = encode_nodes(&entries);
        assert_eq!(nodes.len(), 3);
        let mut got = Vec::new();
        for (m, lp) in &nodes {
            decode_node(*m, lp, &mut got).expect("decodes");
        }
        assert_eq!(got, entries);
    }
}
