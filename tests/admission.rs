//! The one admission path for work, against real daemons and the real CLI: signatures
//! are required on every path (`receptor run --via-receptor` as a work unit, job streams
//! from `MeshClient::submit`), tokens are bound to their request and used once.

mod common;

use std::path::Path;
use std::time::Duration;

use common::playbooks::*;
use common::*;
use receptord::work::signing::{Grant, Op, Signer, params_digest};

/// node1 <- node3, node3 with a `secure` command work type that needs signatures.
fn secure_pair(public: &Path, extra3: &str) -> (Daemon, Daemon) {
    let verify = format!(
        "[[work.command]]\nname = \"secure\"\nprogram = \"/bin/echo\"\nargs = [\"signed ok\"]\nverify_signature = true\n\
         [work.verification]\npublic_key = \"{}\"\n{extra3}",
        public.display()
    );
    let n1 = Daemon::start(Spec::new("node1"));
    let n3 = Daemon::start(Spec::new("node3").peer(n1.port).extra(&verify));
    wait_route(&n1, "node3");
    (n1, n3)
}

#[test]
fn an_unsigned_run_is_refused_and_a_signed_one_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    let verify = format!(
        "[work.ansible_runner]\nverify_signature = true\n[work.verification]\npublic_key = \"{}\"\n",
        public.display()
    );
    let n1 = Daemon::start(Spec::new("node1"));
    let n2 = Daemon::start(Spec::new("node2").peer(n1.port));
    let _n3 = Daemon::start(Spec::new("node3").peer(n2.port).with_ansible().extra(&verify));
    wait_route(&n1, "node3");
    let pdd = make_pdd(PLAY);
    let run = |extra: &[&str]| {
        receptor_cmd(&n1)
            .env("PATH", path_without_venv())
            .arg("run")
            .arg(pdd.path())
            .args(["-p", "test.yml", "--via-receptor", "node3"])
            .args(extra)
            .output()
            .expect("receptor run")
    };
    let out = run(&["-i", "unsigned"]);
    assert_ne!(out.status.code(), Some(0), "an unsigned run must not succeed");
    assert!(stderr(&out).contains("a signature is required"), "{}", stderr(&out));
    assert!(!pdd.path().join("artifacts/unsigned/rc").exists(), "the playbook never ran");

    let key = private.display().to_string();
    let out = run(&["--signing-key", &key, "-i", "signed"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let rc = std::fs::read_to_string(pdd.path().join("artifacts/signed/rc")).expect("rc");
    assert_eq!(rc, "0");
    // The run's results and release were signed too: nothing is left behind on node3.
    let (other, _) = rsa_keys(&dir.path().join("other").tap_mkdir());
    let out = run(&["--signing-key", &other.display().to_string(), "-i", "wrongkey"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("could not verify signature"), "{}", stderr(&out));
}

#[test]
fn a_job_stream_needs_a_signature_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    let (n1, _n3) = secure_pair(&public, "");
    let out = receptor(&n1, &["work", "submit", "secure", "--node", "node3", "-l", "x"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("a signature is required"), "{}", stderr(&out));
    let key = private.display().to_string();
    let out =
        receptor(&n1, &["--signing-key", &key, "work", "submit", "secure", "--node", "node3", "-l", "x"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "signed ok\n");
}

/// A client node joined to the mesh through `peer` as `me`.
fn join(rt: &tokio::runtime::Runtime, peer: &Daemon, me: &str) -> receptord::client::MeshClient {
    let opts = receptord::client::ClientOptions {
        receptor_peer: Some(peer.peer_url().parse().expect("url")),
        receptor_node_id: Some(me.parse().expect("id")),
        ..Default::default()
    };
    let client = rt.block_on(receptord::client::MeshClient::connect(&opts)).expect("join");
    let node3 = "node3".parse().expect("id");
    wait_until("node3 reachable from the client", Duration::from_secs(10), || {
        client.node().topology().borrow().reachable.contains(&node3)
    });
    client
}

/// Opens a `work` stream to node3 with `header`; returns what the job printed, or why
/// the stream was refused.
fn open_work(
    rt: &tokio::runtime::Runtime,
    client: &receptord::client::MeshClient,
    header: serde_json::Value,
) -> Result<String, String> {
    rt.block_on(async {
        let node3 = "node3".parse().expect("id");
        let bytes = bytes::Bytes::from(serde_json::to_vec(&header).expect("json"));
        let (writer, mut reader) =
            client.node().open(&node3, "work", bytes).await.map_err(|e| e.to_string())?;
        writer.finish(bytes::Bytes::new()).await;
        let mut out = Vec::new();
        let trailer =
            receptord::client::copy_output(&mut reader, &mut out, &node3).await.map_err(|e| e.to_string())?;
        receptord::client::parse_result(&node3, &trailer).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
}

/// What `ctl` signs to run the `secure` work type on node3 with no parameters.
fn secure_grant() -> Grant {
    Grant {
        node: "node3".into(),
        requester: Some("ctl".into()),
        op: Op::Submit,
        work_type: "secure".into(),
        params: Some(params_digest(&serde_json::Map::new())),
        payload: None,
        unit: None,
    }
}

fn secure_header(token: &str) -> serde_json::Value {
    serde_json::json!({"work_type": "secure", "signature": token})
}

/// Used tokens are journalled (`<data_dir>/tokens.journal`): one used before node3 is
/// killed (-9) and restarted is still a replay afterwards; a fresh one runs.
#[test]
fn a_used_token_stays_used_across_a_kill_9_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    let (n1, mut n3) = secure_pair(&public, "");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let signer = Signer::load(&private, Duration::from_secs(300)).expect("signer");
    let ctl = join(&rt, &n1, "ctl");
    let token = signer.token(&secure_grant()).expect("token");
    assert_eq!(open_work(&rt, &ctl, secure_header(&token)), Ok("signed ok\n".into()));

    n3.restart();
    // Until node3 is back the attempt fails for want of a route; then it must be a replay.
    let mut last = String::new();
    wait_until("node3 answers the replay", Duration::from_secs(30), || {
        match open_work(&rt, &ctl, secure_header(&token)) {
            Ok(out) => panic!("a token used before the restart ran again: {out}"),
            Err(e) => {
                last = e;
                last.contains("already used")
            }
        }
    });
    assert!(last.contains("already used"), "{last}");
    let fresh = signer.token(&secure_grant()).expect("token");
    assert_eq!(open_work(&rt, &ctl, secure_header(&fresh)), Ok("signed ok\n".into()));
    drop(n1);
}

#[test]
fn a_token_is_used_once_and_only_for_its_node_requester_work_type_and_params() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    let (n1, n3) = secure_pair(&public, "");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let signer = Signer::load(&private, Duration::from_secs(60)).expect("signer");
    let grant = secure_grant();
    let header = secure_header;
    let (ctl, relay) = (join(&rt, &n1, "ctl"), join(&rt, &n1, "relay"));
    let token = signer.token(&grant).expect("token");
    assert_eq!(open_work(&rt, &ctl, header(&token)), Ok("signed ok\n".into()));
    // The same token again: a replay.
    let replay = open_work(&rt, &ctl, header(&token)).expect_err("replayed");
    assert!(replay.contains("already used"), "{replay}");
    n3.wait_log("replayed work token refused", Duration::from_secs(5));
    // Presented by another node (a relay that saw it).
    let fresh = signer.token(&grant).expect("token");
    let stolen = open_work(&rt, &relay, header(&fresh)).expect_err("another requester");
    assert!(stolen.contains("request's requester"), "{stolen}");
    // For another node, another work type, other parameters.
    let other_node = signer.token(&Grant { node: "node4".into(), ..grant.clone() }).expect("token");
    let refused = open_work(&rt, &ctl, header(&other_node)).expect_err("another node");
    assert!(refused.contains("audience"), "{refused}");
    let other_type = signer.token(&Grant { work_type: "other".into(), ..grant.clone() }).expect("token");
    let refused = open_work(&rt, &ctl, header(&other_type)).expect_err("another work type");
    assert!(refused.contains("request's work type"), "{refused}");
    let params = serde_json::Map::from_iter([("x".to_owned(), serde_json::json!(1))]);
    let token = signer.token(&grant).expect("token");
    let with_params = serde_json::json!({"work_type": "secure", "params": params, "signature": token});
    let refused = open_work(&rt, &ctl, with_params).expect_err("other params");
    assert!(refused.contains("request's parameters"), "{refused}");
    // A token made for cancelling is no submission.
    let cancel = Grant { op: Op::Cancel, unit: Some("AbC".into()), params: None, ..grant };
    let token = signer.token(&cancel).expect("token");
    let refused = open_work(&rt, &ctl, header(&token)).expect_err("another operation");
    assert!(refused.contains("request's operation"), "{refused}");
    rt.block_on(async {
        ctl.close().await;
        relay.close().await;
    });
}

#[test]
fn go_receptor_tokens_need_an_explicit_opt_in_for_submissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    let go = go_token(&private, "node3");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let header = serde_json::json!({"work_type": "secure", "signature": go});
    {
        let (n1, _n3) = secure_pair(&public, "");
        let ctl = join(&rt, &n1, "ctl");
        let refused = open_work(&rt, &ctl, header.clone()).expect_err("refused");
        assert!(refused.contains("accept_replayable_go_tokens"), "{refused}");
        rt.block_on(ctl.close());
    }
    let (n1, _n3) = secure_pair(&public, "accept_replayable_go_tokens = true\n");
    let ctl = join(&rt, &n1, "ctl");
    assert_eq!(open_work(&rt, &ctl, header), Ok("signed ok\n".into()));
    rt.block_on(ctl.close());
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).expect("mkdir");
        self
    }
}

