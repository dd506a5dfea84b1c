//! The translated configuration written as TOML text, with a header that says how Go's
//! entries map and what was left out. Only keys whose value differs from Go's behaviour
//! under receptord's defaults are written; the result is checked by `Config::load` in tests.

use std::fmt::Write;

use super::{Link, Translation};

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}

const HEADER: &str = "\
# receptord configuration translated from a Go Receptor YAML configuration by
# `receptor config import`. Check it with: receptord --check-config --config FILE
#
# How Go's entries map:
# - tcp-listener -> [[listeners]] receptor:// (receptors:// with tls=): a receptord listener
#   also accepts Go Receptor peers on the same port ([netceptor] accept, the default), so
#   the Go nodes that dial this one (their tcp-peer) need no change, and receptord nodes
#   link to it natively.
# - tcp-peer -> [[peers]] netceptor:// (netceptors:// with tls=): the peer is a Go node,
#   whose listener speaks only Go's protocol. When it runs receptord too, change the URL
#   to receptor:// (receptors://), or import again with --native-peers.
# - ws-listener -> [[listeners]] ws:// (wss:// with tls=) on its path: it takes Go's ws-peer
#   and receptord's ws:// peers alike.
# - ws-peer -> [[peers]] netceptor+ws:// (netceptor+wss:// for wss://; ws:// and wss:// with
#   --native-peers); extraheader -> headers; proxies from HTTP(S)_PROXY as in Go.
# - udp-listener/udp-peer -> [[listeners]]/[[peers]] netceptor+udp:// (Go peers only; no TLS,
#   and UDP sources are spoofable: docs/SECURITY.md).
# - tls-server/tls-client -> the one [tls] section: receptord presents one certificate on
#   every TLS link, and a peer's certificate must name its node ID (Go checks the chain).
# - control-service -> [control] (its socket and mode; tcplisten with tcptls= -> tcp_listen
#   with tcp_tls); the mesh service \"control\" is also offered to Go nodes (AWX), with
#   user TLS where Go's had tls= ([netceptor] control_tls).
# - work-command -> [[work.command]] (params split shell-like into args, never run through a
#   shell); AWX's `ansible-runner worker` -> the built-in [work.ansible_runner].
# - work-signing/work-verification -> [work.signing]/[work.verification], accepting Go's
#   replayable tokens for submissions as the Go node did (accept_replayable_go_tokens).
";

/// The TOML text of `t`.
pub fn toml(t: &Translation) -> String {
    let mut o = String::from(HEADER);
    if t.left_out.is_empty() {
        o.push_str("#\n# Everything was translated.\n");
    } else {
        let _ = writeln!(o, "#\n# Left out ({}; receptord has no equivalent):", t.left_out.len());
        for l in &t.left_out {
            let _ = writeln!(o, "# - {}", l.to_string().replace('\n', " "));
        }
    }
    o.push_str("\n[node]\n");
    if let Some(id) = &t.node_id {
        let _ = writeln!(o, "id = {}", q(id));
    }
    // Go's default data directory.
    let _ = writeln!(o, "data_dir = {}", q(t.data_dir.as_deref().unwrap_or("/tmp/receptor")));
    let level = t.log_level.as_deref().unwrap_or("error"); // Go's default
    let _ = writeln!(o, "\n[log]\nlevel = {}", q(level));
    links(&mut o, "listeners", &t.listeners);
    links(&mut o, "peers", &t.peers);
    if let Some(tls) = &t.tls {
        let _ =
            writeln!(o, "\n[tls]\ncert = {}\nkey = {}\nca = {}", q(&tls.cert), q(&tls.key), list(&tls.ca));
        let _ = writeln!(o, "require_client_cert = {}", tls.require_client_cert);
        let _ = writeln!(o, "min_version = {}", q(tls.min_version));
        if !tls.pinned.is_empty() {
            let _ = writeln!(o, "pinned_fingerprints = {}", list(&tls.pinned));
        }
        if tls.skip_node_id_check {
            o.push_str("skip_node_id_check = true\n");
        }
    }
    control(&mut o, t);
    netceptor(&mut o, t);
    work(&mut o, t);
    o
}

