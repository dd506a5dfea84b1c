//! Signed-origin figures (`make bench`): the cost of signing and verifying one link-state
//! advertisement with a node certificate — ECDSA P-256 (`receptor cert`) and RSA-2048 (Go
//! Receptor's `cert` command) — with a cold certificate cache (chain verified) and a warm
//! one (signature only), and the advertisement's size with and without its signature.
//! Go Receptor 1.4 does not sign its route advertisements: there is no anchor. Figures
//! only: nothing here asserts on time.

use std::path::Path;
use std::time::{Duration, Instant};

use receptord::certs::{self, KeyType, Subject};
use receptord::mesh::origin::{CertSigner, LsaSigner, Verifier};
use receptord::transport::{TlsContext, TlsSettings};
use receptord::wire::{Frame, Lsa, Name, NodeId, WorkTypeAd};

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid id")
}

fn pki(dir: &Path) {
    let (crt, key) = certs::init_ca("bench CA", 30, KeyType::EcdsaP256).expect("ca");
    std::fs::write(dir.join("ca.crt"), crt).expect("write");
    std::fs::write(dir.join("ca.key"), key).expect("write");
    let subject = Subject { node_ids: vec!["node-0042".into()], ..Subject::default() };
    let (crt, key) = certs::issue(&dir.join("ca.crt"), &dir.join("ca.key"), &subject, 30).expect("issue");
    std::fs::write(dir.join("ecdsa.crt"), crt).expect("write");
    std::fs::write(dir.join("ecdsa.key"), key).expect("write");
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa key");
    let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).expect("pem").to_string();
    let (csr, _) = certs::make_request(&subject, Some(&pem)).expect("csr");
    let crt = certs::sign_request(&csr, &dir.join("ca.crt"), &dir.join("ca.key"), 30).expect("sign");
    std::fs::write(dir.join("rsa.crt"), crt).expect("write");
    std::fs::write(dir.join("rsa.key"), pem).expect("write");
}

fn context(dir: &Path, name: &str) -> TlsContext {
    let settings = TlsSettings {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: vec![dir.join("ca.crt")],
        require_client_cert: true,
        pinned: Vec::new(),
        min_tls13: false,
        skip_node_id_check: false,
    };
    TlsContext::load(settings, "node-0042").expect("tls material")
}

/// An ordinary node's advertisement: three links, two work types.
fn lsa() -> Lsa {
    Lsa {
        origin: id("node-0042"),
        epoch: 1_764_000_000_000_000_000,
        seq: 17,
        leaving: false,
        ephemeral: false,
        leaf: false,
        neighbors: vec![(id("hub-01"), 1.0), (id("hub-02"), 1.0), (id("node-0043"), 2.0)],
        relay_marks: false,
        work_types: ["ansible-runner", "cat"]
            .iter()
            .map(|w| WorkTypeAd { name: Name::new(*w).expect("name"), version: Name::new("1").expect("v") })
            .collect(),
        sig: None,
    }
}

/// Median and mean of `n` runs of `f`, in microseconds.
fn time(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut t: Vec<Duration> = (0..n)
        .map(|i| {
            let t0 = Instant::now();
            f(i);
            t0.elapsed()
        })
        .collect();
    t.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(t[n / 2]), us(t.iter().sum::<Duration>()) / n as f64)
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    pki(dir.path());
    let plain = lsa();
    println!("signed origins: one advertisement of a node with 3 links and 2 work types");
    println!("  unsigned: {} bytes", plain.encoded_len());
    println!(
        "  {:<6} {:>6} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "key", "bytes", "sign med", "sign mean", "verify", "chain+verify", "seen again"
    );
    for (name, n) in [("ecdsa", 2000), ("rsa", 300)] {
        let tls = context(dir.path(), name);
        let signer = CertSigner::new(tls.clone());
        let mut signed = Vec::with_capacity(n);
        let (sign_med, sign_mean) = time(n, |i| {
            let mut l = plain.clone();
            l.seq = i as u64 + 1;
            signer.sign(&mut l);
            signed.push(l);
        });
        let size = signed[0].encoded_len();
        let frames: Vec<_> = signed.iter().map(|l| Frame::Lsa(l.clone()).encode()).collect();
        let check = |v: &Verifier, i: usize| {
            let Ok(Frame::Lsa(l)) = Frame::decode(frames[i].slice(4..)) else { panic!("decodes") };
            v.verify(&l).expect("verifies");
        };
        // Warm: the certificate is cached; each advertisement is new (decode + signature).
        let verifier = Verifier::new(tls.clone(), 16);
        check(&verifier, 0);
        let (warm, _) = time(n - 1, |i| check(&verifier, i + 1));
        // The same advertisements again, as over a second relay link: a digest lookup.
        let (again, _) = time(n - 1, |i| check(&verifier, i + 1));
        // Cold: a new verifier each time, so the chain is verified too.
        let (cold, _) = time(n.min(300), |i| check(&Verifier::new(tls.clone(), 16), i));
        println!(
            "  {:<6} {:>6} {:>9.1}µs {:>9.1}µs {:>11.1}µs {:>11.1}µs {:>11.1}µs",
            name, size, sign_med, sign_mean, warm, cold, again
        );
    }
    println!("  Go Receptor 1.4: route advertisements are not signed (no anchor)");
}
