//! Translation rules, one Go entry at a time; hostile YAML (alias bombs, oversized input).

use super::*;

fn import(yaml: &str) -> Imported {
    import_str(yaml, &ImportOptions::default()).expect("imports")
}

fn left_paths(i: &Imported) -> Vec<&str> {
    i.left_out.iter().map(|l| l.path.as_str()).collect()
}

/// The translated TOML, loaded by receptord's own loader.
fn load(i: &Imported) -> crate::config::Config {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("r.toml");
    std::fs::write(&path, &i.toml).expect("write");
    crate::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{}", i.toml))
}

#[test]
fn bare_values_case_and_both_file_shapes() {
    let v1 = import("- Node: n1\n- log-level: Warning\n- TCP-Listener: 4000\n- tcp-peer: go1:27199\n");
    assert!(v1.left_out.is_empty(), "{:?}", v1.left_out);
    let cfg = load(&v1);
    assert_eq!(cfg.node.id.as_str(), "n1");
    assert_eq!(cfg.log.level, "warn");
    assert_eq!(cfg.listeners[0].url.to_string(), "receptor://0.0.0.0:4000");
    assert_eq!(cfg.peers[0].url.to_string(), "netceptor://go1:27199");
    // Later Go releases' `version: 2` map of sections.
    let v2 = import(
        "version: 2\nnode:\n  id: n1\ntcp-listeners:\n  - port: 4000\n    bindaddr: '::1'\ntcp-peers:\n  - address: go1:1\n    cost: 3\n",
    );
    assert!(v2.left_out.is_empty(), "{:?}", v2.left_out);
    let cfg = load(&v2);
    assert_eq!(cfg.listeners[0].url.to_string(), "receptor://[::1]:4000");
    assert_eq!(cfg.peers[0].cost, 3.0);
}

#[test]
fn what_has_no_equivalent_is_listed_by_path() {
    let i = import(
        "- node:\n    id: n\n    firewallrules: [{action: reject}]\n- tcp-peer:\n    address: a:1\n    redial: false\n    allowedpeers: [x]\n\
         - tcp-listener:\n    port: 1\n    nodecost: {x: 2}\n    frobnicate: 1\n- udp-peer: a:2\n- work-python:\n    worktype: p\n    plugin: x\n    function: f\n\
         - trace:\n- control-service:\n    service: ctl2\n    tcplisten: 9000\n- mystery: 1\n",
    );
    let paths = left_paths(&i);
    assert_eq!(
        paths,
        [
            "[0].node.firewallrules",
            "[1].tcp-peer.allowedpeers",
            "[1].tcp-peer.redial",
            "[2].tcp-listener.nodecost",
            "[2].tcp-listener.frobnicate",
            "[4].work-python",
            "[5].trace",
            "[6].control-service.service",
            "[6].control-service.tcplisten",
            "[7].mystery",
        ]
    );
    assert!(i.left_out[8].reason.contains("insecure_plaintext_control"), "{}", i.left_out[8]);
    let cfg = load(&i);
    assert!(cfg.control.tcp_listen.is_none(), "no unauthenticated control port is opened");
    assert!(cfg.peers.iter().any(|p| p.url.to_string() == "netceptor+udp://a:2"), "{}", i.toml);
}

#[test]
fn udp_backends_become_netceptor_udp_links() {
    let i = import(
        "- udp-listener:\n    port: 27200\n    cost: 2\n- udp-listener:\n    port: 1\n    bindaddr: '::1'\n\
         - udp-peer:\n    address: go1:27201\n    redial: false\n- tcp-listener: 4000\n",
    );
    assert_eq!(left_paths(&i), ["[2].udp-peer.redial"], "{:#?}", i.left_out);
    let cfg = load(&i);
    let urls: Vec<String> = cfg.listeners.iter().map(|l| l.url.to_string()).collect();
    assert_eq!(urls, ["netceptor+udp://0.0.0.0:27200", "netceptor+udp://[::1]:1", "receptor://0.0.0.0:4000"]);
    assert_eq!(cfg.listeners[0].cost, 2.0);
    assert_eq!(cfg.peers[0].url.to_string(), "netceptor+udp://go1:27201");
    assert!(matches!(
        import_str("- udp-listener:\n    port: x\n", &ImportOptions::default()),
        Err(ImportError::Invalid { .. })
    ));
}

#[test]
fn without_a_control_service_or_runner_receptord_offers_neither() {
    let cfg = load(&import("- node: n\n"));
    assert!(!cfg.control.enabled && !cfg.control.mesh_service);
    assert!(!cfg.work.ansible_runner.enabled);
    assert_eq!(cfg.log.level, "error", "Go's default level");
}

