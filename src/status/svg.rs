//! SVG of the mesh without leaving the tool: the DOT text from [`super::dot`] laid out
//! and drawn by `layout-rs`, a pure-Rust Graphviz-style layout.
//!
//! Why not graphviz `dot`: it is not installed on most managed hosts, and running it
//! would make the client spawn a program outside the `work` module (house rule). For
//! Graphviz's own drawing, pipe `receptor status --graph` into `dot -Tsvg`.

use layout::backends::svg::SVGWriter;
use layout::gv::{DotParser, GraphBuilder};

/// Why no SVG could be drawn.
#[derive(Debug, thiserror::Error)]
pub enum SvgError {
    #[error("cannot parse the mesh graph: {0}")]
    Parse(String),
    #[error("the layout engine failed on this graph")]
    Layout,
}

/// Lays out and draws `dot` as an SVG document.
pub fn render(dot: &str) -> Result<String, SvgError> {
    let mut parser = DotParser::new(dot);
    let graph = parser.process().map_err(SvgError::Parse)?;
    // The layout engine asserts on inputs it cannot handle; contain that to an error.
    std::panic::catch_unwind(move || {
        let mut builder = GraphBuilder::new();
        builder.visit_graph(&graph);
        let mut visual = builder.get();
        let mut svg = SVGWriter::new();
        visual.do_it(false, false, false, &mut svg);
        svg.finalize()
    })
    .map_err(|_| SvgError::Layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusDoc;
    use crate::status::tests::sample;

    #[test]
    fn the_sample_mesh_draws() {
        let dot = crate::status::dot::to_dot(&StatusDoc::from_mesh(&sample()));
        let svg = render(&dot).expect("svg");
        assert!(svg.contains("<svg"), "{svg}");
        for name in ["n1", "n2", "n3", "cli-1", "ansible_runner", "(down)"] {
            assert!(svg.contains(name), "{name} missing from {svg}");
        }
        // The colours docs/STATUS.md names: the viewing node green, nodes without a route red.
        for fill in [crate::status::dot::VIEWER_FILL, crate::status::dot::DOWN_FILL] {
            assert!(svg.contains(fill), "{fill} missing from {svg}");
        }
    }
}
