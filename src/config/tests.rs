//! Config loading and validation: every key checked, every error naming its key.

use super::*;

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("receptor.toml");
    std::fs::write(&path, text).expect("write");
    Config::load(&path)
}

#[test]
fn the_shipped_example_is_valid_and_complete() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/receptor.toml");
    let cfg = Config::load(&path).expect("config/receptor.toml loads");
    assert_eq!(cfg.node.id.as_str(), "node1");
    assert_eq!(cfg.listeners.len(), 1);
    assert_eq!(cfg.work.command[0].name, "echo");
    assert!(cfg.work.ansible_runner.enabled);
}

#[test]
fn relay_policy_is_checked_at_load_and_names_the_key() {
    let listening = "[node]\nid = \"n\"\n[[listeners]]\nurl = \"receptor://127.0.0.1:0\"\nrelays = false\n";
    let cfg = load_text(&format!("{listening}[mesh]\nrelays = [\"hub-*\", \"core\"]\n")).expect("loads");
    assert!(!cfg.listeners[0].relays);
    assert_eq!(cfg.mesh.relays.as_deref(), Some(&["hub-*".to_owned(), "core".to_owned()][..]));
    let err = load_text(&format!("{listening}[mesh]\nrelays = [\"h*b\"]\n")).expect_err("bad pattern");
    assert!(err.to_string().contains("mesh.relays"), "{err}");
    let err = load_text("[node]\nid = \"n\"\n[[peers]]\nurl = \"receptor://h:1\"\nrelays = false\n")
        .expect_err("peers");
    assert!(err.to_string().contains("peers[0].relays"), "{err}");
    assert!(load_text("[node]\nid = \"n\"\n").expect("loads").mesh.relays.is_none());
}

#[test]
fn websocket_headers_are_checked_and_reach_the_url() {
    let peer = |url: &str, headers: &str| {
        format!("[node]\nid = \"n\"\n[[peers]]\nurl = \"{url}\"\nheaders = {headers}\n")
    };
    let cfg = load_text(&format!(
        "{}[limits.websocket]\nmax_message = 70000\n",
        peer("ws://h:1/p", "{ Authorization = \"Bearer t\" }")
    ))
    .expect("loads");
    let ws = cfg.peers[0].url.ws.as_ref().expect("ws");
    assert_eq!(ws.headers.len(), 1);
    assert_eq!(ws.headers[0].1, "Bearer t");
    assert_eq!(ws.limits.max_message, 70000);
    for (text, key) in [
        (peer("receptor://h:1", "{ A = \"b\" }"), "peers[0].headers"),
        (peer("ws://h:1/", "{ Host = \"x\" }"), "peers[0].headers"),
        (peer("ws://h:1/", "{ \"a b\" = \"x\" }"), "peers[0].headers"),
        (
            "[node]\nid = \"n\"\n[[listeners]]\nurl = \"ws://h:1/\"\nheaders = { A = \"b\" }\n".into(),
            "listeners[0].headers",
        ),
        ("[node]\nid = \"n\"\n[[listeners]]\nurl = \"netceptor+ws://h:1/\"\n".into(), "listeners[0].url"),
        ("[node]\nid = \"n\"\n[limits.websocket]\nmax_message = 10\n".into(), "limits.websocket.max_message"),
    ] {
        let err = load_text(&text).expect_err(&text).to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn the_node_id_defaults_to_the_host_name() {
    let cfg = load_text("[node]\n").expect("loads");
    assert!(!cfg.node.id.as_str().is_empty());
}

#[test]
fn minimal_config_gets_defaults() {
    let cfg = load_text("[node]\nid = \"n\"\n").expect("loads");
    assert_eq!(cfg.node.data_dir, PathBuf::from("/var/lib/receptor"));
    assert_eq!(cfg.mesh.max_hops, 30);
    assert_eq!(cfg.log.format, LogFormat::Text);
}

#[test]
fn tls_and_authorization_sections_parse() {
    let cfg = load_text(
        "[node]\nid = \"n\"\n[[listeners]]\nurl = \"receptors://0.0.0.0\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nca = [\"a\"]\n\
         [mesh]\nallowed_peers = [\"x\"]\n[[work.allow]]\nsubmitters = [\"*\"]\nwork_types = [\"cat\"]\n",
    )
    .expect("loads");
    assert_eq!(cfg.listeners[0].url.port, 8899);
    let tls = cfg.tls.expect("tls");
    assert!(tls.require_client_cert);
    assert!(tls.e2e_streams, "streams are protected end to end by default");
    assert_eq!(cfg.work.allow.len(), 1);
    let err = load_text("[node]\nid = \"n\"\n[[listeners]]\nurl = \"receptors://h\"\n").expect_err("no tls");
    assert!(err.to_string().contains("listeners[0].url"), "{err}");
}

#[test]
fn without_a_role_a_node_that_accepts_no_links_is_a_leaf() {
    let listening = "[[listeners]]\nurl = \"receptor://127.0.0.1:0\"\n";
    let cases = [
        ("", true),
        (listening, false),
        ("[mesh]\nrole = \"auto\"\n", true),
        ("[mesh]\nrole = \"hub\"\n", false),
        (&format!("{listening}[mesh]\nrole = \"leaf\"\n"), true),
    ];
    for (extra, leaf) in cases {
        let cfg = load_text(&format!("[node]\nid = \"n\"\n{extra}")).expect("valid");
        assert_eq!(cfg.is_leaf(), leaf, "{extra}");
    }
    let err = load_text("[node]\nid = \"n\"\n[mesh]\nrole = \"spoke\"\n").expect_err("invalid");
    assert!(err.to_string().contains("spoke"), "{err}");
}

#[test]
fn errors_name_the_key() {
    let err = load_text("[node]\nid = \"n\"\n[mesh]\nmax_hops = 0\n").expect_err("invalid");
    assert!(err.to_string().contains("mesh.max_hops"), "{err}");
    let err = load_text("[node]\nid = \"bad id\"\n").expect_err("invalid");
    assert!(err.to_string().contains("bad id"), "{err}");
    let err = load_text("[node]\nid = \"n\"\n[[work.command]]\nname = \"x\"\nprogram = \"/nonexistent\"\n")
        .expect_err("invalid");
    assert!(err.to_string().contains("work.command[0].program"), "{err}");
    let err = load_text("[node]\nid = \"n\"\n[log]\nformat = \"xml\"\n").expect_err("invalid");
    assert!(err.to_string().contains("xml"), "{err}");
}
