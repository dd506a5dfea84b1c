//! The mesh as a Graphviz DOT graph: nodes with their work types, links with their costs
//! (dashed when only one end lists them), the viewing node highlighted, and short-lived
//! clients drawn apart in their own cluster. Every name from the network is escaped.

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

fn node_line(out: &mut String, n: &NodeDoc, viewer: &str, indent: &str) {
    // Lines of the label joined with DOT's `\n` escape, each part escaped on its own.
    let mut parts = vec![n.id.clone()];
    if n.id == viewer {
        parts.push("(this view)".into());
    }
    parts.extend(n.work_types.iter().map(|w| format!("{} {}", w.name, w.version)));
    if n.protocol == "netceptor" {
        parts.push("(Go Receptor)".into());
    }
    let label: Vec<String> = parts.iter().map(|p| escape(p)).collect();
    let (shape, fill) = match (n.ephemeral, n.id == viewer) {
        _ if n.protocol == "netceptor" => ("box", "#ffe0b2"),
        (true, _) => ("ellipse", "#eeeeee"),
        (false, true) => ("box", "#c8e6c9"),
        (false, false) => ("box", "#e3f2fd"),
    };
    let _ = writeln!(
        out,
        "{indent}{} [label=\"{}\", shape={shape}, fillcolor=\"{fill}\"];",
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
        assert!(dot.contains("n2\\nansible_runner 1"), "{dot}");
        assert!(dot.contains("we\\\"ird\\\\ 1"), "{dot}");
    }
}
