#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use chitchat::Serializable;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn id(name: &str, generation: u64, port: u16) -> ChitchatId {
    ChitchatId::new(name, generation, addr(port))
}

fn entry(name: &str, generation: u64, port: u16, heartbeat: u64) -> DigestEntry {
    DigestEntry {
        id: id(name, generation, port),
        heartbeat,
        last_gc_version: 0,
        max_version: 3,
    }
}

fn node_delta(name: &str, generation: u64, port: u16, kvs: &[(&str, &str)]) -> NodeDelta {
    NodeDelta {
        id: id(name, generation, port),
        last_gc_version: 0,
        from_version_excluded: 0,
        key_values: kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| KeyValue {
                key: (*k).into(),
                value: (*v).into(),
                version: i as u64 + 1,
                status: 0,
            })
            .collect(),
        set_max_version: None,
    }
}

/// What chitchat's own decoder makes of our bytes, in its own encoding.
fn through_chitchat(bytes: &[u8]) -> Vec<u8> {
    crate::frame::decode_gossip(bytes)
        .expect("chitchat decodes what this module encodes")
        .serialize_to_vec()
}

#[test]
fn every_message_kind_round_trips_through_chitchat_s_own_codec() {
    let big_value = "x".repeat(40_000);
    let messages = [
        GossipMessage::Syn {
            cluster_id: "mesh-1".into(),
            digest: vec![entry("alpha", 7, 7001, 42), entry("bravo", 1, 7002, 9)],
        },
        GossipMessage::SynAck {
            digest: vec![entry("alpha", 7, 7001, 42)],
            delta: vec![
                node_delta("alpha", 7, 7001, &[("status", "up"), ("info", "{}")]),
                NodeDelta {
                    set_max_version: Some(12),
                    ..node_delta("bravo", 1, 7002, &[])
                },
            ],
        },
        // Larger than one block, so both block kinds and the block split are exercised.
        GossipMessage::Ack {
            delta: vec![node_delta("alpha", 7, 7001, &[("blob", &big_value)])],
        },
        GossipMessage::Ack { delta: vec![] },
        GossipMessage::BadCluster,
    ];
    for msg in messages {
        let ours = msg.encode();
        let theirs = through_chitchat(&ours);
        assert_eq!(GossipMessage::parse(&theirs).unwrap(), msg);
        assert_eq!(GossipMessage::parse(&ours).unwrap(), msg);
    }
}

#[test]
fn a_peer_speaks_only_for_itself() {
    let mut trust = GossipTrust::new(addr(7000));
    // Our own entry, as chitchat sends it.
    let own = GossipMessage::Syn {
        cluster_id: "m".into(),
        digest: vec![entry("self", 5, 7000, 100)],
    };
    trust.outbound(addr(7001), own.encode(), 0);
    // charlie has spoken to us before; delta (never heard) has not.
    trust
        .inbound(
            Sender::new("charlie", addr(7003)),
            &GossipMessage::Syn {
                cluster_id: "m".into(),
                digest: vec![entry("charlie", 1, 7003, 1)],
            }
            .encode(),
            0,
        )
        .unwrap();

    let hostile = GossipMessage::SynAck {
        digest: vec![
            entry("mallory", 2, 7009, 50),
            entry("mallory", 1, 7009, 40),    // an older incarnation
            entry("mallory", 3, 7010, 40),    // itself at another address
            entry("bravo", 9, 7009, 1_000),   // someone else at mallory's address
            entry("self", 5, 7000, 1_000),    // us, exactly
            entry("self", 6, 7000, 1_000),    // a forged newer generation of us
            entry("charlie", 1, 7003, 1_000), // heard directly: heartbeat ignored
            entry("delta", 1, 7004, 1_000),   // never heard: an introduction
            entry("ghost", 1, 7005, 1_000),   // never heard: an introduction
        ],
        delta: vec![
            node_delta("mallory", 2, 7009, &[("status", "up")]),
            node_delta("charlie", 1, 7003, &[("status", "left")]),
            node_delta("ghost", 1, 7005, &[("status", "up")]),
        ],
    };
    let admitted = trust
        .inbound(Sender::new("mallory", addr(7009)), &hostile.encode(), 10)
        .unwrap();
    let GossipMessage::SynAck { digest, delta } = GossipMessage::parse(&admitted.payload).unwrap()
    else {
        panic!("not a SynAck");
    };
    assert_eq!(
        digest,
        vec![
            entry("mallory", 2, 7009, 50),
            entry("self", 5, 7000, 1_000),
            entry("charlie", 1, 7003, 0),
        ]
    );
    assert_eq!(
        delta,
        vec![node_delta("mallory", 2, 7009, &[("status", "up")])]
    );
    assert_eq!(admitted.spoke_for, vec!["charlie", "ghost"]);
    assert_eq!(admitted.introduce, vec![addr(7004), addr(7005)]);
    // chitchat takes the rewritten message.
    through_chitchat(&admitted.payload);

    // The same hints again within the window: no second introduction.
    let again = trust
        .inbound(Sender::new("mallory", addr(7009)), &hostile.encode(), 20)
        .unwrap();
    assert!(again.introduce.is_empty());
    let later = trust
        .inbound(
            Sender::new("mallory", addr(7009)),
            &hostile.encode(),
            10 + INTRODUCE_EVERY_MS,
        )
        .unwrap();
    assert_eq!(later.introduce.len(), 2);
}

