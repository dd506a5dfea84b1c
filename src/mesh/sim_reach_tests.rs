//! What every node sees, simulated: the hop limit, short-lived nodes that are reachable
//! but never relays, work types, and `SyncDone` only after a complete database. Part of
//! `sim_tests` (uses its `Sim`).

use super::*;

#[test]
fn the_hop_limit_excludes_farther_nodes() {
    let mut s = Sim::with(5, 2, &[]);
    for i in 0..4 {
        s.connect(i, i + 1, 1.0);
    }
    assert_eq!(s.route(0, 1), s.hop(1, 1));
    assert_eq!(s.route(0, 2), s.hop(1, 2));
    assert_eq!(s.route(0, 3), None, "3 hops with max_hops = 2");
    assert_eq!(s.route(0, 4), None);
    assert_eq!(s.route(2, 0), s.hop(1, 2));
    assert_eq!(s.route(2, 4), s.hop(3, 2));
    assert!(s.knows(0, 4), "out of range is not unknown");
    // A shortcut brings 4 within range.
    s.connect(0, 3, 1.0);
    assert_eq!(s.route(0, 4), s.hop(3, 2));
}

#[test]
fn ephemeral_nodes_are_reachable_but_never_relays() {
    // 0 -1- E -1- 2 is short but E is ephemeral; 0 -5- 3 -5- 2 must be used.
    let mut s = Sim::with(4, 30, &[1]);
    s.connect(0, 1, 1.0);
    s.connect(1, 2, 1.0);
    s.connect(0, 3, 5.0);
    s.connect(3, 2, 5.0);
    assert_eq!(s.route(0, 1), s.hop(1, 1), "an ephemeral node is reachable");
    assert_eq!(s.route(3, 1), s.hop(0, 2), "also from afar");
    assert_eq!(s.route(0, 2), s.hop(3, 2), "but never a relay");
    assert_eq!(s.route(1, 3), s.hop(0, 2), "it routes through others itself");
    s.assert_converged("ephemeral");
    s.cut(0, 3);
    assert_eq!(s.route(0, 2), None);
    assert_eq!(s.route(0, 3), None);
    assert_eq!(s.route(0, 1), s.hop(1, 1));
    s.assert_converged("ephemeral cut");
}

#[test]
fn work_types_are_visible_everywhere() {
    let mut s = Sim::new(4);
    for i in 0..3 {
        s.connect(i, i + 1, 1.0);
    }
    s.set_work(3, vec![wt("echo", "2"), wt("cat", "1")]);
    s.set_work(0, vec![wt("ansible_runner", "2.4")]);
    s.assert_converged("work set");
    let seen = s.nodes[0].known().into_iter().find(|l| l.origin == s.id(3)).expect("n03 known");
    assert_eq!(seen.work_types, vec![wt("cat", "1"), wt("echo", "2")]);
    s.set_work(3, vec![wt("cat", "1")]);
    s.assert_converged("work changed");
    s.set_work(3, Vec::new());
    s.assert_converged("work cleared");
    // A node joining later learns them in the initial sync.
    let late = s.add("late", None, false, 30);
    s.connect(late, 2, 1.0);
    s.assert_converged("late joiner");
}

#[test]
fn sync_done_follows_a_complete_database() {
    let mut s = Sim::new(5);
    for i in 0..4 {
        s.connect(i, i + 1, 1.0);
    }
    let client = s.add("client", None, true, 30);
    let d = s.dial(client, 2, 1.0, 1.0);
    s.answer(d, true);
    s.answer(d, false);
    assert!(s.establish(d));
    s.settle();
    assert_eq!(s.synced.get(&(client, d.la)), Some(&(6, 5)), "at SyncDone: everything known and routable");
    assert!(s.synced.contains_key(&(2, d.lb)));
}
