//! One JSON writer for the byte-exact dialects peers expect (Python's `json.dumps` for
//! ansible-runner streams, Go's `encoding/json` for receptorctl): the walk is shared, the
//! separators and the way strings and numbers are spelled are the dialect's.

use serde_json::{Number, Value};

/// How one dialect spells JSON.
pub struct Dialect {
    /// Between array items and object members.
    pub item_sep: &'static str,
    /// Between an object key and its value.
    pub key_sep: &'static str,
    pub string: fn(&mut String, &str),
    pub number: fn(&mut String, &Number),
}

/// Appends `v` to `out` in `dialect`, object members in their stored order.
pub fn write(out: &mut String, v: &Value, dialect: &Dialect) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => (dialect.number)(out, n),
        Value::String(s) => (dialect.string)(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(dialect.item_sep);
                }
                write(out, item, dialect);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(dialect.item_sep);
                }
                (dialect.string)(out, k);
                out.push_str(dialect.key_sep);
                write(out, item, dialect);
            }
            out.push('}');
        }
    }
}