#[test]
fn a_third_node_heard_long_ago_is_no_longer_vouched_for() {
    let mut trust = GossipTrust::new(addr(7000));
    let hello = GossipMessage::Syn {
        cluster_id: "m".into(),
        digest: vec![entry("charlie", 1, 7003, 1)],
    };
    trust
        .inbound(Sender::new("charlie", addr(7003)), &hello.encode(), 0)
        .unwrap();
    let relayed = GossipMessage::Syn {
        cluster_id: "m".into(),
        digest: vec![entry("charlie", 1, 7003, 9)],
    };
    let admitted = trust
        .inbound(
            Sender::new("bravo", addr(7002)),
            &relayed.encode(),
            HEARD_FOR_MS + 1,
        )
        .unwrap();
    let GossipMessage::Syn { digest, .. } = GossipMessage::parse(&admitted.payload).unwrap() else {
        panic!()
    };
    assert!(digest.is_empty());
    assert_eq!(admitted.introduce, vec![addr(7003)]);
}

#[test]
fn outbound_deltas_carry_only_our_own_state_and_introductions_carry_our_entry() {
    let mut trust = GossipTrust::new(addr(7000));
    assert!(
        trust.introduction().is_none(),
        "nothing to introduce before the first Syn"
    );
    let syn = GossipMessage::Syn {
        cluster_id: "mesh-1".into(),
        digest: vec![entry("self", 4, 7000, 10), entry("bravo", 1, 7002, 3)],
    };
    assert_eq!(trust.outbound(addr(7002), syn.encode(), 0).0, syn.encode());
    let ack = GossipMessage::Ack {
        delta: vec![
            node_delta("bravo", 1, 7002, &[("k", "v")]),
            node_delta("self", 4, 7000, &[("k", "v")]),
        ],
    };
    let sent = GossipMessage::parse(&trust.outbound(addr(7002), ack.encode(), 0).0).unwrap();
    assert_eq!(
        sent,
        GossipMessage::Ack {
            delta: vec![node_delta("self", 4, 7000, &[("k", "v")])]
        }
    );
    let intro = GossipMessage::parse(&trust.introduction().unwrap()).unwrap();
    assert_eq!(
        intro,
        GossipMessage::Syn {
            cluster_id: "mesh-1".into(),
            digest: vec![entry("self", 4, 7000, 10)],
        }
    );
}

