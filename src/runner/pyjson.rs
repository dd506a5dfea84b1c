//! Python `json.dumps(obj)` (default arguments) byte-for-byte, so that every JSON line we put on
//! an ansible-runner stream is identical to what a Python peer would write (spec §0.1).
//!
//! Default Python output differs from serde's compact form: `", "` and `": "` separators,
//! `ensure_ascii` (`\uXXXX`, lowercase hex, surrogate pairs above U+FFFF; DEL too, as `\u007f`,
//! although the spec says raw — checked against Python 3.11) and Python `repr`
//! for floats (`1e-05`, `1.5e+16`, `100.0`). Key order is insertion order (serde_json is built
//! with `preserve_order`).
//!
//! Known limits, all inherited from `serde_json::Value`: integers beyond the `i64`/`u64` range
//! and the non-standard tokens `NaN`/`Infinity` cannot be represented, so they never reach this
//! writer (serde_json turns big integers into floats and rejects the tokens when parsing).
//! Without serde_json's `float_roundtrip` feature, parsing may also land one ULP off for about
//! 1 in 20 random floats, so re-serialising a *parsed* Python float can differ in the last
//! digit; keep the raw line when byte identity matters (job event files do).

use serde_json::{Number, Value};
use std::fmt::Write as _;

/// Python's default `json.dumps` spelling.
const PYTHON: crate::jsonfmt::Dialect =
    crate::jsonfmt::Dialect { item_sep: ", ", key_sep: ": ", string: write_str, number: write_number };

/// Serialises `v` exactly like Python's `json.dumps(v)`.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    crate::jsonfmt::write(&mut out, v, &PYTHON);
    out
}

/// `to_string(v)` followed by one LF, as the bytes of a stream line.
pub fn line(v: &Value) -> Vec<u8> {
    let mut s = to_string(v);
    s.push('\n');
    s.into_bytes()
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        out.push_str(&float_repr(f));
    } else {
        // Only reachable with serde_json's arbitrary_precision feature; its text is already JSON.
        out.push_str(&n.to_string());
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form when the decimal exponent
/// is below -4 or at least 16.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let sci = shortest_sci(f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exp) {
        fixed_notation(&digits, exp)
    } else {
        let mut m = digits[..1].to_owned();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{esign}{:02}", exp.unsigned_abs())
    };
    format!("{sign}{body}")
}

/// Shortest round-trip digits in `{:e}` form (e.g. "-1.2345e-7", "0e0"), with Python's tie rule.
///
/// `{:e}` picks the right digit count but, when the exact binary value lies exactly halfway
/// between two shortest candidates (e.g. ...068.25 → .2 or .3), rounds up, while Python's
/// `dtoa` rounds half to even. Re-formatting with that many digits in Rust's exact mode (which
/// rounds half to even) fixes this; the exact candidate is used only if it still round-trips.
fn shortest_sci(f: f64) -> String {
    let sci = format!("{f:e}");
    let mantissa = sci.split_once('e').map_or(sci.as_str(), |(m, _)| m);
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    if digits < 2 {
        return sci;
    }
    let exact = format!("{f:.prec$e}", prec = digits - 1);
    if exact != sci && exact.parse::<f64>() == Ok(f) { exact } else { sci }
}

/// Places the decimal point in `digits` (d1 d2 d3 ... meaning d1.d2d3 × 10^exp).
fn fixed_notation(digits: &str, exp: i32) -> String {
    if exp < 0 {
        let zeros = "0".repeat(exp.unsigned_abs() as usize - 1);
        return format!("0.{zeros}{digits}");
    }
    let point = exp as usize + 1;
    if digits.len() > point {
        format!("{}.{}", &digits[..point], &digits[point..])
    } else {
        format!("{digits}{}.0", "0".repeat(point - digits.len()))
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
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn separators_and_order() {
        let v: Value =
            serde_json::from_str(r#"{"b": 1, "a": [1, 2, {"x": null}], "c": true}"#).expect("valid json");
        assert_eq!(to_string(&v), r#"{"b": 1, "a": [1, 2, {"x": null}], "c": true}"#);
        assert_eq!(line(&json!({"eof": true})), b"{\"eof\": true}\n");
        assert_eq!(to_string(&json!({})), "{}");
        assert_eq!(to_string(&json!([])), "[]");
    }

    #[test]
    fn string_escapes_match_python() {
        let v = json!("a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1b}i\u{0}/\u{7f}");
        assert_eq!(to_string(&v), r#""a\"b\\c\nd\re\tf\bg\fh\u001bi\u0000/\u007f""#);
        // json.dumps("héllo ✓ 😀") in Python 3.11
        assert_eq!(to_string(&json!("héllo ✓ 😀")), r#""h\u00e9llo \u2713 \ud83d\ude00""#);
        assert_eq!(to_string(&json!("\u{ffff}")), r#""\uffff""#);
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (0.018666, "0.018666"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e16, "1.5e+16"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (1.2345e-7, "1.2345e-07"),
            (1e100, "1e+100"),
            (9999999999999998.0, "9999999999999998.0"),
            // Exact halfway cases: Python rounds the last digit half to even.
            (1297737583407068.2, "1297737583407068.2"),
            (89612309705156.12, "89612309705156.12"),
            (157426029420678.62, "157426029420678.62"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "{f:e}");
        }
        assert_eq!(float_repr(f64::NAN), "NaN");
        assert_eq!(float_repr(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(
            to_string(&json!({"d": 0.25, "i": -3, "u": u64::MAX})),
            r#"{"d": 0.25, "i": -3, "u": 18446744073709551615}"#
        );
    }

    #[test]
    fn roundtrips_a_real_event_line() {
        let raw = concat!(
            r#"{"uuid": "02fc0000-0001-5c1b-78b0-000000000002", "counter": 2, "stdout": "\r\nPLAY "#,
            r#"[x] \u001b[0;32m\u00e9\u001b[0m", "start_line": 0, "end_line": 2, "event_data": "#,
            r#"{"duration": 0.018666, "res": {"changed": false, "msg": "h\u00e9llo \u2713 \ud83d\ude00"}}}"#
        );
        let v: Value = serde_json::from_str(raw).expect("valid json");
        assert_eq!(to_string(&v), raw);
    }
}
