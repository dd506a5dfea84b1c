//! Signed origins (issue 10): a member of the mesh — here a hostile node holding a real
//! certificate from the mesh's CA — cannot make another node unreachable by advertising
//! on its behalf. Every forgery is dropped before the link-state database, a ping loop
//! to the victim across the mesh never fails while they arrive, and the link that
//! carried them is closed past `limits.forged_adverts_to_close`. In a plain-TCP mesh a
//! leaf (client) link may only carry its own advertisement.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hostile::*;
use common::*;
use receptord::certs::{self, KeyType, Subject};
use receptord::mesh::origin::CertSigner;
use receptord::mesh::{Node, NodeOptions};
use receptord::transport::{PeerUrl, TlsContext, TlsSettings};
use receptord::wire::{Frame, Lsa, caps};

/// A CA and node certificates in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(nodes: &[&str]) -> Pki {
        let pki = Pki { dir: tempfile::tempdir().expect("tempdir") };
        let (crt, key) = certs::init_ca("test CA", 30, KeyType::EcdsaP256).expect("ca");
        std::fs::write(pki.file("ca.crt"), crt).expect("write");
        std::fs::write(pki.file("ca.key"), key).expect("write");
        for n in nodes {
            let subject = Subject { node_ids: vec![(*n).into()], ..Subject::default() };
            let (crt, key) =
                certs::issue(&pki.file("ca.crt"), &pki.file("ca.key"), &subject, 30).expect("issue");
            std::fs::write(pki.file(&format!("{n}.crt")), crt).expect("write");
            std::fs::write(pki.file(&format!("{n}.key")), key).expect("write");
        }
        pki
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn toml(&self, node: &str) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n",
            self.file(&format!("{node}.crt")).display(),
            self.file(&format!("{node}.key")).display(),
            self.file("ca.crt").display()
        )
    }

    fn context(&self, node: &str) -> TlsContext {
        let settings = TlsSettings {
            cert: self.file(&format!("{node}.crt")),
            key: self.file(&format!("{node}.key")),
            ca: vec![self.file("ca.crt")],
            require_client_cert: true,
            pinned: Vec::new(),
            min_tls13: false,
            skip_node_id_check: false,
        };
        TlsContext::load(settings, node).expect("tls material")
    }

    fn fake(&self, node: &str) -> FakeTls {
        FakeTls::new(&self.file(&format!("{node}.crt")), &self.file(&format!("{node}.key")))
    }
}

fn daemon(id: &str, pki: Option<&Pki>, peers: &[u16], extra: &str) -> Daemon {
    let mut spec = Spec::new(id).extra(FAST_MESH).extra(extra);
    if let Some(pki) = pki {
        spec = spec.extra(&pki.toml(id));
        spec.tls = true;
    }
    for p in peers {
        spec = spec.peer(*p);
    }
    Daemon::start(spec)
}

/// A client node joined through `entry` pinging `target` every 50 ms until stopped.
struct PingLoop {
    ok: Arc<AtomicU32>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PingLoop {
    fn start(entry: &Daemon, target: &str, tls: Option<TlsContext>) -> PingLoop {
        PingLoop::start_as("pinger", entry, target, tls)
    }

    /// As [`PingLoop::start`], with the client named `name`.
    fn start_as(name: &str, entry: &Daemon, target: &str, tls: Option<TlsContext>) -> PingLoop {
        let name = node(name);
        let scheme = if tls.is_some() { "receptors" } else { "receptor" };
        let url: PeerUrl = format!("{scheme}://127.0.0.1:{}", entry.port).parse().expect("url");
        let target = node(target);
        let (ok, stop) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicBool::new(false)));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (ok2, stop2, failures2) = (ok.clone(), stop.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let mut opts = NodeOptions::new(name);
                opts.ephemeral = true;
                opts.tls = tls;
                let client = Node::start(opts);
                client.join(&url, Duration::from_secs(10)).await.expect("join");
                // Until the first reply, the route may still be converging.
                let mut started = false;
                while !stop2.load(Ordering::Relaxed) {
                    match client.ping(&target, Duration::from_secs(1)).await {
                        Ok(_) => {
                            started = true;
                            ok2.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if started => failures2.lock().expect("lock").push(e.to_string()),
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                client.shutdown(Duration::from_secs(1)).await;
            })
        });
        PingLoop { ok, failures, stop, thread: Some(thread) }
    }

    /// Waits for `n` more replies; fails at the first failed ping.
    fn more(&self, n: u32) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        wait_until("ping replies", Duration::from_secs(30), || {
            let failures = self.failures.lock().expect("lock");
            assert!(failures.is_empty(), "the victim became unreachable: {failures:?}");
            self.ok.load(Ordering::Relaxed) >= target
        });
    }

    /// Stops the loop; the failures after its first reply.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("running").join().expect("ping loop");
        std::mem::take(&mut *self.failures.lock().expect("lock"))
    }
}

