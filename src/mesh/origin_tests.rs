//! Signing and verification of advertisements with real certificates (`receptor cert`'s
//! ECDSA keys and RSA keys as Go Receptor's `cert` command makes them).

use std::path::Path;

use super::*;
use crate::certs::{self, KeyType, Subject};
use crate::transport::{TlsContext, TlsSettings};
use crate::wire::caps;
use crate::wire::{Frame, Lsa, Name, NodeId, WorkTypeAd};

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid id")
}

/// A CA in `dir` (`ca.crt`, `ca.key`).
pub(super) fn ca(dir: &Path) {
    let (crt, key) = certs::init_ca("test CA", 30, KeyType::EcdsaP256).expect("ca");
    std::fs::write(dir.join("ca.crt"), crt).expect("write");
    std::fs::write(dir.join("ca.key"), key).expect("write");
}

/// `name.crt`/`name.key` naming node `node`, signed by the CA in `dir`; RSA when asked.
pub(super) fn issue(dir: &Path, name: &str, node: &str, rsa: bool) {
    let subject = Subject { node_ids: vec![node.into()], ..Subject::default() };
    let (crt, key) = if rsa {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa key");
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).expect("pem").to_string();
        let (csr, _) = certs::make_request(&subject, Some(&pem)).expect("csr");
        let crt = certs::sign_request(&csr, &dir.join("ca.crt"), &dir.join("ca.key"), 30).expect("sign");
        (crt, pem)
    } else {
        certs::issue(&dir.join("ca.crt"), &dir.join("ca.key"), &subject, 30).expect("issue")
    };
    std::fs::write(dir.join(format!("{name}.crt")), crt).expect("write");
    std::fs::write(dir.join(format!("{name}.key")), key).expect("write");
}

pub(super) fn context(dir: &Path, name: &str, node: &str) -> TlsContext {
    let settings = TlsSettings {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: vec![dir.join("ca.crt")],
        require_client_cert: true,
        pinned: Vec::new(),
        min_tls13: false,
        skip_node_id_check: false,
    };
    TlsContext::load(settings, node).expect("tls material")
}

fn lsa(origin: &str) -> Lsa {
    Lsa {
        origin: id(origin),
        epoch: 1_700_000_000_000_000_000,
        seq: 7,
        leaving: false,
        ephemeral: false,
        leaf: false,
        neighbors: vec![(id("hub"), 1.0), (id("other"), 2.5)],
        relay_marks: false,
        work_types: vec![WorkTypeAd {
            name: Name::new("cat").expect("name"),
            version: Name::new("1").expect("v"),
        }],
        sig: None,
    }
}

/// Encodes and decodes, as the advertisement travels.
fn wire(lsa: &Lsa) -> Lsa {
    match Frame::decode(Frame::Lsa(lsa.clone()).encode().slice(4..)).expect("decodes") {
        Frame::Lsa(l) => l,
        other => panic!("{other:?}"),
    }
}

struct Pki {
    _dir: tempfile::TempDir,
    victim: TlsContext,
    mallory: TlsContext,
    verifier: Verifier,
}

fn pki(rsa_victim: bool) -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    ca(dir.path());
    issue(dir.path(), "victim", "victim", rsa_victim);
    issue(dir.path(), "mallory", "mallory", false);
    let victim = context(dir.path(), "victim", "victim");
    let mallory = context(dir.path(), "mallory", "mallory");
    let verifier = Verifier::new(context(dir.path(), "mallory", "mallory"), 16);
    Pki { _dir: dir, victim, mallory, verifier }
}

#[test]
fn a_signed_advertisement_verifies_after_the_wire_and_any_change_breaks_it() {
    for rsa in [false, true] {
        let p = pki(rsa);
        let mut ad = lsa("victim");
        CertSigner::new(p.victim.clone()).sign(&mut ad);
        let sig = ad.sig.clone().expect("signed");
        let expected =
            if rsa { SignatureScheme::RSA_PSS_SHA256 } else { SignatureScheme::ECDSA_NISTP256_SHA256 };
        assert_eq!(sig.scheme, u16::from(expected));
        assert_eq!(p.verifier.verify(&wire(&ad)), Ok(()), "rsa: {rsa}");
        assert_eq!(p.verifier.cached(), 1);
        assert_eq!(p.verifier.verify(&wire(&ad)), Ok(()), "from the cache");
        let tampered: [&dyn Fn(&mut Lsa); 5] =
            [&|l| l.seq += 1, &|l| l.epoch += 1, &|l| l.leaving = true, &|l| l.neighbors.clear(), &|l| {
                l.work_types.clear()
            }];
        for (i, change) in tampered.iter().enumerate() {
            let mut forged = ad.clone();
            change(&mut forged);
            assert_eq!(p.verifier.verify(&wire(&forged)), Err(OriginError::BadSignature), "change {i}");
        }
        let mut later = ad.clone();
        later.sig.as_mut().expect("signed").signed_at += 1;
        assert_eq!(p.verifier.verify(&wire(&later)), Err(OriginError::BadSignature), "signing time");
    }
}

