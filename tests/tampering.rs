//! A relay that tampers with a protected stream ends the run loudly, and an honest reroute
//! does not: every kind of tampering (flip, drop, duplicate, reorder, inject, cut, withhold
//! the rest) makes the remote work unit fail for good after `limits.integrity_attempts`
//! with a reason that names it and the path; a link on the path going down mid-stream, with another path
//! there, is a link failure that is retried and the unit completes.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::pki::Pki;
use common::relay::{FakeRelay, Rewrite};
use common::*;
use receptord::mesh::origin::CertSigner;
use receptord::wire::{Body, Routed, Side};

const FLIP: u8 = 1;
const DROP: u8 = 2;
const DUPLICATE: u8 = 3;
const REORDER: u8 = 4;
const INJECT: u8 = 5;
const CUT: u8 = 6;
const WITHHOLD: u8 = 7;

/// Past the end-to-end handshake of every stream beta sends back (a work unit's results:
/// its first `skip` bytes and data frames), tampers once per stream in the way `mode` says.
fn tamperer(mode: Arc<AtomicU8>, (skip, frames): (u64, usize)) -> Rewrite {
    let held: Mutex<HashMap<u64, Routed>> = Mutex::new(HashMap::new());
    let done: Mutex<HashSet<u64>> = Mutex::new(HashSet::new());
    let seen: Mutex<HashMap<u64, usize>> = Mutex::new(HashMap::new());
    // Streams whose rest (their end included) the relay swallows.
    let withheld: Mutex<HashSet<u64>> = Mutex::new(HashSet::new());
    Arc::new(move |mut r: Routed| {
        let (stream, offset) = match &r.body {
            Body::Data { stream, from: Side::Acceptor, offset, .. } => (*stream, Some(*offset)),
            Body::Fin { stream, from: Side::Acceptor, .. } => (*stream, None),
            _ => return vec![r],
        };
        if withheld.lock().expect("withheld").contains(&stream) {
            return Vec::new();
        }
        let Some(offset) = offset else { return vec![r] };
        let n = {
            let mut seen = seen.lock().expect("seen");
            let n = seen.entry(stream).or_insert(0);
            *n += 1;
            *n
        };
        if offset < skip || n <= frames {
            return vec![r];
        }
        let mut held = held.lock().expect("held");
        if let Some(first) = held.remove(&stream) {
            // REORDER: the held frame goes after the one that followed it.
            return vec![r, first];
        }
        if !done.lock().expect("done").insert(stream) {
            return vec![r];
        }
        match mode.load(Ordering::Relaxed) {
            FLIP => {
                if let Body::Data { data, .. } = &mut r.body {
                    let mut bytes = data.to_vec();
                    bytes[0] ^= 0x80;
                    *data = Bytes::from(bytes);
                }
                vec![r]
            }
            DROP => Vec::new(),
            DUPLICATE => vec![r.clone(), r],
            REORDER => {
                held.insert(stream, r);
                Vec::new()
            }
            INJECT => {
                let mut junk = r.clone();
                junk.body = Body::Data {
                    stream,
                    from: Side::Acceptor,
                    offset,
                    data: Bytes::from_static(b"not a sealed record, injected by the relay"),
                };
                vec![junk, r]
            }
            CUT => {
                r.body = Body::Fin { stream, from: Side::Acceptor, trailer: Bytes::new() };
                vec![r]
            }
            WITHHOLD => {
                withheld.lock().expect("withheld").insert(stream);
                Vec::new()
            }
            _ => vec![r],
        }
    })
}

const MARKER: &[u8] = b"PLAYBOOK-OUTPUT ";

fn payload() -> Vec<u8> {
    MARKER.iter().copied().cycle().take(300 * 1024).collect()
}

/// Runs `receptorctl work submit cat --node beta -p FILE -f` on `sock`; returns its output
/// once it ends (panics, listing the units, if it has not within a minute).
fn follow(sock: &std::path::Path, file: &std::path::Path, what: &str) -> std::process::Output {
    let mut follower = Command::new(venv_bin().join("receptorctl"));
    follower.env("PATH", path_with_venv()).arg("--socket").arg(sock);
    follower.args(["work", "submit", "cat", "--node", "beta", "-p", file.to_str().expect("utf8"), "-f"]);
    // Read while it runs (a full pipe would stop it), and wait a bounded time.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(follower.output().expect("receptorctl")));
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        let list = receptorctl(sock, &["work", "list"]);
        panic!("{what}: the follower did not end; units {}", String::from_utf8_lossy(&list.stdout))
    })
}