#[test]
fn a_signed_work_unit_runs_only_the_payload_its_token_names() {
    use receptord::work::remote::{RemoteControl, RemoteSubmit};
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    let (ctl3, _sock3) = with_socket("node3", dir.path());
    let (n1, _n3) = secure_pair(&public, &format!("\n{ctl3}"));
    let signer = Signer::load(&private, Duration::from_secs(60)).expect("signer");
    let (signed, swapped) = (dir.path().join("signed"), dir.path().join("swapped"));
    std::fs::write(&signed, "the payload that was signed\n").expect("write");
    std::fs::write(&swapped, "another payload\n").expect("write");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = join(&rt, &n1, "ctl");
    let ctl = receptord::control::client::MeshControl {
        node: client.node().clone(),
        tls_only: false,
        streams: receptord::control::client::StreamAuth::NoTls,
    };
    let submit = |stdin: &Path| {
        let grant = Grant {
            node: "node3".into(),
            requester: Some("ctl".into()),
            op: Op::Submit,
            work_type: "secure".into(),
            params: Some(receptord::work::signing::string_params_digest(&Default::default())),
            payload: Some(receptord::work::signing::file_sha256(&signed).expect("digest")),
            unit: None,
        };
        let req = RemoteSubmit {
            work_type: "secure".into(),
            params: Default::default(),
            stdin: stdin.to_path_buf(),
            arrival: None,
            signature: Some(signer.token(&grant).expect("token")),
            lease: None,
        };
        rt.block_on(ctl.submit(&"node3".parse().expect("id"), req, &|_| {})).map_err(|e| e.to_string())
    };
    let refused = submit(&swapped).expect_err("a swapped payload");
    assert!(refused.contains("request's payload"), "{refused}");
    let accepted = submit(&signed);
    assert!(accepted.is_ok(), "{accepted:?}");
    rt.block_on(client.close());
}

