//! The mesh as a Graphviz DOT graph: nodes with their work types, links with their costs
//! (dashed when only one end lists them), the viewing node in green, nodes without a route
//! from it drawn as down (red, dashed, "(down)"), and short-lived clients drawn apart in
//! their own cluster. Every name from the network is escaped.

use std::fmt::Write;

use super::{LinkDoc, NodeDoc, StatusDoc};

/// A DOT double-quoted string: quotes and backslashes escaped, control characters dropped.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

/// The inside of a DOT double-quoted string.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn cost(c: f64) -> String {
    if c.fract() == 0.0 && c.abs() < 1e15 { format!("{c:.0}") } else { format!("{c}") }
}

/// Fill colours (docs/STATUS.md): the viewing node green, other nodes blue, short-lived
/// clients grey, nodes without a route red.
pub const VIEWER_FILL: &str = "#c8e6c9";
pub const NODE_FILL: &str = "#e3f2fd";
pub const CLIENT_FILL: &str = "#eeeeee";
pub const DOWN_FILL: &str = "#ffcdd2";
/// Go Receptor nodes, known through a daemon's netceptor plane.
pub const GO_FILL: &str = "#ffe0b2";

/// One line per work type; the ansible-runner type, advertised under both its mesh-job
/// name (`ansible_runner`) and its AWX work-unit name (`ansible-runner`), is one line.
fn work_type_lines(n: &NodeDoc) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for w in &n.work_types {
        let twin = match w.name.as_str() {
            "ansible_runner" => Some("ansible-runner"),
            "ansible-runner" => Some("ansible_runner"),
            _ => None,
        };
        let paired = twin.is_some_and(|t| n.work_types.iter().any(|o| o.name == t && o.version == w.version));
        if paired && w.name == "ansible_runner" {
            continue;
        }
        lines.push(format!("{} {}", w.name, w.version));
    }
    lines
}

fn node_line(out: &mut String, n: &NodeDoc, viewer: &str, indent: &str) {
    // Lines of the label joined with DOT's `\n` escape, each part escaped on its own.
    let mut parts = vec![n.id.clone()];
    if n.id == viewer {
        parts.push("(this view)".into());
    } else if !n.reachable {
        parts.push("(down)".into());
    }
    parts.extend(work_type_lines(n));
    if n.protocol == "netceptor" {
        parts.push("(Go Receptor)".into());
    }
    let label: Vec<String> = parts.iter().map(|p| escape(p)).collect();
    let shape = if n.ephemeral { "ellipse" } else { "box" };
    let (fill, style) = match (n.id == viewer, n.reachable, n.ephemeral) {
        _ if n.protocol == "netceptor" => (GO_FILL, "rounded,filled"),
        (true, _, _) => (VIEWER_FILL, "rounded,filled"),
        (false, false, _) => (DOWN_FILL, "rounded,filled,dashed"),
        (false, true, true) => (CLIENT_FILL, "rounded,filled"),
        (false, true, false) => (NODE_FILL, "rounded,filled"),
    };
    let _ = writeln!(
        out,
        "{indent}{} [label=\"{}\", shape={shape}, style=\"{style}\", fillcolor=\"{fill}\"];",
        quote(&n.id),
        label.join("\\n")
    );
}

fn link_line(out: &mut String, l: &LinkDoc) {
    let label = match (l.cost_a, l.cost_b) {
        (Some(a), Some(b)) if a == b => cost(a),
        (Some(a), Some(b)) => format!("{} / {}", cost(a), cost(b)),
        (Some(c), None) | (None, Some(c)) => format!("{} (unconfirmed)", cost(c)),
        (None, None) => String::new(),
    };
    let style = if l.confirmed { "solid" } else { "dashed" };
    // A native link carrying a netceptor session says so in its label.
    let label = if l.carries.is_some() { format!("{label} (+netceptor)") } else { label };
    if l.protocol == "netceptor" {
        // Go Receptor (netceptor) links: a different colour, the protocol in the label.
        let label = format!("{label} (netceptor)");
        let _ = writeln!(
            out,
            "  {} -- {} [label={}, style={style}, color=\"#e65100\"];",
            quote(&l.a),
            quote(&l.b),
            quote(&label)
        );
        return;
    }
    let _ = writeln!(out, "  {} -- {} [label={}, style={style}];", quote(&l.a), quote(&l.b), quote(&label));
}

/// The DOT text of `doc`.
pub fn to_dot(doc: &StatusDoc) -> String {
    let mut out = String::new();
    out.push_str("graph mesh {\n");
    let _ = writeln!(out, "  label={};", quote(&format!("receptor mesh as seen by {}", doc.node_id)));
    out.push_str("  labelloc=t;\n  fontname=\"sans-serif\";\n");
    out.push_str("  node [style=\"rounded,filled\", fontname=\"sans-serif\"];\n");
    out.push_str("  edge [fontname=\"sans-serif\"];\n");
    for n in doc.nodes.iter().filter(|n| !n.ephemeral) {
        node_line(&mut out, n, &doc.node_id, "  ");
    }
    if doc.nodes.iter().any(|n| n.ephemeral) {
        out.push_str("  subgraph cluster_clients {\n");
        out.push_str("    label=\"short-lived clients\";\n    style=dashed;\n");
        for n in doc.nodes.iter().filter(|n| n.ephemeral) {
            node_line(&mut out, n, &doc.node_id, "    ");
        }
        out.push_str("  }\n");
    }
    for l in &doc.links {
        link_line(&mut out, l);
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::sample;

    #[test]
    fn dot_has_nodes_links_costs_and_a_client_cluster() {
        let dot = to_dot(&StatusDoc::from_mesh(&sample()));
        assert!(dot.starts_with("graph mesh {"), "{dot}");
        assert!(dot.contains("\"n1\" -- \"n2\" [label=\"1 / 2.5\", style=solid]"), "{dot}");
        assert!(dot.contains("\"n2\" -- \"n3\" [label=\"1 (unconfirmed)\", style=dashed]"), "{dot}");
        let cluster = dot.split("subgraph cluster_clients").nth(1).expect("cluster");
        assert!(cluster.contains("\"cli-1\""), "{dot}");
        assert!(dot.contains("n2\\n(down)\\nansible_runner 1"), "{dot}");
        assert!(dot.contains("we\\\"ird\\\\ 1"), "{dot}");
        // The viewer (a client here) is green; n2 and n3 have no route: down.
        assert!(dot.contains(&format!("\"cli-1\" [label=\"cli-1\\n(this view)\", shape=ellipse, style=\"rounded,filled\", fillcolor=\"{VIEWER_FILL}\"]")), "{dot}");
        assert!(dot.contains("\"n3\" [label=\"n3\\n(down)\\nwe"), "{dot}");
        assert!(
            dot.contains(&format!("style=\"rounded,filled,dashed\", fillcolor=\"{DOWN_FILL}\"")),
            "{dot}"
        );
    }

    #[test]
    fn the_ansible_runner_type_is_drawn_once() {
        let wt = |n: &str| crate::status::WorkTypeDoc { name: n.into(), version: "1".into() };
        let n = NodeDoc {
            id: "n".into(),
            ephemeral: false,
            epoch: 0,
            seq: 0,
            work_types: vec![wt("ansible-runner"), wt("ansible_runner"), wt("cat")],
            reachable: true,
            protocol: "receptor".into(),
        };
        assert_eq!(work_type_lines(&n), ["ansible-runner 1", "cat 1"]);
    }
}
