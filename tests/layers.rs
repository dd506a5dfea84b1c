//! The module layering of ARCHITECTURE.md ("Layers"), checked from the source: the graph
//! of top-level modules (`crate::X` paths in non-test code, comments ignored; test modules
//! and `*_tests.rs` files left out) must have no
//! cycle, and `metrics` must stay a leaf that everyone reports into (it may name only
//! `wire`). A new cross-layer import fails here with the cycle it closes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles kept on purpose, each with its reason (none today).
const ALLOWED_CYCLES: &[&[&str]] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None`: the binaries and lib.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "bin" && name != "lib" && name != "main").then(|| name.to_owned())
}

/// Source without comments, up to a file's test module (`#[cfg(test)]` then `mod …` at
/// the start of a line: by house style tests sit at the end of a file).
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "#[cfg(test)]" && lines.peek().is_some_and(|l| l.starts_with("mod ")) {
            break;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// `crate::X` uses, including those inside `use crate::{X, Y::…}` groups.
fn referenced_modules(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if modules.contains(&name) {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> =
        modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for f in &files {
        let Some(m) = module_of(&src, f) else { continue };
        // Test-only files (`*_tests.rs`, `tests.rs`, included under `#[cfg(test)]`).
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if stem == "tests" || stem.ends_with("_tests") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read source");
        for t in referenced_modules(&production_code(&text), &modules) {
            if t != m {
                g.get_mut(&m).expect("module").insert(t);
            }
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("low");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("low");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_cycle_spans_layers() {
    let g = graph();
    assert!(g.len() > 10, "found the modules: {:?}", g.keys());
    let bad: Vec<_> = cycles(&g)
        .into_iter()
        .filter(|c| {
            !ALLOWED_CYCLES
                .iter()
                .any(|a| a.iter().copied().map(str::to_owned).collect::<BTreeSet<_>>() == *c)
        })
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|m| g[m].iter().filter(|t| c.contains(*t)).map(move |t| format!("{m} -> {t}")))
                .collect();
            format!("{c:?}: {}", edges.join(", "))
        })
        .collect();
    assert!(bad.is_empty(), "module cycles:\n{}", bad.join("\n"));
}

#[test]
fn metrics_is_a_leaf() {
    let g = graph();
    let uses: Vec<_> = g["metrics"].iter().filter(|m| *m != "wire").collect();
    assert!(uses.is_empty(), "metrics imports {uses:?}: domains report into it, not the other way");
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut g = graph();
    g.get_mut("wire").expect("wire").insert("mesh".into());
    assert!(cycles(&g).iter().any(|c| c.contains("wire") && c.contains("mesh")));
}
