//! Who is who, simulated: one link per pair of nodes whatever the order of simultaneous
//! dials, one live node per ID (own ID refused, twins, a restart meeting stale copies of
//! itself). Part of `sim_tests` (uses its `Sim`).

use super::*;

#[test]
fn simultaneous_dials_keep_exactly_one_link_in_every_interleaving() {
    // Events: 0 answers p, 1 answers p, 0 answers q, 1 answers q, p comes up, q comes up,
    // where p is dialed by 0 and q by 1. Every order respecting "answers before up".
    let events = ["0p", "1p", "0q", "1q", "Up", "Uq"];
    let mut orders = 0;
    for perm in permutations(6) {
        let pos = |e: &str| perm.iter().position(|&i| events[i] == e).expect("event");
        if pos("Up") < pos("0p").max(pos("1p")) || pos("Uq") < pos("0q").max(pos("1q")) {
            continue;
        }
        orders += 1;
        let mut s = Sim::new(2);
        let p = s.dial(0, 1, 1.0, 1.0);
        let q = s.dial(1, 0, 1.0, 1.0);
        for &e in &perm {
            match events[e] {
                "0p" => s.answer(p, true),
                "1p" => s.answer(p, false),
                "0q" => s.answer(q, false),
                "1q" => s.answer(q, true),
                "Up" => drop(s.establish(p)),
                _ => drop(s.establish(q)),
            }
            s.settle();
        }
        let kept = s.wires_between(0, 1);
        let order: Vec<&str> = perm.iter().map(|&i| events[i]).collect();
        assert_eq!(kept.len(), 1, "order {order:?}: connections {kept:?}");
        assert_eq!(kept[0], (p.la, p.lb), "order {order:?}: both keep the link dialed by n00");
        assert_eq!(s.nodes[0].link_peer(p.la), Some(&s.id(1)));
        assert_eq!(s.nodes[1].link_peer(p.lb), Some(&s.id(0)));
        assert_eq!(s.nodes[0].link_peer(q.lb), None);
        assert_eq!(s.nodes[1].link_peer(q.la), None);
        s.assert_converged(&format!("{order:?}"));
    }
    assert_eq!(orders, 720 / 9, "interleavings tried");
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn a_peer_announcing_our_own_id_is_rejected() {
    let mut s = Sim::new(2);
    s.connect(0, 1, 1.0);
    let twin = s.add("n00", Some(7), false, 30);
    let d = s.dial(twin, 0, 1.0, 1.0);
    s.answer(d, false);
    assert!(matches!(&s.verdicts[&(0, d.lb)], Admission::Reject(r) if r.contains("own id")));
    s.answer(d, true);
    assert!(!s.establish(d));
    s.settle();
    assert!(s.wires_between(twin, 0).is_empty());
    assert_eq!(s.route(1, 0), s.hop(0, 1), "the real n00 is undisturbed");
    assert_eq!(s.nodes[1].known().iter().filter(|l| l.origin == s.id(0)).count(), 1);
    assert_eq!(s.known_epoch(1, 0), Some(s.nodes[0].epoch()));
}

#[test]
fn a_second_live_node_with_a_used_id_is_refused_while_the_first_is_reachable() {
    let mut s = Sim::new(3);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    let old_epoch = s.nodes[2].epoch();
    let dup = s.add("n02", None, false, 30);
    assert!(!s.connect(dup, 0, 1.0), "admitted a second live n02");
    assert!(!s.connect(0, dup, 1.0), "admitted a second live n02 (dialing it)");
    assert!(s.wires.keys().all(|(i, _)| *i != dup));
    assert_eq!(s.known_epoch(0, 2), Some(old_epoch));
    assert_eq!(s.route(0, 2), s.hop(1, 2));
    // The first one dies: the newcomer is now a restart, and is admitted at once.
    s.stopped[2] = true;
    s.isolate(2);
    assert!(s.connect(dup, 0, 1.0), "a restarted node refused");
    assert_eq!(s.route(1, 2), s.hop(0, 2), "n02 is now the newcomer, behind n00");
    assert!((0..2).all(|i| s.known_epoch(i, 2) == Some(s.nodes[dup].epoch())));
    s.advance(REFRESH * 2);
    assert_eq!(s.duplicate_self[dup], None, "the restarted node took its own old advert for a twin");
}

#[test]
fn twins_meeting_after_a_partition_the_older_keeps_the_id() {
    // Halves {n00, dup@100} and {n01, dup@200} both run, then get joined.
    let mut s = Sim::new(2);
    let older = s.add("dup", Some(100), false, 30);
    let newer = s.add("dup", Some(200), false, 30);
    s.connect(0, older, 1.0);
    s.connect(1, newer, 1.0);
    s.advance(Duration::from_secs(25));
    assert!(s.connect(0, 1, 1.0));
    s.advance(NODE_TIMEOUT + REFRESH * 2);
    let dup = s.id(older);
    for i in [0, 1] {
        assert_eq!(s.known_epoch(i, older), Some(100), "{i} holds the newer twin");
        assert!(s.nodes[i].route(&dup).is_some(), "{i} lost the id altogether");
    }
    assert_eq!(s.route(1, older), s.hop(0, 2), "n01 reaches the older dup through n00");
    assert!(s.wires.keys().all(|(i, _)| *i != newer), "the newer twin is still linked");
    assert!(!s.connect(newer, 1, 1.0), "the newer twin was let back in");
    assert_eq!(s.duplicate_self[older], None, "the older twin was told to stop");
}

/// X (0) is a star's centre with leaves A, B, C (1–3); its links to A then B drop, so A, B
/// and C hold old advertisements of X with seqs s, s+1, s+2. Then X restarts.
fn star_with_stale_copies() -> Sim {
    let mut s = Sim::new(5);
    for leaf in 1..=3 {
        s.connect(0, leaf, 1.0);
    }
    s.advance(Duration::from_secs(25));
    s.cut(0, 1);
    s.cut(0, 2);
    let seq = |s: &Sim, i: usize| s.nodes[i].held(&s.id(0)).map(|l| l.seq);
    assert!(seq(&s, 1) < seq(&s, 2) && seq(&s, 2) < seq(&s, 3), "stale copies differ");
    s.restart(0);
    s
}

#[test]
fn a_restarted_node_meeting_stale_copies_of_itself_does_not_think_it_has_a_twin() {
    // The new X meets the copies in increasing seq order, several seconds apart. (As of
    // this writing `tick` clears a node's evidence about its own ID, so `DuplicateSelf`
    // cannot fire at all; this guards the restart case for when that changes.)
    let mut s = star_with_stale_copies();
    for leaf in 1..=3 {
        assert!(s.connect(0, leaf, 1.0));
        s.advance(REFRESH);
    }
    assert_eq!(s.duplicate_self[0], None, "the restarted node was told to stop");
    s.assert_converged("restarted star");
}

#[test]
fn a_restart_is_not_banned_when_merging_partitions_bring_stale_copies() {
    // N (4) learns the new X first, then merges with A, B and C in turn: each brings a
    // higher seq of the dead incarnation.
    let mut s = star_with_stale_copies();
    assert!(s.connect(4, 0, 1.0));
    for leaf in 1..=3 {
        s.advance(REFRESH);
        assert!(s.connect(4, leaf, 1.0));
        assert_eq!(s.known_epoch(4, 0), Some(s.nodes[0].epoch()), "N dropped the restarted X");
        assert_eq!(s.route(4, 0), s.hop(0, 1), "N banned the restarted X");
    }
    s.assert_converged("merged");
    s.advance(NODE_TIMEOUT);
    s.assert_converged("merged, later");
}