#[test]
fn a_delta_that_inflates_past_the_bound_is_refused() {
    // 40 blocks of 64 KiB of zeros, each compressed to a few bytes: 2.5 MiB inflated.
    let zeros = vec![0u8; usize::from(u16::MAX)];
    let small = zstd::bulk::compress(&zeros, 0).unwrap();
    let mut bytes = Vec::new();
    MAGIC.serialize(&mut bytes);
    bytes.push(PROTOCOL_V0);
    bytes.push(ACK);
    for _ in 0..40 {
        bytes.push(BLOCK_COMPRESSED);
        (small.len() as u16).serialize(&mut bytes);
        bytes.extend_from_slice(&small);
    }
    bytes.push(BLOCK_END);
    assert!(bytes.len() < 4096, "{}", bytes.len());
    let err = GossipMessage::parse(&bytes).unwrap_err();
    assert!(err.contains("inflates"), "{err}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let good = GossipMessage::SynAck {
        digest: vec![entry("alpha", 1, 7001, 1)],
        delta: vec![node_delta("alpha", 1, 7001, &[("a", "b"), ("c", "d")])],
    }
    .encode();
    for cut in 0..good.len() {
        assert!(GossipMessage::parse(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(GossipMessage::parse(&trailing).is_err());
    // Versions that do not increase: chitchat's builder would refuse them too.
    let mut bad = node_delta("alpha", 1, 7001, &[("a", "b"), ("c", "d")]);
    bad.key_values[1].version = 1;
    let bytes = GossipMessage::Ack { delta: vec![bad] }.encode();
    assert!(GossipMessage::parse(&bytes).is_err());
    assert!(crate::frame::decode_gossip(&bytes).is_err());
}

#[test]
fn a_peer_nobody_exchanged_with_for_two_rounds_is_pinged_with_what_we_hold_of_it() {
    let mut trust = GossipTrust::new(addr(7000));
    trust.set_gossip_interval(300);
    let hello = |name: &str, port: u16| {
        GossipMessage::Syn {
            cluster_id: "m".into(),
            digest: vec![entry(name, 1, port, 1)],
        }
        .encode()
    };
    trust
        .inbound(Sender::new("bravo", addr(7002)), &hello("bravo", 7002), 0)
        .unwrap();
    trust
        .inbound(
            Sender::new("charlie", addr(7003)),
            &hello("charlie", 7003),
            0,
        )
        .unwrap();
    let syn = GossipMessage::Syn {
        cluster_id: "m".into(),
        digest: vec![entry("bravo", 1, 7002, 5), entry("self", 1, 7000, 9)],
    };
    // Within two rounds of hearing both: no ping.
    let (_, pings) = trust.outbound(addr(7002), syn.encode(), 500);
    assert!(pings.is_empty(), "{pings:?}");
    // 700 ms on: bravo was just sent to (at 500), charlie nothing since 0: charlie only.
    let (_, pings) = trust.outbound(addr(7002), syn.encode(), 700);
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].0, addr(7003));
    let GossipMessage::Syn { digest, .. } = GossipMessage::parse(&pings[0].1).unwrap() else {
        panic!()
    };
    assert_eq!(
        digest,
        vec![entry("self", 1, 7000, 9)],
        "we hold nothing of charlie"
    );
    // Pinged now: not again in the next round.
    let (_, pings) = trust.outbound(addr(7002), syn.encode(), 900);
    assert!(pings.is_empty(), "{pings:?}");
    // A node silent for over a minute is left to chitchat's dead-node rounds.
    let (_, pings) = trust.outbound(addr(7002), syn.encode(), PING_HEARD_WITHIN_MS + 1);
    assert!(pings.is_empty(), "{pings:?}");
}

#[test]
fn heartbeats_less_than_a_quarter_round_apart_reach_the_failure_detector_once() {
    let mut trust = GossipTrust::new(addr(7000));
    trust.set_gossip_interval(300);
    let syn = |hb: u64| {
        GossipMessage::Syn {
            cluster_id: "m".into(),
            digest: vec![entry("bravo", 1, 7002, hb)],
        }
        .encode()
    };
    let heartbeat_passed = |trust: &mut GossipTrust, hb: u64, at: u64| {
        let a = trust
            .inbound(Sender::new("bravo", addr(7002)), &syn(hb), at)
            .unwrap();
        let GossipMessage::Syn { digest, .. } = GossipMessage::parse(&a.payload).unwrap() else {
            panic!()
        };
        assert_eq!(digest.len(), 1, "the entry itself always passes");
        digest[0].heartbeat
    };
    assert_eq!(heartbeat_passed(&mut trust, 1, 0), 1);
    assert_eq!(heartbeat_passed(&mut trust, 2, 20), 0, "a burst");
    assert_eq!(heartbeat_passed(&mut trust, 3, 74), 0, "a burst");
    assert_eq!(
        heartbeat_passed(&mut trust, 4, 75),
        4,
        "a quarter of a round on"
    );
}

/// The `alerter_priority` values of `payload`'s delta for `name`.
fn priorities(payload: &[u8]) -> Vec<String> {
    let GossipMessage::Ack { delta } = GossipMessage::parse(payload).unwrap() else {
        panic!("not an Ack");
    };
    delta
        .iter()
        .flat_map(|d| d.key_values.iter())
        .filter(|kv| kv.key == crate::keys::ALERTER_PRIORITY)
        .map(|kv| kv.value.clone())
        .collect()
}

#[test]
fn a_claimed_alerter_priority_is_held_to_what_the_certificate_grants() {
    let mut trust = GossipTrust::new(addr(7000));
    trust.set_gossip_interval(300);
    let claim = |value: &str| {
        GossipMessage::Ack {
            delta: vec![node_delta(
                "mallory",
                1,
                7009,
                &[("status", "up"), (crate::keys::ALERTER_PRIORITY, value)],
            )],
        }
        .encode()
    };
    // No grant (the default certificate): the grab is cut to 0 and reported.
    let max = i64::MAX.to_string();
    let a = trust
        .inbound(Sender::new("mallory", addr(7009)), &claim(&max), 0)
        .unwrap();
    assert_eq!(priorities(&a.payload), vec!["0"]);
    assert_eq!(a.overclaimed, Some((max.clone(), 0)));
    // A grant of 10 lets the node claim 10, or less, but not more.
    let granted = |cap| Sender {
        alerter_priority_cap: cap,
        ..Sender::new("mallory", addr(7009))
    };
    for (value, cap, held, reported) in [
        ("10", 10, "10", false),
        ("-5", 10, "-5", false),
        ("11", 10, "10", true),
        ("-5", 0, "-5", false),
        // Not a number: read as 0 everywhere, so written as the number it counts as.
        ("lots", 10, "0", false),
        ("lots", -1, "-1", true),
    ] {
        let a = trust.inbound(granted(cap), &claim(value), 0).unwrap();
        assert_eq!(priorities(&a.payload), vec![held], "{value} under {cap}");
        assert_eq!(a.overclaimed.is_some(), reported, "{value} under {cap}");
    }
    // Other keys with a number in them are not touched.
    let other = GossipMessage::Ack {
        delta: vec![node_delta("mallory", 1, 7009, &[("reach", "99")])],
    };
    let a = trust
        .inbound(Sender::new("mallory", addr(7009)), &other.encode(), 0)
        .unwrap();
    assert_eq!(GossipMessage::parse(&a.payload).unwrap(), other);
}
