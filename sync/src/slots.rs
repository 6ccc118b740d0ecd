//! Redis Cluster hash slots: which of the 16384 slots a key belongs to, and which
//! node serves each slot.
//!
//! A key's slot is `CRC16(key) mod 16384` (CRC16-CCITT/XMODEM, as in the Redis
//! Cluster specification), where only the *hash tag* is hashed when the key has one:
//! the bytes between the first `{` and the next `}`, if that is not empty. Keys
//! written together under one tag (`user:{42}:a`, `user:{42}:b`) share a slot.
//! `tests/tests/cluster.rs` checks [`key_slot`] against `CLUSTER KEYSLOT` of a real
//! server.
//!
//! The slot map is read with `CLUSTER SLOTS` (every version from 3.0 to 8.x, so one
//! parser serves the 6.2, 7.0 and 8.2 targets); [`crate::cluster`] routes commands by it.

use bytes::Bytes;

use crate::resp::Frame;

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), by a table built at
/// compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC16 of `bytes` as Redis Cluster computes it.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The part of `key` that is hashed: its hash tag if it has a non-empty one, else
/// the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The hash slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

/// The smallest number whose decimal text hashes to `slot`: `{<it>}` in a key puts
/// the key in that slot.
pub fn hash_tag_of_slot(slot: u16) -> String {
    (0u32..)
        .map(|n| n.to_string())
        .find(|tag| key_slot(tag.as_bytes()) == slot)
        .unwrap_or_default()
}

/// One key per slot, in slot order: `<base>:{<n>}` with the smallest `n` whose
/// slot it is (the cluster router's checkpoint keys and skip hashes).
pub fn slot_tagged_keys(base: &[u8]) -> Vec<Bytes> {
    let mut keys: Vec<Option<Bytes>> = vec![None; SLOTS];
    let mut missing = SLOTS;
    let mut n = 0u32;
    while missing > 0 {
        let tag = n.to_string();
        let slot = usize::from(key_slot(tag.as_bytes()));
        if keys[slot].is_none() {
            let mut key = base.to_vec();
            key.extend_from_slice(format!(":{{{tag}}}").as_bytes());
            keys[slot] = Some(Bytes::from(key));
            missing -= 1;
        }
        n += 1;
    }
    keys.into_iter().flatten().collect()
}

/// One primary and the slot ranges it serves, from `CLUSTER SLOTS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub host: String,
    pub port: u16,
    /// Inclusive ranges.
    pub ranges: Vec<(u16, u16)>,
}

/// Reads a `CLUSTER SLOTS` reply into one [`Shard`] per primary (replicas are not
/// written to). `seed_host` replaces an empty or `?` host (a node that does not
/// know its own address answers so).
pub fn parse_cluster_slots(reply: &Frame, seed_host: &str) -> Result<Vec<Shard>, String> {
    let Frame::Array(ranges) = reply else {
        return Err(format!("CLUSTER SLOTS answered {reply:?}, not an array"));
    };
    let mut shards: Vec<Shard> = Vec::new();
    for range in ranges {
        let Frame::Array(fields) = range else {
            return Err(format!("a CLUSTER SLOTS entry is not an array: {range:?}"));
        };
        let number = |at: usize| match fields.get(at) {
            Some(Frame::Integer(n)) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (Some(first), Some(last)) = (number(0), number(1)) else {
            return Err(format!(
                "a CLUSTER SLOTS entry has no slot range: {range:?}"
            ));
        };
        let (host, port) = fields
            .get(2)
            .and_then(|primary| node_address(primary, seed_host))
            .ok_or_else(|| format!("a CLUSTER SLOTS entry has no primary address: {range:?}"))?;
        match shards.iter_mut().find(|s| s.host == host && s.port == port) {
            Some(shard) => shard.ranges.push((first, last)),
            None => shards.push(Shard {
                host,
                port,
                ranges: vec![(first, last)],
            }),
        }
    }
    Ok(shards)
}

/// A node's address in a `CLUSTER SLOTS` entry (`[host, port, id, ...]`); `seed_host`
/// for an empty or `?` host (a node that does not know its own address answers so).
pub fn node_address(node: &Frame, seed_host: &str) -> Option<(String, u16)> {
    let Frame::Array(node) = node else {
        return None;
    };
    let host = match node.first().and_then(Frame::as_bytes) {
        Some(h) if !h.is_empty() && h != b"?" => String::from_utf8_lossy(h).into_owned(),
        _ => seed_host.to_owned(),
    };
    match node.get(1) {
        Some(Frame::Integer(port)) => u16::try_from(*port).ok().map(|port| (host, port)),
        _ => None,
    }
}

/// The shard serving each slot (an index into the shards), or an error naming the
/// first slot nobody serves.
pub fn slot_owners(shards: &[Shard]) -> Result<Vec<u16>, String> {
    const NOBODY: u16 = u16::MAX;
    let mut owners = vec![NOBODY; SLOTS];
    for (index, shard) in shards.iter().enumerate() {
        for &(first, last) in &shard.ranges {
            for slot in first..=last.min(SLOTS as u16 - 1) {
                owners[usize::from(slot)] = index as u16;
            }
        }
    }
    match owners.iter().position(|&o| o == NOBODY) {
        Some(slot) => Err(format!(
            "slot {slot} is served by no primary of the target cluster (fix: assign every slot, e.g. redis-cli --cluster fix)"
        )),
        None => Ok(owners),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // The specification's test vector, and slots every Redis user knows.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        for slot in [0, 1, 5460, 5461, 10923, 16383] {
            let tag = hash_tag_of_slot(slot);
            assert_eq!(
                key_slot(format!("LOCKSTEP_HEARTBEAT:{{{tag}}}").as_bytes()),
                slot
            );
        }
    }
}