fn units(sock: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    let list = receptorctl(sock, &["work", "list"]);
    let units: serde_json::Value = serde_json::from_slice(&list.stdout).expect("work list JSON");
    units.as_object().expect("units").clone()
}

#[test]
fn every_kind_of_tampering_by_a_relay_fails_the_unit_for_good_and_says_so() {
    let pki = Pki::new();
    for n in ["alpha", "beta", "mallory"] {
        pki.issue(n, n);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("alpha", dir.path());
    let (beta_ctl, beta_sock) = with_socket("beta", dir.path());
    let alpha = Daemon::start(
        Spec::new("alpha")
            .extra(&pki.tls_toml("alpha", ""))
            .extra(FAST_MESH)
            .extra(&ctl)
            .extra("[limits]\nintegrity_attempts = 2"),
    );
    let beta = Daemon::start(
        Spec::new("beta").extra(&pki.tls_toml("beta", "")).extra(FAST_MESH).extra(CAT).extra(&beta_ctl),
    );
    let mode = Arc::new(AtomicU8::new(0));
    let signer = Some(CertSigner::new(pki.context("mallory")));
    let _relay = FakeRelay::start_rewriting(
        "mallory",
        ("alpha", alpha.port),
        ("beta", beta.port),
        signer,
        tamperer(mode.clone(), (16 * 1024, 0)),
    );
    wait_route(&alpha, "beta");
    let data = payload();
    let file = pki.path("payload");
    std::fs::write(&file, &data).expect("write payload");

    // (mode, what the reason must say: proof, or a failure on a path that did not change)
    let cases = [
        ("flip", FLIP, "integrity check failed"),
        ("drop", DROP, "the path did not change"),
        ("duplicate", DUPLICATE, "repeated in transit"),
        ("reorder", REORDER, "the path did not change"),
        ("inject", INJECT, "integrity check failed"),
        ("cut", CUT, "the path did not change"),
        // The stream never ends: the remote unit is complete and bytes are missing.
        ("withhold", WITHHOLD, "the results stream stalled"),
    ];
    let mut seen = HashSet::new();
    for (name, m, says) in cases {
        mode.store(m, Ordering::Relaxed);
        let out = follow(&sock, &file, name);
        assert!(data.starts_with(&out.stdout), "{name}: the follower got altered bytes");
        assert!(
            !out.status.success(),
            "{name}: the follower reports the failure; it got {} of {} bytes, stderr {:?}; units on alpha {:#?}, on beta {:#?}; alpha's remote-unit log:\n{}",
            out.stdout.len(),
            data.len(),
            String::from_utf8_lossy(&out.stderr),
            units(&sock),
            units(&beta_sock),
            alpha.log().lines().filter(|l| l.contains("remote work unit")).collect::<Vec<_>>().join("\n"),
        );
        let all = units(&sock);
        let (id, unit) = all
            .iter()
            .find(|(id, u)| !seen.contains(*id) && u["State"] == 3)
            .unwrap_or_else(|| panic!("{name}: no unit failed: {all:#?}"));
        seen.insert(id.clone());
        let detail = unit["Detail"].as_str().expect("detail");
        assert!(detail.contains("tampering in transit"), "{name}: {detail}");
        assert!(detail.contains(says), "{name}: {detail}");
        assert!(!detail.contains("a link failed"), "{name}: not blamed on a link: {detail}");
        // (The fake relay does not answer traceroute probes: the path shows the hops that do.)
        assert!(detail.contains("on the path alpha → "), "{name}: the path is named: {detail}");
        assert!(detail.contains("2 times in a row"), "{name}: {detail}");
        let _ = receptorctl(&sock, &["work", "release", id]);
    }
    // Nothing left running on beta for the failed runs: their units were released there.
    wait_until("beta released the remote units", Duration::from_secs(30), || units(&beta_sock).is_empty());
}

/// Streams ~6 MiB slowly, so a link can go down mid-stream.
const SLOW: &str = "[[work.command]]\nname = \"slow\"\nprogram = \"sh\"\n\
    args = [\"-c\", \"i=0; while [ $i -lt 96 ]; do head -c 65536 /dev/zero | tr '\\\\0' x; sleep 0.05; i=$((i+1)); done\"]\n";

#[test]
fn a_link_going_down_mid_stream_with_another_path_is_not_tampering_and_the_unit_completes() {
    let pki = Pki::new();
    for n in ["alpha", "beta", "hub1", "hub2"] {
        pki.issue(n, n);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, sock) = with_socket("alpha", dir.path());
    let mut hub1 = Daemon::start(Spec::new("hub1").extra(&pki.tls_toml("hub1", "")).extra(FAST_MESH));
    let mut hub2 = Daemon::start(Spec::new("hub2").extra(&pki.tls_toml("hub2", "")).extra(FAST_MESH));
    let alpha = Daemon::start(
        Spec::new("alpha")
            .peer(hub1.port)
            .peer(hub2.port)
            .extra(&pki.tls_toml("alpha", ""))
            .extra(FAST_MESH)
            .extra(&ctl)
            .extra("[limits]\nintegrity_attempts = 1"),
    );
    let _beta = Daemon::start(
        Spec::new("beta")
            .peer(hub1.port)
            .peer(hub2.port)
            .extra(&pki.tls_toml("beta", ""))
            .extra(FAST_MESH)
            .extra(SLOW),
    );
    wait_route(&alpha, "beta");
    let submit = receptorctl(&sock, &["work", "submit", "slow", "--node", "beta", "--no-payload"]);
    assert!(submit.status.success(), "submit: {}", stderr(&submit));
    let id = stdout(&submit)
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no unit id: {}", stdout(&submit)));
    // Once output flows, kill the hub it flows through.
    wait_until("output flowing", Duration::from_secs(30), || {
        units(&sock)[&id]["StdoutSize"].as_u64().is_some_and(|n| n > 512 * 1024)
    });
    // Frozen, it swallows the frames in flight until both ends declare its links down
    // (`idle_timeout`) and route around it: a gap in the stream, from an honest reroute.
    let route = stdout(&receptor(&alpha, &["traceroute", "beta"]));
    let hub = if route.contains("hub1") { &mut hub1 } else { &mut hub2 };
    hub.freeze(true);
    let out = follow_results(&sock, &id);
    let unit = &units(&sock)[&id];
    let detail = unit["Detail"].as_str().unwrap_or_default().to_owned();
    assert_eq!(unit["State"], 2, "the unit completed: {detail}");
    assert!(!detail.contains("tampering"), "{detail}");
    assert_eq!(out.len(), 96 * 65536, "every byte arrived once");
    assert!(out.iter().all(|b| *b == b'x'), "unaltered");
}

fn follow_results(sock: &std::path::Path, id: &str) -> Vec<u8> {
    let mut cmd = Command::new(venv_bin().join("receptorctl"));
    cmd.env("PATH", path_with_venv()).arg("--socket").arg(sock).args(["work", "results", id]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(cmd.output().expect("receptorctl")));
    let out = rx.recv_timeout(Duration::from_secs(90)).expect("results ended");
    out.stdout
}

/// `receptor run` through a relay that flips a byte of every stream it carries back: the
/// run ends after `limits.integrity_attempts` (3 by default) with exit status 1 and says
/// tampering, with the path.
#[test]
fn receptor_run_through_a_tampering_relay_exits_non_zero_and_says_so() {
    let pki = Pki::new();
    for n in ["alpha", "beta", "mallory", "ctl"] {
        pki.issue(n, n);
    }
    let alpha = Daemon::start(Spec::new("alpha").extra(&pki.tls_toml("alpha", "")).extra(FAST_MESH));
    let beta =
        Daemon::start(Spec::new("beta").extra(&pki.tls_toml("beta", "")).extra(FAST_MESH).with_ansible());
    let mode = Arc::new(AtomicU8::new(0));
    let signer = Some(CertSigner::new(pki.context("mallory")));
    // Past the handshake (the acceptor's first two frames): every stream's first records.
    let _relay = FakeRelay::start_rewriting(
        "mallory",
        ("alpha", alpha.port),
        ("beta", beta.port),
        signer,
        tamperer(mode.clone(), (0, 2)),
    );
    wait_route(&alpha, "beta");
    mode.store(FLIP, Ordering::Relaxed);
    let pdd = common::playbooks::make_pdd(common::playbooks::PLAY);
    let mut cmd = receptor_cmd(&alpha);
    cmd.env("PATH", path_without_venv()).args(pki.client_args("ctl"));
    cmd.arg("run").arg(pdd.path()).args(["-p", "test.yml", "--via-receptor", "beta", "-i", "t1"]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(cmd.output().expect("receptor")));
    let out = rx.recv_timeout(Duration::from_secs(120)).expect("receptor run ended");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tampering in transit"), "{err}");
    assert!(err.contains("on the path"), "{err}");
    assert!(err.contains("3 times in a row"), "{err}");
}