#[test]
fn work_types_and_signing() {
    let i = import(
        "- work-command:\n    worktype: cat\n    command: cat\n    params: \"-u 'a b'\"\n    allowruntimeparams: true\n\
         - work-command:\n    worktype: ansible-runner\n    command: /usr/bin/ansible-runner\n    params: worker\n    verifysignature: true\n\
         - work-command:\n    worktype: remote\n    command: cat\n- work-command:\n    worktype: signed\n    command: cat\n\
           \x20   verifysignature: true\n- work-signing:\n    privatekey: /k.pem\n    tokenexpiration: 1.5h\n- work-verification: /p.pem\n",
    );
    assert_eq!(left_paths(&i), ["[2].work-command"], "{:?}", i.left_out);
    let cfg = load(&i);
    let c = &cfg.work.command[0];
    assert_eq!((c.args.as_slice(), c.allow_runtime_params), (&["-u".to_owned(), "a b".into()][..], true));
    assert!(cfg.work.command[1].verify_signature);
    assert_eq!(cfg.work.ansible_runner.path.as_deref(), Some(Path::new("/usr/bin/ansible-runner")));
    assert!(cfg.work.ansible_runner.verify_signature);
    assert_eq!(cfg.work.signing.expect("signing").token_expiration, Duration::from_secs(5400));
    // verifysignature without a key is never translated into unsigned work.
    let i = import("- work-command:\n    worktype: s\n    command: cat\n    verifysignature: true\n");
    assert_eq!(left_paths(&i), ["[0].work-command"]);
    assert!(load(&i).work.command.is_empty());
}

const TLS: &str = "- tls-server:\n    name: srv\n    cert: /c.crt\n    key: /c.key\n    clientcas: /ca.crt\n    requireclientcert: true\n\
                   - tls-client:\n    name: cli\n    cert: /c.crt\n    key: /c.key\n    rootcas: /ca2.crt\n";

#[test]
fn tls_configs_fold_into_one_section() {
    let i = import(&format!(
        "- tcp-listener:\n    port: 1\n    tls: srv\n- tcp-peer:\n    address: a:1\n    tls: cli\n\
         - control-service:\n    filename: /s\n    permissions: '0640'\n    tcplisten: 127.0.0.1:9\n    tcptls: srv\n{TLS}"
    ));
    assert!(i.left_out.is_empty(), "{:?}", i.left_out);
    let cfg = load(&i);
    let tls = cfg.tls.expect("tls");
    assert_eq!(tls.ca, [Path::new("/ca.crt"), Path::new("/ca2.crt")]);
    assert!(tls.require_client_cert);
    assert_eq!(cfg.peers[0].url.to_string(), "netceptors://a:1");
    assert_eq!(cfg.control.mode_bits(), 0o640);
    assert!(cfg.control.tcp_tls);
}

#[test]
fn the_mesh_control_service_keeps_go_s_tls_mode() {
    // tls= (AWX's execution nodes): user TLS streams, ConnType 2.
    let i = import(&format!("- control-service:\n    filename: /s\n    tls: srv\n{TLS}"));
    assert!(i.left_out.is_empty(), "{:?}", i.left_out);
    let cfg = load(&i);
    assert_eq!(cfg.netceptor.control_tls, Some(true));
    assert!(cfg.netceptor.advertise_control && cfg.tls.is_some());
    // No tls=, but [tls] for a listener: Go's insecure mode stays, said explicitly.
    let i = import(&format!(
        "- tcp-listener:\n    port: 1\n    tls: srv\n- control-service:\n    filename: /s\n{TLS}"
    ));
    assert_eq!(load(&i).netceptor.control_tls, Some(false));
    // No TLS anywhere: nothing to say (without [tls] the default is insecure mode).
    assert_eq!(load(&import("- control-service:\n    filename: /s\n")).netceptor.control_tls, None);
    // A tls-server that does not exist: not offered to Go nodes rather than offered plain.
    let i = import("- control-service:\n    filename: /s\n    tls: nope\n");
    assert_eq!(left_paths(&i), ["[0].control-service.tls"], "{:?}", i.left_out);
    let cfg = load(&i);
    assert!(!cfg.netceptor.advertise_control && cfg.control.mesh_service);
    // A server config that lets clients without certificates in: receptord demands one.
    let lax = TLS.replace("    requireclientcert: true\n", "");
    let i = import(&format!("- control-service:\n    filename: /s\n    tls: srv\n{lax}"));
    assert_eq!(left_paths(&i), ["[0].control-service.tls"], "{:?}", i.left_out);
    assert_eq!(load(&i).netceptor.control_tls, Some(true));
}