#[test]
fn a_go_receptor_token_may_still_cancel_the_requesters_own_unit() {
    use receptord::work::remote::{RemoteControl, RemoteOp, RemoteSubmit};
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    // A unit that runs until cancelled.
    let sleeper = format!(
        "[[work.command]]\nname = \"sleeper\"\nprogram = \"/bin/sleep\"\nargs = [\"60\"]\nverify_signature = true\n\
         [work.verification]\npublic_key = \"{}\"\n",
        public.display()
    );
    let n1 = Daemon::start(Spec::new("node1"));
    let _n3 = Daemon::start(Spec::new("node3").peer(n1.port).extra(&sleeper));
    wait_route(&n1, "node3");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = join(&rt, &n1, "ctl");
    let ctl = receptord::control::client::MeshControl {
        node: client.node().clone(),
        tls_only: false,
        streams: receptord::control::client::StreamAuth::NoTls,
    };
    let signer = Signer::load(&private, Duration::from_secs(60)).expect("signer");
    let payload = dir.path().join("empty");
    std::fs::write(&payload, "").expect("write");
    let grant = Grant {
        node: "node3".into(),
        requester: Some("ctl".into()),
        op: Op::Submit,
        work_type: "sleeper".into(),
        params: Some(receptord::work::signing::string_params_digest(&Default::default())),
        payload: None,
        unit: None,
    };
    let req = RemoteSubmit {
        work_type: "sleeper".into(),
        params: Default::default(),
        stdin: payload,
        arrival: None,
        signature: Some(signer.token(&grant).expect("token")),
        lease: None,
    };
    let node3: receptord::wire::NodeId = "node3".parse().expect("id");
    let unit = rt.block_on(ctl.submit(&node3, req, &|_| {})).expect("submitted");
    // Unsigned: refused. With Go Receptor's claims only (aud, exp): the owner may cancel.
    let refused = rt.block_on(ctl.operate(&node3, &unit, RemoteOp::Cancel, None)).expect_err("unsigned");
    assert!(refused.to_string().contains("a signature is required"), "{refused}");
    let go = go_token(&private, "node3");
    rt.block_on(ctl.operate(&node3, &unit, RemoteOp::Cancel, Some(go))).expect("cancelled with a Go token");
    let st = rt.block_on(ctl.status(&node3, &unit)).expect("status");
    assert_eq!(st.state.name(), "Canceled", "{st:?}");
    rt.block_on(client.close());
}

