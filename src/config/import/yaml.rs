//! Go Receptor's YAML configuration read as a list of entries (`- tcp-peer: {...}`), each
//! with its parameters, whatever shape the file has: Go 1.4's list of one-key maps, or the
//! later `version: 2` map of sections. Keys are matched case-insensitively, as Go's
//! `cmdline` does; a scalar in place of the parameter map is the entry's bare value
//! (`- log-level: debug`). Input is bounded before parsing: the file's size here, and
//! alias expansion and nesting depth by the YAML parser (a "billion laughs" file fails).

use std::collections::BTreeMap;

use serde_norway::Value;

use super::ImportError;

/// Largest YAML file read: Go configs are a few kilobytes.
pub const MAX_IMPORT_BYTES: usize = 1 << 20;

/// Most entries in one file.
pub const MAX_ENTRIES: usize = 10_000;

/// One configuration entry (`node`, `tcp-peer`, ...) and its parameters, lower-cased.
#[derive(Debug)]
pub struct Entry {
    /// Where it is in the file: `[3].tcp-peer` (a list item) or `tcp-peers[0]` (version 2).
    pub path: String,
    /// The entry type, lower-cased (`tcp-peer`).
    pub name: String,
    params: BTreeMap<String, (String, Value)>,
}

/// The parameter a bare scalar value stands for (Go's `barevalue:"yes"`).
fn bare_param(name: &str) -> &'static str {
    match name {
        "node" => "id",
        "log-level" => "level",
        "tcp-listener" | "udp-listener" | "ws-listener" => "port",
        "tcp-peer" | "udp-peer" | "ws-peer" => "address",
        "work-signing" => "privatekey",
        "work-verification" => "publickey",
        _ => "",
    }
}

/// Parses `text` into entries, in file order.
pub fn entries(text: &str) -> Result<Vec<Entry>, ImportError> {
    if text.len() > MAX_IMPORT_BYTES {
        return Err(ImportError::TooLarge { max: MAX_IMPORT_BYTES });
    }
    let doc: Value = serde_norway::from_str(text).map_err(|e| ImportError::Yaml(e.to_string()))?;
    let mut out = Vec::new();
    match doc {
        Value::Null => {}
        Value::Sequence(items) => {
            for (i, item) in items.into_iter().enumerate() {
                let Value::Mapping(map) = item else {
                    return Err(invalid(
                        format!("[{i}]"),
                        "each list item must be a map such as `- node: {...}`",
                    ));
                };
                for (k, v) in map {
                    let name = key(&k, &format!("[{i}]"))?;
                    out.push(entry(format!("[{i}].{name}"), &name, v)?);
                }
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                let name = key(&k, "")?;
                let lower = name.to_ascii_lowercase();
                if lower == "version" {
                    continue;
                }
                match v {
                    // version 2: `tcp-peers: [ {...}, ... ]` holds `tcp-peer` entries.
                    Value::Sequence(items) if lower.ends_with('s') => {
                        let single = singular(&lower);
                        for (i, item) in items.into_iter().enumerate() {
                            out.push(entry(format!("{name}[{i}]"), single, item)?);
                        }
                    }
                    v => out.push(entry(name.clone(), &name, v)?),
                }
            }
        }
        _ => return Err(invalid(String::new(), "a Go Receptor config is a list of entries (`- node: ...`)")),
    }
    if out.len() > MAX_ENTRIES {
        return Err(invalid(String::new(), &format!("more than {MAX_ENTRIES} entries")));
    }
    Ok(out)
}

fn singular(plural: &str) -> &str {
    match plural {
        // `work-kubernetes` is its own plural.
        "work-kubernetes" => plural,
        p => &p[..p.len() - 1],
    }
}

fn key(k: &Value, at: &str) -> Result<String, ImportError> {
    match k {
        Value::String(s) => Ok(s.clone()),
        _ => Err(invalid(at.to_owned(), "entry names must be strings")),
    }
}

fn entry(path: String, name: &str, v: Value) -> Result<Entry, ImportError> {
    let name = name.to_ascii_lowercase();
    let mut params = BTreeMap::new();
    match v {
        Value::Null => {}
        Value::Mapping(map) => {
            for (k, v) in map {
                let k = key(&k, &path)?;
                params.insert(k.to_ascii_lowercase(), (k, v));
            }
        }
        Value::Tagged(_) | Value::Sequence(_) => {
            return Err(invalid(path, "parameters must be a map (`key: value`) or a single value"));
        }
        scalar => {
            params.insert(bare_param(&name).to_owned(), (String::new(), scalar));
        }
    }
    Ok(Entry { path, name, params })
}

fn invalid(path: String, reason: &str) -> ImportError {
    ImportError::Invalid { path, reason: reason.to_owned() }
}

impl Entry {
    /// The YAML path of parameter `k` of this entry.
    pub fn at(&self, k: &str) -> String {
        match self.params.get(k) {
            Some((orig, _)) if !orig.is_empty() => format!("{}.{orig}", self.path),
            Some(_) => self.path.clone(),
            None => format!("{}.{k}", self.path),
        }
    }

    /// Takes parameter `k` (so it is not reported as unknown) as text.
    pub fn str(&mut self, k: &str) -> Result<Option<String>, ImportError> {
        let at = self.at(k);
        match self.params.remove(k).map(|(_, v)| v) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(invalid(at, "must be a single value")),
        }
    }

    /// Takes a boolean parameter (`true`, `false`, or those words quoted, any case).
    pub fn bool(&mut self, k: &str) -> Result<Option<bool>, ImportError> {
        let at = self.at(k);
        match self.params.remove(k).map(|(_, v)| v) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(invalid(at, "must be true or false")),
        }
    }

    /// Takes a number parameter.
    pub fn f64(&mut self, k: &str) -> Result<Option<f64>, ImportError> {
        let at = self.at(k);
        match self.str(k)? {
            None => Ok(None),
            Some(s) => s.trim().parse().map(Some).map_err(|_| invalid(at, "must be a number")),
        }
    }

    /// Takes a list-of-strings parameter (a single value is a list of one).
    pub fn list(&mut self, k: &str) -> Result<Vec<String>, ImportError> {
        let at = self.at(k);
        match self.params.remove(k).map(|(_, v)| v) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(invalid(at.clone(), "must be a list of strings")),
                })
                .collect(),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(_) => Err(invalid(at, "must be a list of strings")),
        }
    }

    /// Takes a parameter only to report it: whether it was given (and not null/empty).
    pub fn present(&mut self, k: &str) -> bool {
        match self.params.remove(k).map(|(_, v)| v) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Sequence(s)) => !s.is_empty(),
            Some(Value::Mapping(m)) => !m.is_empty(),
            Some(_) => true,
        }
    }

    /// Forgets the remaining parameters (the whole entry was reported).
    pub fn discard(&mut self) {
        self.params.clear();
    }

    /// The YAML paths of the parameters nobody took.
    pub fn rest(self) -> Vec<String> {
        let path = self.path;
        let at = |orig: String| if orig.is_empty() { path.clone() } else { format!("{path}.{orig}") };
        self.params.into_values().map(|(orig, _)| at(orig)).collect()
    }
}
