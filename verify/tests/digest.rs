//! The digest: the same value in any order or encoding gives the same digest; any
//! changed element, field, value or score gives another.

use std::collections::{BTreeMap, BTreeSet};

use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::digest;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..12)
}

proptest! {
    #[test]
    fn hash_digest_ignores_order_and_sees_changes(
        map in proptest::collection::btree_map(bytes(), bytes(), 1..40),
        seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
        new_value in bytes(),
    ) {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = map.clone().into_iter().collect();
        let sorted = digest::of_hash(pairs.iter().map(|(f, v)| (f.as_slice(), v.as_slice())));
        shuffle(&mut pairs, seed);
        let shuffled = digest::of_hash(pairs.iter().map(|(f, v)| (f.as_slice(), v.as_slice())));
        prop_assert_eq!(sorted, shuffled);

        let i = pick.index(pairs.len());
        prop_assume!(pairs[i].1 != new_value);
        pairs[i].1 = new_value;
        let changed = digest::of_hash(pairs.iter().map(|(f, v)| (f.as_slice(), v.as_slice())));
        prop_assert_ne!(sorted, changed);
    }

    #[test]
    fn set_and_zset_digests_ignore_order_and_see_changes(
        members in proptest::collection::btree_set(bytes(), 1..40),
        seed in any::<u64>(),
        extra in bytes(),
        score in any::<f64>(),
    ) {
        let mut list: Vec<Vec<u8>> = members.iter().cloned().collect();
        let a = digest::of_set(list.iter().map(Vec::as_slice));
        shuffle(&mut list, seed);
        prop_assert_eq!(a, digest::of_set(list.iter().map(Vec::as_slice)));
        if !members.contains(&extra) {
            list.push(extra);
            prop_assert_ne!(a, digest::of_set(list.iter().map(Vec::as_slice)));
            list.pop();
        }

        let z = |l: &[Vec<u8>], s: f64| digest::of_zset(l.iter().map(|m| (m.as_slice(), s)));
        prop_assert_eq!(z(&list, score), z(&members.iter().cloned().collect::<Vec<_>>(), score));
        let other = if score == 1.0 { 2.0 } else { 1.0 };
        prop_assert_ne!(z(&list, score), z(&list, other));
    }

    #[test]
    fn list_digest_sees_order_and_framing(
        mut list in proptest::collection::vec(bytes(), 2..30),
        i in any::<prop::sample::Index>(),
        j in any::<prop::sample::Index>(),
    ) {
        let a = digest::of_list(list.iter().map(Vec::as_slice));
        let (i, j) = (i.index(list.len()), j.index(list.len()));
        prop_assume!(list[i] != list[j]);
        list.swap(i, j);
        prop_assert_ne!(a, digest::of_list(list.iter().map(Vec::as_slice)));
        // Moving bytes across an element boundary changes the digest.
        let joined: Vec<u8> = list.concat();
        prop_assume!(joined.len() >= 2);
        let (x, y) = joined.split_at(1);
        prop_assert_ne!(
            digest::of_list([x, y]),
            digest::of_list([&joined[..1], &joined[1..2], &joined[2..]])
        );
    }
}

fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

/// The same values in small and large encodings (listpack/intset vs hashtable,
/// skiplist, quicklist nodes), read in chunks of 7, give the same digests.
#[tokio::test]
async fn digest_is_the_same_in_every_encoding() -> anyhow::Result<()> {
    // Zsets: 300 members are a listpack under a raised limit, a skiplist by default.
    let small = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0).set("zset-max-listpack-entries", "1000"),
    )
    .await?;
    let large = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .set("hash-max-listpack-entries", "0")
            .set("set-max-intset-entries", "0")
            .set("list-max-listpack-size", "1"),
    )
    .await?;
    let hash: BTreeMap<String, String> = (0..100)
        .map(|i| (format!("f{i}"), format!("{i}")))
        .collect();
    let set: BTreeSet<i64> = (0..100).collect();
    let mut pipe = redis::pipe();
    for (f, v) in &hash {
        pipe.cmd("HSET").arg("h").arg(f).arg(v).ignore();
    }
    for m in &set {
        pipe.cmd("SADD").arg("s").arg(m).ignore();
        pipe.cmd("ZADD")
            .arg("z")
            .arg(*m as f64 / 3.0)
            .arg(m)
            .ignore();
        pipe.cmd("RPUSH").arg("l").arg(m).ignore();
    }
    for m in 100..300 {
        pipe.cmd("ZADD").arg("z").arg(m).arg(m).ignore();
    }
    pipe.cmd("ZADD")
        .arg("z")
        .arg("-inf")
        .arg("neg")
        .arg("inf")
        .arg("pos")
        .ignore();
    for server in [&small, &large] {
        pipe.query_async::<()>(&mut server.client().await?).await?;
    }
    let mut a = small
        .redis_client()?
        .get_multiplexed_async_connection()
        .await?;
    let mut b = large
        .redis_client()?
        .get_multiplexed_async_connection()
        .await?;
    for (key, kind) in [("h", "hash"), ("s", "set"), ("z", "zset"), ("l", "list")] {
        let x = digest::read(&mut a, key.as_bytes(), kind, 7).await?;
        let y = digest::read(&mut b, key.as_bytes(), kind, 7).await?;
        assert_eq!(x, y, "{key}");
        let enc_a: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .query_async(&mut a)
            .await?;
        let enc_b: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .query_async(&mut b)
            .await?;
        // Lists are quicklists in 7.0 either way (nodes of one vs many entries).
        if key != "l" {
            assert_ne!(enc_a, enc_b, "{key} has one encoding on both servers");
        }
    }
    // One changed score is another digest.
    redis::cmd("ZADD")
        .arg("z")
        .arg(-0.0)
        .arg("neg")
        .query_async::<()>(&mut b)
        .await?;
    assert_ne!(
        digest::read(&mut a, b"z", "zset", 7).await?,
        digest::read(&mut b, b"z", "zset", 7).await?
    );
    Ok(())
}