/// How the mesh control service is served to Go nodes: with user TLS (ConnType 2) where
/// Go's had `tls=`, in Go's insecure mode (ConnType 1) where it had none, written out
/// whenever `[tls]` exists (whose presence alone would turn user TLS on).
fn netceptor(o: &mut String, t: &Translation) {
    let c = &t.control;
    if !c.present {
        return;
    }
    if c.mesh_withheld {
        o.push_str(
            "\n[netceptor]\n# Go served the control service with TLS that could not be translated (see above):\n\
             # not offered to Go nodes rather than offered without it.\nadvertise_control = false\n",
        );
    } else if c.mesh_tls.is_some() {
        o.push_str(
            "\n[netceptor]\n# Go's control-service tls=: served to Go nodes with user TLS (ConnType 2), each\n\
             # client's certificate naming its node.\ncontrol_tls = true\n",
        );
    } else if t.tls.is_some() {
        o.push_str(
            "\n[netceptor]\n# Go served the control service without tls= (ConnType 1), so Go controllers\n\
             # submit here without a TLS client; true serves it with [tls] and requires one.\ncontrol_tls = false\n",
        );
    }
}

fn links(o: &mut String, section: &str, links: &[Link]) {
    for l in links {
        let _ = writeln!(o, "\n# {}\n[[{section}]]\nurl = {}", l.path, q(&l.url.to_string()));
        if let Some(c) = l.cost {
            let _ = writeln!(o, "cost = {c:?}");
        }
        if !l.headers.is_empty() {
            let pairs: Vec<String> = l.headers.iter().map(|(k, v)| format!("{} = {}", q(k), q(v))).collect();
            let _ = writeln!(o, "headers = {{ {} }}", pairs.join(", "));
        }
    }
}

fn control(o: &mut String, t: &Translation) {
    let c = &t.control;
    o.push_str("\n[control]\n");
    if !c.present {
        o.push_str("# Go ran no control-service.\nenabled = false\nmesh_service = false\n");
        return;
    }
    if let Some(s) = &c.socket {
        let _ = writeln!(o, "socket = {}", q(s));
    }
    if let Some(m) = &c.mode {
        let _ = writeln!(o, "mode = {}", q(m));
    }
    if let Some(l) = &c.tcp_listen {
        let _ = writeln!(o, "tcp_listen = {}\ntcp_tls = true", q(l));
    }
}

fn work(o: &mut String, t: &Translation) {
    for c in &t.commands {
        let _ = writeln!(o, "\n[[work.command]]\nname = {}\nprogram = {}", q(&c.name), q(&c.program));
        let _ = writeln!(o, "args = {}", list(&c.args));
        let _ = writeln!(o, "allow_runtime_params = {}", c.allow_runtime_params);
        let _ = writeln!(o, "verify_signature = {}", c.verify_signature);
    }
    o.push_str("\n[work.ansible_runner]\n");
    match &t.ansible_runner {
        None => o.push_str("# Go offered no ansible-runner work type.\nenabled = false\n"),
        Some(a) => {
            o.push_str("enabled = true\n");
            if let Some(p) = &a.path {
                let _ = writeln!(o, "path = {}", q(p));
            }
            let _ = writeln!(o, "verify_signature = {}", a.verify_signature);
        }
    }
    if let Some((key, expiration)) = &t.signing {
        let _ = writeln!(o, "\n[work.signing]\nprivate_key = {}", q(key));
        if let Some(d) = expiration {
            let _ = writeln!(o, "token_expiration = {}", q(&humantime::format_duration(*d).to_string()));
        }
    }
    if let Some(key) = &t.verification {
        let _ = writeln!(o, "\n[work.verification]\npublic_key = {}", q(key));
        // Go's own behaviour: its control nodes (AWX) sign with Go tokens (aud and exp only).
        o.push_str(
            "# Go control nodes (AWX) sign with Go's tokens, replayable until they expire, as the Go\n\
             # node this replaces accepted them; set false once every submitter is receptord.\n\
             accept_replayable_go_tokens = true\n",
        );
    }
}