/// The daemon's `/metrics` (curl, a real HTTP client).
fn scrape(d: &Daemon) -> String {
    let port = metrics_port(d);
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The victim's advertisement as the hub sent it on link-up (its database sync).
fn genuine(peer: &mut FakePeer, victim: &str) -> Lsa {
    peer.recv_until(Duration::from_secs(10), |f| match f {
        Frame::Lsa(l) if l.origin.as_str() == victim => Some(l),
        _ => None,
    })
    .expect("the victim's advertisement in the hub's database")
}

/// "The victim left", from a newer incarnation: what made it unreachable before.
fn left(genuine: &Lsa) -> Lsa {
    Lsa {
        epoch: genuine.epoch + 1,
        seq: 1,
        leaving: true,
        neighbors: Vec::new(),
        work_types: Vec::new(),
        sig: None,
        ..genuine.clone()
    }
}

#[test]
fn forged_advertisements_for_another_node_are_dropped_and_close_the_link() {
    let pki = Pki::new(&["hub", "victim", "far", "mallory", "pinger"]);
    let extra = "[limits]\nforged_adverts_to_close = 8\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let hub = daemon("hub", Some(&pki), &[], extra);
    let _victim = daemon("victim", Some(&pki), &[hub.port], "");
    let far = daemon("far", Some(&pki), &[hub.port], "");
    // far → hub → victim, two hops from the client that joins far.
    let pings = PingLoop::start(&far, "victim", Some(pki.context("pinger")));
    pings.more(3);

    let mut mallory = FakePeer::try_join_tls(hub.port, "mallory", &pki.fake("mallory")).expect("join");
    let genuine = genuine(&mut mallory, "victim");
    assert!(genuine.sig.is_some(), "the hub relays the victim's signed advertisement");
    let own = CertSigner::new(pki.context("mallory"));
    let signed_by_mallory = |mut l: Lsa| {
        l.sig = Some(own.signature(&l).expect("sign"));
        l
    };
    let forgeries: Vec<(&str, Lsa)> = vec![
        ("unsigned, newer epoch, leaving", left(&genuine)),
        (
            "unsigned, same epoch, later seq, no links",
            Lsa { seq: genuine.seq + 100, neighbors: Vec::new(), sig: None, ..genuine.clone() },
        ),
        (
            "the victim's own signature over changed fields",
            Lsa { sig: genuine.sig.clone(), ..left(&genuine) },
        ),
        ("signed with the attacker's own valid certificate", signed_by_mallory(left(&genuine))),
    ];
    for round in 0..2 {
        for (what, lsa) in &forgeries {
            if mallory.send(&Frame::Lsa(lsa.clone())).is_err() {
                panic!("round {round}, {what}: the link closed before the threshold");
            }
        }
        // Each batch has had time to reach (and not move) the database.
        pings.more(10);
    }
    let goodbye = mallory.recv_until(Duration::from_secs(10), |f| match f {
        Frame::Goodbye { reason } => Some(reason.into_string()),
        _ => None,
    });
    assert!(
        goodbye.as_deref().is_some_and(|r| r.contains("forged advertisements")),
        "the hub closes the link past limits.forged_adverts_to_close: {goodbye:?}"
    );
    hub.wait_log("advertisement dropped", Duration::from_secs(5));
    assert!(hub.log().contains("mallory"), "the log names the link's peer");
    let metrics = scrape(&hub);
    for reason in ["unsigned", "forged"] {
        let series = format!("receptor_routing_adverts_dropped_total{{reason=\"{reason}\"}} ");
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
        assert!(n >= 2.0, "{series}{n}");
    }
    pings.more(3);
    let failures = pings.finish();
    assert!(failures.is_empty(), "the victim became unreachable: {failures:?}");
}

#[test]
fn a_leaf_link_in_a_plain_tcp_mesh_carries_only_its_own_advertisement() {
    let hub = daemon("hub", None, &[], "");
    let _victim = daemon("victim", None, &[hub.port], "");
    let far = daemon("far", None, &[hub.port], "");
    let pings = PingLoop::start(&far, "victim", None);
    pings.more(3);

    let mut leaf =
        FakePeer::try_join_caps(hub.port, "sneaky-client", caps::STREAMS | caps::EPHEMERAL).expect("join");
    let genuine = genuine(&mut leaf, "victim");
    for i in 0..5 {
        let mut forged = left(&genuine);
        forged.epoch += i;
        leaf.send(&Frame::Lsa(forged)).expect("the hub keeps the link (only dropped, not charged)");
    }
    pings.more(10);
    hub.wait_log("which is not a relay, carried an advertisement of victim", Duration::from_secs(5));
    let failures = pings.finish();
    assert!(failures.is_empty(), "the victim became unreachable: {failures:?}");
}

/// "I am a relay, nearly free from each of you": `me`'s own advertisement, signed with its
/// own key when it has one, with cost-0.001 links to both hubs and no leaf or client flag.
fn relay_claim(me: &str, hubs: [&str; 2], seq: u64, signer: Option<&CertSigner>) -> Lsa {
    let mut lsa = Lsa {
        origin: node(me),
        epoch: 1,
        seq,
        leaving: false,
        ephemeral: false,
        leaf: false,
        neighbors: hubs.iter().map(|h| (node(h), 0.001)).collect(),
        relay_marks: false,
        work_types: Vec::new(),
        sig: None,
    };
    if let Some(signer) = signer {
        lsa.sig = Some(signer.signature(&lsa).expect("sign"));
    }
    lsa
}

/// Two TLS hubs (also taking peers without a certificate, which may only use temporary
/// client IDs), `extra` in their config; pings both ways between them through clients
/// joined at each end. Then each liar links to both hubs as told and sends advertisements
/// calling itself a relay with nearly free links to both: the hubs' own links said what
/// it is, and their signed advertisements (relay marks) tell the rest of the mesh.
fn liars_are_never_relays(extra: &str, liars: Vec<(&str, FakeTls, u32, Option<CertSigner>)>, pki: &Pki) {
    let hub = |id: &str, peers: &[u16]| {
        let mut spec = Spec::new(id).extra(FAST_MESH).extra(extra).extra(&pki.toml(id));
        spec = spec.extra("require_client_cert = false");
        spec.tls = true;
        for p in peers {
            spec = spec.peer(*p);
        }
        Daemon::start(spec)
    };
    let a = hub("hub-a", &[]);
    let b = hub("hub-b", &[a.port]);
    // pinger → hub-a → hub-b and pinger-b → hub-b → hub-a: one hop each, which a relay
    // at cost 0.002 would undercut.
    let forth = PingLoop::start_as("pinger", &a, "hub-b", Some(pki.context("pinger")));
    let back = PingLoop::start_as("pinger-b", &b, "hub-a", Some(pki.context("pinger-b")));
    forth.more(3);
    back.more(3);
    let mut watcher = FakePeer::try_join_tls(b.port, "watcher", &pki.fake("watcher")).expect("watcher");
    for (id, tls, caps, signer) in &liars {
        let mut links: Vec<FakePeer> = [a.port, b.port]
            .iter()
            .map(|p| FakePeer::try_join_tls_caps(*p, id, tls, *caps).expect("join"))
            .collect();
        for seq in 1..=3 {
            for link in &mut links {
                link.send(&Frame::Lsa(relay_claim(id, ["hub-a", "hub-b"], seq, signer.as_ref())))
                    .expect("send");
            }
        }
        // What the mesh learns: hub-a's signed word that the liar is not a relay.
        let marked = watcher.recv_until(Duration::from_secs(10), |f| match f {
            Frame::Lsa(l) if l.origin.as_str() == "hub-a" && l.listing(&node(id)) == Some(true) => Some(l),
            _ => None,
        });
        assert!(marked.is_some(), "{id}: hub-a's advertisement marks it as not a relay");
        forth.more(20);
        back.more(20);
        drop(links);
    }
    for (dir, pings) in [("hub-a → hub-b", forth), ("hub-b → hub-a", back)] {
        let failures = pings.finish();
        assert!(failures.is_empty(), "{dir}: lost: {failures:?}");
    }
}

#[test]
fn a_leaf_a_client_or_a_certificate_less_peer_claiming_to_be_a_relay_is_never_routed_through() {
    let pki = Pki::new(&["hub-a", "hub-b", "watcher", "pinger", "pinger-b", "leaf", "client"]);
    let liars = vec![
        ("leaf", pki.fake("leaf"), caps::STREAMS | caps::LEAF, Some(CertSigner::new(pki.context("leaf")))),
        (
            "client",
            pki.fake("client"),
            caps::STREAMS | caps::EPHEMERAL,
            Some(CertSigner::new(pki.context("client"))),
        ),
        // No certificate and no client caps: a temporary ID is still a client.
        ("receptor-client-sly", FakeTls::anonymous(), caps::STREAMS, None),
    ];
    liars_are_never_relays("", liars, &pki);
}

#[test]
fn a_certified_node_lying_on_its_links_too_is_kept_out_by_the_relay_policy() {
    // "mole" holds a valid certificate and announces itself as a hub everywhere: only
    // the hubs' `[mesh] relays` says it may not relay.
    let pki = Pki::new(&["hub-a", "hub-b", "watcher", "pinger", "pinger-b", "mole"]);
    let liars = vec![("mole", pki.fake("mole"), caps::STREAMS, Some(CertSigner::new(pki.context("mole"))))];
    liars_are_never_relays("relays = [\"hub-*\"]", liars, &pki);
}