#[test]
fn tls_that_one_section_cannot_express_is_listed() {
    let sha256 = "AB:".repeat(31) + "AB";
    let sha512 = "cd".repeat(64);
    let i = import(&format!(
        "- tcp-peer:\n    address: a:1\n    tls: other\n- tcp-peer:\n    address: b:1\n    tls: cli\n- tcp-listener:\n    port: 2\n    tls: nope\n\
         - tls-client:\n    name: other\n    cert: /o.crt\n    key: /o.key\n    insecureskipverify: true\n    pinnedservercert: ['{sha256}', '{sha512}']\n{TLS}"
    ));
    assert_eq!(
        left_paths(&i),
        [
            "[3].tls-client.insecureskipverify",
            "[3].tls-client",
            "[5].tls-client.cert",
            "[3].tls-client.pinnedservercert[0]",
            "[3].tls-client.pinnedservercert[1]",
            "[2].tcp-listener",
        ],
        "{:#?}",
        i.left_out
    );
    let cfg = load(&i);
    assert!(cfg.tls.expect("tls").pinned_fingerprints.is_empty(), "pins only where every link pins");
    assert_eq!(cfg.listeners.len(), 0);
    // No CA anywhere: no [tls], and the TLS links are left out, never made plain.
    let i = import(
        "- tcp-peer:\n    address: a:1\n    tls: c\n- tls-client:\n    name: c\n    cert: /c\n    key: /k\n",
    );
    assert_eq!(left_paths(&i), ["[1].tls-client", "[1].tls-client", "[0].tcp-peer"], "{:#?}", i.left_out);
    let cfg = load(&i);
    assert!(cfg.peers.is_empty() && cfg.tls.is_none());
}

#[test]
fn invalid_input_is_an_error_not_a_translation() {
    for bad in [
        "{",
        "42",
        "- [1, 2]\n",
        "- tcp-listener:\n    port: http\n",
        "- tcp-peer:\n    cost: 1\n",
        "- tcp-peer:\n    address: a:1\n    cost: -1\n",
        "- node: a\n- node: b\n",
        "- work-signing:\n    privatekey: k\n    tokenexpiration: soon\n",
        "- control-service:\n    permissions: 999\n",
        "- tls-server:\n    cert: c\n",
        "- node:\n    id: [a]\n",
    ] {
        assert!(import_str(bad, &ImportOptions::default()).is_err(), "{bad:?} should be refused");
    }
    assert!(matches!(import_str("{", &ImportOptions::default()), Err(ImportError::Yaml(_))));
}

#[test]
fn hostile_yaml_is_bounded() {
    // Billion laughs: each level nine aliases of the previous one.
    let mut bomb = String::from("- a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = format!("*a{}", i - 1);
        bomb.push_str(&format!("- a{i}: &a{i} [{}]\n", [p.as_str(); 9].join(", ")));
    }
    let e = import_str(&bomb, &ImportOptions::default()).expect_err("an alias bomb is refused");
    assert!(matches!(e, ImportError::Yaml(ref m) if m.contains("repetition limit")), "{e}");
    // Deep nesting and oversized files.
    let deep = format!("- node: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(import_str(&deep, &ImportOptions::default()), Err(ImportError::Yaml(_))));
    let big = format!("- node: n\n#{}\n", "x".repeat(MAX_IMPORT_BYTES));
    assert!(matches!(import_str(&big, &ImportOptions::default()), Err(ImportError::TooLarge { .. })));
}

#[test]
fn go_durations_and_modes() {
    assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(go_duration("1.5h"), Some(Duration::from_secs(5400)));
    assert_eq!(go_duration("300ms"), Some(Duration::from_millis(300)));
    assert_eq!(go_duration("2m0s"), Some(Duration::from_secs(120)));
    for bad in ["", "5", "5x", "h", "1e400h", "99999999999h"] {
        assert_eq!(go_duration(bad), None, "{bad:?}");
    }
    assert_eq!(octal_mode("0660").as_deref(), Some("0660"));
    assert_eq!(octal_mode("660").as_deref(), Some("0660"));
    assert_eq!(octal_mode("0o600").as_deref(), Some("0600"));
    assert_eq!(octal_mode("1777"), None);
}

#[test]
fn websocket_backends_translate_with_path_and_extra_header() {
    let i = import(
        "- node:\n    id: n1\n- ws-listener:\n    port: 4001\n    bindaddr: 127.0.0.1\n    path: mesh\n\
         - ws-peer:\n    address: ws://go1:8080/receptor\n    extraheader: 'Authorization: Bearer x y'\n\
         - ws-peer:\n    address: ws://go2:8080\n    extraheader: junk\n",
    );
    assert_eq!(left_paths(&i), ["[3].ws-peer.extraheader"], "{:?}", i.left_out);
    let cfg = load(&i);
    assert_eq!(cfg.listeners[0].url.to_string(), "ws://127.0.0.1:4001/mesh");
    assert_eq!(cfg.peers[0].url.to_string(), "netceptor+ws://go1:8080/receptor");
    let ws = cfg.peers[0].url.ws.as_ref().expect("ws");
    assert_eq!(ws.headers, [("Authorization".to_owned(), "Bearer x y".to_owned())]);
    assert_eq!(cfg.peers[1].url.to_string(), "netceptor+ws://go2:8080/");
    let native =
        import_str("- ws-peer:\n    address: ws://r1:8080/x\n", &ImportOptions { native_peers: true })
            .expect("imports");
    assert!(native.toml.contains("url = \"ws://r1:8080/x\""), "{}", native.toml);
}