/// A token with exactly Go Receptor 1.4's claims (`jwt.StandardClaims{ExpiresAt, Audience}`),
/// signed with the RSA key at `private`, valid for a minute.
fn go_token(private: &std::path::Path, aud: &str) -> String {
    let pem = std::fs::read(private).expect("key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("key");
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("now").as_secs() + 60;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS512),
        &serde_json::json!({"aud": aud, "exp": exp}),
        &key,
    )
    .expect("token")
}

/// At default settings no replay window opens when a requester is forgotten (as after
/// `mesh.node_timeout`): a new incarnation of the same client ID, after the one that used a
/// token left the mesh, replaying it is refused as used; and a token past its lifetime (300 s
/// by default, shorter than the default `node_timeout` of 30 min, so every token is
/// expired by the time its requester is forgotten) is refused whoever presents it.
#[test]
fn a_token_replayed_after_its_requester_was_forgotten_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(dir.path());
    let (n1, n3) = secure_pair(&public, "");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let signer = Signer::load(&private, Duration::from_secs(300)).expect("signer");
    let token = signer.token(&secure_grant()).expect("token");
    let ctl = join(&rt, &n1, "ctl");
    assert_eq!(open_work(&rt, &ctl, secure_header(&token)), Ok("signed ok\n".into()));
    rt.block_on(ctl.close());
    // The requester is gone from node3's view (it left: forgotten at once, as after
    // node_timeout), then comes back as a new incarnation and replays the token.
    wait_until("node3 forgets ctl", Duration::from_secs(30), || {
        !stdout(&receptor(&n3, &["status"])).contains("ctl")
    });
    let again = join(&rt, &n1, "ctl");
    let replay = open_work(&rt, &again, secure_header(&token)).expect_err("replayed");
    assert!(replay.contains("already used"), "{replay}");
    // A short-lived token, presented after it expired, never runs.
    let short = Signer::load(&private, Duration::from_secs(1)).expect("signer");
    let old = short.token(&secure_grant()).expect("token");
    let exp = std::time::SystemTime::now() + Duration::from_secs(2);
    while std::time::SystemTime::now() < exp {
        std::thread::sleep(Duration::from_millis(100));
    }
    let late = open_work(&rt, &again, secure_header(&old)).expect_err("expired");
    assert!(late.contains("Expired"), "refused as expired: {late}");
    rt.block_on(again.close());
}
