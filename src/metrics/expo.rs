//! The two exposition formats `/metrics` speaks and the choice between them. The registry
//! encodes OpenMetrics 1.0; Prometheus' own text format (0.0.4) is what `promtool check
//! metrics`, older scrapers and anyone with curl read, so it is the default, and OpenMetrics
//! is served only when the `Accept` header prefers it (as Prometheus' scraper does).
//!
//! The conversion is line by line, over the text this crate's registry writes: a counter
//! family is named with its `_total` sample name, an `info` family becomes the gauge
//! `<name>_info`, and `# UNIT` / `# EOF` lines are dropped. Sample lines are the same in
//! both formats.

/// Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics text format 1.0.0.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_TEXT,
            Format::OpenMetrics => OPENMETRICS,
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it weighs
    /// `application/openmetrics-text` above `text/plain` (and above zero), else the
    /// Prometheus text format. Only the first 64 entries are read.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Prometheus };
        let (mut om, mut text) = (0.0f32, 0.0f32);
        for entry in accept.split(',').take(64) {
            let mut parts = entry.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            // A weight that is not a number between 0 and 1 makes the entry unacceptable.
            let q = match parts.find_map(|p| p.trim().strip_prefix("q=")) {
                None => 1.0,
                Some(v) => v.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0),
            };
            match media.as_str() {
                "application/openmetrics-text" => om = om.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text { Format::OpenMetrics } else { Format::Prometheus }
    }
}

/// Rewrites an OpenMetrics exposition (as the registry encodes it) in the Prometheus text
/// format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // prometheus-client writes HELP then TYPE for each family.
            let kind = lines
                .peek()
                .and_then(|t| t.strip_prefix("# TYPE "))
                .and_then(|t| t.strip_prefix(name))
                .map(|t| t.trim().to_owned());
            let (name, kind) = match kind.as_deref() {
                Some("counter") => (format!("{name}_total"), "counter"),
                Some("info") => (format!("{name}_info"), "gauge"),
                Some("stateset") | Some("gaugehistogram") | Some("unknown") | None => {
                    (name.to_owned(), "untyped")
                }
                Some(_) => (name.to_owned(), kind.as_deref().unwrap_or("untyped")),
            };
            if lines.peek().is_some_and(|t| t.starts_with("# TYPE ")) {
                lines.next();
            }
            // 0.0.4 escapes only `\` and newlines in HELP; OpenMetrics also escapes `"`.
            let help = help.replace("\\\"", "\"");
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            // A TYPE line without HELP: keep its family name but in 0.0.4's terms.
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            match kind.trim() {
                "counter" => out.push_str(&format!("# TYPE {name}_total counter\n")),
                "info" => out.push_str(&format!("# TYPE {name}_info gauge\n")),
                "gauge" | "histogram" | "summary" => out.push_str(&format!("{line}\n")),
                _ => out.push_str(&format!("# TYPE {name} untyped\n")),
            }
            continue;
        }
        // `_created` samples have no place in 0.0.4 (the registry writes none today).
        if line.split(['{', ' ']).next().is_some_and(|n| n.ends_with("_created")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        use Format::*;
        assert_eq!(Format::negotiate(None), Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Prometheus);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text")), OpenMetrics);
        // Prometheus 2.x's scraper.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                    text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.3")),
            Prometheus
        );
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0")), Prometheus);
        assert_eq!(Format::negotiate(Some("application/OpenMetrics-Text; q=nan")), Prometheus);
    }

    #[test]
    fn counters_and_info_are_renamed_and_eof_dropped() {
        let om = "# HELP r_build Build information.\n# TYPE r_build info\nr_build_info{v=\"1\"} 1\n\
                  # HELP r_x Xs.\n# TYPE r_x counter\nr_x_total{a=\"b\"} 3\n\
                  # HELP r_d_seconds D.\n# TYPE r_d_seconds histogram\n# UNIT r_d_seconds seconds\n\
                  r_d_seconds_sum 1.0\nr_d_seconds_count 1\nr_d_seconds_bucket{le=\"+Inf\"} 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP r_build_info Build information.\n# TYPE r_build_info gauge\nr_build_info{v=\"1\"} 1\n\
             # HELP r_x_total Xs.\n# TYPE r_x_total counter\nr_x_total{a=\"b\"} 3\n\
             # HELP r_d_seconds D.\n# TYPE r_d_seconds histogram\n\
             r_d_seconds_sum 1.0\nr_d_seconds_count 1\nr_d_seconds_bucket{le=\"+Inf\"} 1\n"
        );
    }
}
