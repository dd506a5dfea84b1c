//! Signed-work benchmarks (`make bench`): what one bound, one-use token costs — signing
//! it (RS512, 2048-bit key), verifying it alone, and the whole admission decision for a
//! signed submission (verification, bindings, the replay cache with `limits.signed_tokens`
//! entries held) — and a replayed token's refusal. Figures only: nothing is asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use receptord::identity::Origin;
use receptord::work::admit::{Admission, Ask, Policy};
use receptord::work::signing::{Grant, Op, Signer, Verifier, params_digest};
use receptord::work::{Registry, command::CommandWork};

const RUNS: u32 = 2000;

fn per_op(label: &str, runs: u32, mut f: impl FnMut(u32)) {
    let start = Instant::now();
    for i in 0..runs {
        f(i);
    }
    let each = start.elapsed() / runs;
    println!("{label:<58} {:>9.1} µs/op", each.as_secs_f64() * 1e6);
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = (dir.path().join("private.pem"), dir.path().join("public.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&private)
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "openssl is needed to make the keys");
    let signer = Signer::load(&private, Duration::from_secs(300)).expect("signer");
    let verifier = Verifier::load(&public).expect("verifier");
    let node: receptord::wire::NodeId = "node3".parse().expect("id");
    let grant = Grant {
        node: "node3".into(),
        requester: Some("ctl".into()),
        op: Op::Submit,
        work_type: "secure".into(),
        params: Some(params_digest(&serde_json::Map::new())),
        payload: None,
        unit: None,
    };
    println!("signed work, RS512 2048-bit, {RUNS} tokens");
    let mut tokens = Vec::with_capacity(RUNS as usize);
    per_op("sign one token (jti, iat, bindings)", RUNS, |_| {
        tokens.push(signer.token(&grant).expect("token"))
    });
    println!("{:<58} {:>9} bytes", "token size", tokens[0].len());
    per_op("verify one token (signature, exp, aud, bindings)", RUNS, |i| {
        verifier.verify(&tokens[i as usize], &grant).expect("verifies");
    });

    let mut reg = Registry::default();
    let work = CommandWork {
        program: "/bin/true".into(),
        args: Vec::new(),
        version: "1".into(),
        env: Vec::new(),
        cwd: None,
        grace: Duration::from_secs(1),
        allow_runtime_params: false,
        verify_signature: true,
        merge_stderr: false,
    };
    reg.register("secure", Arc::new(work));
    let admission = Admission::new(node, reg, 64);
    admission.set_policy(Policy {
        verifier: Some(verifier),
        accept_replayable_go_tokens: false,
        units_per_node: 1000,
        signed_tokens: 100_000,
    });
    let origin = Origin::Network(Some("ctl".parse().expect("id")));
    fn ask<'a>(origin: &'a Origin, token: &'a str) -> Ask<'a> {
        Ask {
            origin,
            op: Op::Submit,
            work_type: "secure",
            params: Some(params_digest(&serde_json::Map::new())),
            unit: None,
            signature: Some(token),
            signed_unit: false,
        }
    }
    per_op("admit a signed submission (verify + replay cache insert)", RUNS, |i| {
        assert!(admission.submit(&ask(&origin, &tokens[i as usize]), Some(0)).is_ok());
    });
    per_op("refuse a replayed token", RUNS, |i| {
        assert!(admission.submit(&ask(&origin, &tokens[i as usize]), Some(0)).is_err());
    });
    // Each cache entry: a 32-character jti (String: 24 + 32 bytes) and a u64 expiry,
    // plus the hash table's own overhead (about one more word per slot at its load).
    let entry = 24 + 32 + 8 + 8;
    println!(
        "{:<58} {:>9.1} MiB (~{entry} bytes/entry + table overhead)",
        "replay cache at limits.signed_tokens = 100000 (estimate)",
        (entry * 100_000) as f64 / (1024.0 * 1024.0)
    );
    println!("Go Receptor 1.4: no jti, no replay cache; it re-reads the key file on every verification.");
}
