//! JSON as Go's `encoding/json` writes it, which receptorctl and AWX read: compact, object
//! keys in the order given (callers sort maps, as Go does), integral floats without `.0`,
//! `<`, `>`, `&` and U+2028/9 escaped. Plus Go's `Duration.String()` format.

use std::fmt::Write;
use std::time::Duration;

use serde_json::Value;

/// Go's `encoding/json` spelling.
const GO: crate::jsonfmt::Dialect =
    crate::jsonfmt::Dialect { item_sep: ",", key_sep: ":", string: write_str, number: write_number };

/// Encodes `v` like Go's `json.Marshal` (no trailing newline).
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    crate::jsonfmt::write(&mut out, v, &GO);
    out
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
        if f.fract() == 0.0 && f.abs() < 1e21 {
            let _ = write!(out, "{}", f as i64);
        } else {
            let _ = write!(out, "{f}");
        }
    } else {
        let _ = write!(out, "{n}");
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `time.Duration.String()`: `850ns`, `1.5µs`, `1.234567ms`, `1m1.5s`, `1h0m0s`.
pub fn duration_string(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs = ns / 1_000_000_000;
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = frac(ns % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `value / unit` with the fractional part's trailing zeros (and a bare point) dropped.
fn frac(value: u128, unit: u128) -> String {
    let (whole, rest) = (value / unit, value % unit);
    if rest == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_like_go() {
        let v = json!({"B": 1.0, "a": [1.5, 2], "s": "<x&y>\u{2028}é", "n": null});
        assert_eq!(to_string(&v), r#"{"B":1,"a":[1.5,2],"s":"\u003cx\u0026y\u003e\u2028é","n":null}"#);
    }

    #[test]
    fn durations_like_go() {
        let cases = [
            (0, "0s"),
            (850, "850ns"),
            (1_500, "1.5µs"),
            (41_000, "41µs"),
            (1_234_567, "1.234567ms"),
            (1_000_000_000, "1s"),
            (61_500_000_000, "1m1.5s"),
            (120_000_000_000, "2m0s"),
            (3_600_000_000_000, "1h0m0s"),
        ];
        for (ns, want) in cases {
            assert_eq!(duration_string(Duration::from_nanos(ns)), want, "{ns}");
        }
    }
}