#[test]
fn a_valid_certificate_cannot_speak_for_another_node() {
    let p = pki(false);
    let mut ad = lsa("victim");
    ad.sig = Some(CertSigner::new(p.mallory.clone()).signature(&ad).expect("sign"));
    match p.verifier.verify(&wire(&ad)) {
        Err(OriginError::NotNamed { origin, names }) => {
            assert_eq!(origin.as_str(), "victim");
            assert_eq!(names, vec!["mallory".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    // The victim's certificate with a signature from another key.
    let mut ad = lsa("victim");
    CertSigner::new(p.victim.clone()).sign(&mut ad);
    let stolen = ad.sig.clone().expect("signed");
    let mut other = lsa("victim");
    other.seq = 99;
    let mine = CertSigner::new(p.mallory.clone()).signature(&other).expect("sign");
    other.sig = Some(LsaSig { chain: stolen.chain, ..mine });
    assert_eq!(p.verifier.verify(&wire(&other)), Err(OriginError::BadSignature));
}

#[test]
fn unsigned_foreign_and_odd_signatures_are_refused() {
    let p = pki(false);
    assert_eq!(p.verifier.verify(&lsa("victim")), Err(OriginError::Unsigned));
    // A certificate from another CA naming the victim.
    let other = tempfile::tempdir().expect("tempdir");
    ca(other.path());
    issue(other.path(), "victim", "victim", false);
    let mut ad = lsa("victim");
    CertSigner::new(context(other.path(), "victim", "victim")).sign(&mut ad);
    assert!(matches!(p.verifier.verify(&wire(&ad)), Err(OriginError::Chain(_))));
    // An unknown scheme, a truncated signature.
    let mut ad = lsa("victim");
    CertSigner::new(p.victim.clone()).sign(&mut ad);
    let mut odd = ad.clone();
    odd.sig.as_mut().expect("sig").scheme = 0x0201;
    assert_eq!(p.verifier.verify(&wire(&odd)), Err(OriginError::Scheme(0x0201)));
    let mut short = ad.clone();
    let s = short.sig.as_mut().expect("sig");
    s.signature = s.signature.slice(..s.signature.len() / 2);
    assert_eq!(p.verifier.verify(&wire(&short)), Err(OriginError::BadSignature));
}

#[test]
fn leaf_links_carry_only_their_peer_s_advertisements() {
    let hello = |node: &str, caps| crate::wire::Hello {
        version: crate::wire::PROTOCOL_VERSION,
        node_id: id(node),
        epoch: 1,
        caps,
        idle_timeout_ms: 1000,
        cost: 1.0,
    };
    let check = OriginCheck::TrustedNetwork;
    let client = hello("client", caps::STREAMS | caps::EPHEMERAL);
    assert_eq!(check.check(&client, &lsa("client")), Ok(()));
    assert!(matches!(check.check(&client, &lsa("victim")), Err(OriginError::NotPeer { .. })));
    assert_eq!(check.check(&hello("relay", caps::STREAMS), &lsa("victim")), Ok(()));
}

/// The duplicate-ID rule (docs/PROTOCOL.md §5.5) on signed evidence: an older epoch
/// "progressing" after the newer one appeared bans the newer one only if its
/// advertisements were signed after the newer incarnation started. Replayed recordings of
/// a previous incarnation (signed before) ban nothing. The state machine trusts the
/// signature block here; the link reader verified it.
#[test]
fn replayed_advertisements_of_a_previous_incarnation_are_not_twin_evidence() {
    use crate::mesh::state::{Admission, Mesh, MeshConfig};
    use tokio::time::Instant;
    let (old, new) = (1_000_000u64, 2_000_000u64);
    // The victim hangs off the relay, so it stays reachable (unreachable entries are
    // forgotten after a grace) while its twins argue.
    let ad = |epoch: u64, seq: u64, signed_at: u64| Lsa {
        epoch,
        seq,
        neighbors: vec![(id("relay"), 1.0)],
        relay_marks: false,
        sig: Some(LsaSig {
            scheme: u16::from(SignatureScheme::ECDSA_NISTP256_SHA256),
            signed_at,
            chain: vec![Bytes::from_static(b"leaf")],
            signature: Bytes::from_static(b"sig"),
        }),
        ..lsa("victim")
    };
    let run = |signed_at: [u64; 2]| {
        let t0 = Instant::now();
        let cfg = MeshConfig::default();
        let timeout = cfg.node_timeout;
        let mut mesh = Mesh::new(id("hub"), 5, false, cfg, t0);
        let hello = crate::wire::Hello {
            version: crate::wire::PROTOCOL_VERSION,
            node_id: id("relay"),
            epoch: 1,
            caps: caps::STREAMS,
            idle_timeout_ms: 1000,
            cost: 1.0,
        };
        assert_eq!(mesh.admit(1, &hello, 1.0, false, false), Admission::Admit);
        mesh.link_up(t0, 1);
        let relay = |seq: u64| Lsa {
            origin: id("relay"),
            epoch: 1,
            seq,
            neighbors: vec![(id("hub"), 1.0), (id("victim"), 1.0)],
            relay_marks: false,
            work_types: Vec::new(),
            ..ad(1, seq, 1)
        };
        let steps = [
            (Duration::ZERO, ad(new, 1, new + 1)),
            (Duration::from_secs(1), ad(old, 5, signed_at[0])),
            (timeout / 2, ad(new, 2, new + 2)),
            (timeout + Duration::from_secs(2), ad(old, 6, signed_at[1])),
        ];
        for (seq, (at, victim)) in (1..).zip(steps) {
            mesh.on_lsa(t0 + at, 1, relay(seq));
            mesh.on_lsa(t0 + at, 1, victim);
        }
        mesh.drain_actions();
        mesh.known().into_iter().find(|l| l.origin.as_str() == "victim").map(|l| l.epoch)
    };
    assert_eq!(run([old + 10, old + 20]), Some(new), "a replay keeps the new incarnation");
    assert_eq!(run([new + 10, new + 20]), Some(old), "a live older twin keeps the id");
}
