//! `receptor status` as data against a real mesh: the JSON document, DOT accepted by
//! graphviz `dot`, and `--svg` rendered to PNG by `rsvg-convert` (librsvg).

mod common;

use std::process::{Command, Stdio};

use common::*;

fn tool(name: &str) -> std::path::PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
        .unwrap_or_default();
    found.unwrap_or_else(|| panic!("{name} is not installed (make test installs graphviz and librsvg2-bin)"))
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[test]
fn status_json_graph_and_svg_describe_the_mesh() {
    let (n1, _n2, n3) = line3(CAT);

    let out = receptor(&n1, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(doc["schema_version"], 1);
    let nodes = doc["nodes"].as_array().expect("nodes");
    let ids: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
    for id in ["node1", "node2", "node3"] {
        assert!(ids.contains(&id), "{id} missing: {doc}");
    }
    let me = doc["node_id"].as_str().expect("node_id");
    let client = nodes.iter().find(|n| n["id"] == me).expect("the client's own node");
    assert_eq!(client["ephemeral"], true);
    let node3 = nodes.iter().find(|n| n["id"] == "node3").expect("node3");
    assert!(node3["work_types"].as_array().expect("work types").iter().any(|w| w["name"] == "cat"));
    let links = doc["links"].as_array().expect("links");
    assert!(
        links
            .iter()
            .any(|l| l["a"] == "node2" && l["b"] == "node3" && l["confirmed"] == true && l["cost_a"] == 1.0)
    );
    let routes = doc["routes"].as_array().expect("routes");
    assert!(routes.iter().any(|r| r["destination"] == "node3" && r["hops"] == 3), "{doc}");

    // DOT, checked by graphviz itself.
    let out = receptor(&n1, &["status", "--graph"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dot_text = stdout(&out);
    // This command's own short-lived node (a new one per command) is drawn apart.
    let cluster = dot_text.split("subgraph cluster_clients").nth(1).expect("a client cluster");
    assert!(cluster.split('}').next().is_some_and(|c| c.contains("\"receptor-client-")), "{dot_text}");
    assert!(dot_text.contains("\"node2\" -- \"node3\" [label=\"1\""), "{dot_text}");
    let mut dot = Command::new(tool("dot"))
        .args(["-Tplain"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dot");
    std::io::Write::write_all(&mut dot.stdin.take().expect("stdin"), dot_text.as_bytes()).expect("feed dot");
    let laid = dot.wait_with_output().expect("dot output");
    assert!(laid.status.success() && laid.stderr.is_empty(), "dot refused: {}", stderr(&laid));
    let plain = stdout(&laid);
    for id in ["node1", "node2", "node3"] {
        assert!(plain.lines().any(|l| l.starts_with(&format!("node {id} "))), "{plain}");
    }

    // SVG from the tool itself, rendered to PNG by librsvg.
    let dir = tempfile::tempdir().expect("tempdir");
    let (svg, png) = (dir.path().join("mesh.svg"), dir.path().join("mesh.png"));
    let out = receptor(&n1, &["status", "--svg", svg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conv = Command::new(tool("rsvg-convert")).arg(&svg).arg("-o").arg(&png).output().expect("rsvg");
    assert!(conv.status.success(), "rsvg-convert: {}", stderr(&conv));
    let (w, h) = png_size(&std::fs::read(&png).expect("png"));
    assert!((100..=4000).contains(&w) && (100..=4000).contains(&h), "{w}x{h}");
    drop(n3);
}

#[test]
fn every_json_flag_prints_json() {
    let (n1, _n2, n3) = line3(CAT);
    let ping = receptor(&n1, &["ping", "node3", "-c", "2", "--json"]);
    assert!(ping.status.success(), "{}", stderr(&ping));
    for line in stdout(&ping).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(v["node"], "node3");
        assert!(v["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{v}");
    }
    let trace = receptor(&n1, &["traceroute", "node3", "--json"]);
    assert!(trace.status.success(), "{}", stderr(&trace));
    let hops: Vec<serde_json::Value> =
        stdout(&trace).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(hops.last().expect("hops")["node"], "node3");
    // Exit status 1 with a message when the node is unknown, in both modes.
    let unknown = receptor(&n1, &["ping", "nowhere", "-c", "1", "--json"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("not known"), "{}", stderr(&unknown));
    drop(n3);
}

#[test]
fn work_commands_print_json_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (control, sock) = with_socket("j1", dir.path());
    let _d = Daemon::start(Spec::new("j1").extra(CAT).extra(&control));
    let work = |args: &[&str]| {
        let out = Command::new(RECEPTOR)
            .arg("--socket")
            .arg(&sock)
            .arg("work")
            .args(args)
            .output()
            .expect("receptor");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON output")
    };
    let created = work(&["submit", "cat", "-l", "hi", "--json"]);
    let unit = created["unit_id"].as_str().expect("unit_id").to_owned();
    assert!(created["result"].as_str().is_some(), "{created}");
    let cancelled = work(&["cancel", &unit, "--json"]);
    assert!(cancelled[&unit].is_string(), "{cancelled}");
    let released = work(&["release", &unit, "--json"]);
    assert!(released[&unit].is_string(), "{released}");
    let listed = work(&["list"]);
    assert!(listed.get(&unit).is_none(), "{listed}");
    // An unknown unit: exit 1, the reason on stderr, nothing on stdout.
    let out = Command::new(RECEPTOR)
        .arg("--socket")
        .arg(&sock)
        .args(["work", "cancel", "nosuch1", "--json"])
        .output()
        .expect("receptor");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() && stderr(&out).contains("nosuch1"), "{}", stderr(&out));
}
