//! `systemctl reload` (SIGHUP) on real daemons: listeners and peers are added and removed
//! one by one while every other link stays up; a port that cannot be bound is reported
//! and skipped; keys only a restart applies are named.

mod common;

use std::time::Duration;

use common::*;

fn hup(d: &Daemon) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), nix::sys::signal::SIGHUP)
        .expect("SIGHUP");
}

/// Rewrites `d`'s config, sends SIGHUP and waits for the `n`th "reload: done".
fn reload(d: &Daemon, text: &str, n: usize) {
    std::fs::write(d.dir.path().join("receptor.toml"), text).expect("write config");
    hup(d);
    wait_until(&format!("reload {n} of {}", d.id), Duration::from_secs(15), || {
        d.log().matches("reload: done").count() >= n
    });
}

/// Log lines of `d` saying its link to `peer` went `what` ("up" or "down").
fn link_events(d: &Daemon, peer: &str, what: &str) -> usize {
    let needle = format!("link {what}");
    d.log().lines().filter(|l| l.contains(&needle) && l.contains(&format!("peer={peer}"))).count()
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn reload_adds_and_removes_listeners_and_peers_without_dropping_other_links() {
    let hub = Daemon::start(Spec::new("rl-hub").extra(FAST_MESH));
    let b = Daemon::start(Spec::new("rl-b").peer(hub.port).extra(FAST_MESH));
    let c = Daemon::start(Spec::new("rl-c").extra(FAST_MESH));
    wait_route(&b, "rl-hub");
    let base = std::fs::read_to_string(hub.dir.path().join("receptor.toml")).expect("config");

    // Add a listener and a peer.
    let port2 = free_port();
    let with_more = format!(
        "{base}[[listeners]]\nurl = \"receptor://127.0.0.1:{port2}\"\n[[peers]]\nurl = \"{}\"\n",
        c.peer_url()
    );
    reload(&hub, &with_more, 1);
    wait_route(&c, "rl-hub");
    let d = Daemon::start(Spec::new("rl-d").peer(port2).extra(FAST_MESH));
    wait_route(&d, "rl-hub");
    wait_route(&d, "rl-b");

    // Remove both again: the links they carried end, the others stay.
    reload(&hub, &base, 2);
    wait_until("link to rl-c dropped", Duration::from_secs(15), || link_events(&hub, "rl-c", "down") >= 1);
    wait_until("link to rl-d dropped", Duration::from_secs(15), || link_events(&hub, "rl-d", "down") >= 1);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port2)).is_err(),
        "the removed listener still accepts connections"
    );
    wait_route(&b, "rl-hub");
    assert_eq!(link_events(&hub, "rl-b", "down"), 0, "the link to rl-b was dropped:\n{}", hub.log());
    assert_eq!(link_events(&hub, "rl-b", "up"), 1, "the link to rl-b was remade:\n{}", hub.log());
    // rl-d keeps redialing the port nobody listens on any more: it never links again.
    assert_eq!(link_events(&hub, "rl-d", "up"), 1, "{}", hub.log());
    drop(d);

    // Hostile input: a port held by someone else is reported and skipped; keys that only a
    // restart applies are named; the running links are untouched.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let bad = format!(
        "{}[[listeners]]\nurl = \"receptor://127.0.0.1:{taken_port}\"\n",
        base.replace("node_timeout = \"6s\"", "node_timeout = \"7s\"")
    );
    reload(&hub, &bad, 3);
    hub.wait_log(&format!("(receptor://127.0.0.1:{taken_port}) not started"), Duration::from_secs(5));
    hub.wait_log("[mesh] changed; these keys take effect only on restart", Duration::from_secs(5));
    wait_route(&b, "rl-hub");
    assert_eq!(link_events(&hub, "rl-b", "down"), 0, "{}", hub.log());
    drop(taken);
}
