//! The file as written, checked against the config's types before `config-rs` reads it:
//! `config-rs` converts between scalars (it must, for `RECEPTOR_…` environment values,
//! which are all strings), so `data_dir = 17` would become the path `"17"`. Here the TOML
//! is deserialized strictly, and an error names the line, the column and the key, on one
//! line, with the file's path as given.

use super::{Config, ConfigError};

/// Largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads `path` (bounded) and checks its TOML against [`Config`]'s types.
pub fn read_checked(path: &std::path::Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let file = path.display().to_string();
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| ConfigError::Read { file: file.clone(), reason: e.to_string() })?;
    if read as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Read { file, reason: format!("larger than {MAX_CONFIG_BYTES} bytes") });
    }
    if let Err(e) = toml::from_str::<Config>(&text) {
        return Err(syntax(file, &text, &e));
    }
    Ok(text)
}

fn syntax(file: String, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(at) = e.span().map(|s| s.start.min(text.len())) else {
        return ConfigError::Syntax { file, line: 0, column: 0, key: None, message };
    };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    ConfigError::Syntax { file, line, column, key: key_at(text, line), message }
}

/// The dotted key assigned on `line` (1-based), under the table header above it.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?.trim();
    let (key, _) = here.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.contains(char::is_whitespace) {
        return None;
    }
    let table = lines[..line - 1].iter().rev().map(|l| l.trim()).find_map(|l| {
        let l = l.strip_prefix('[')?.trim_start_matches('[');
        Some(l.split(']').next()?.trim().to_owned())
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<String, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        read_checked(&path).map_err(|e| match e {
            ConfigError::Syntax { file, line, column, key, message } => {
                assert_eq!(file, path.display().to_string());
                ConfigError::Syntax { file: "c.toml".into(), line, column, key, message }
            }
            e => e,
        })
    }

    #[test]
    fn wrong_types_fail_with_the_key_on_one_line() {
        let e = check("[node]\nid = \"x\"\ndata_dir = 17\n").expect_err("an integer is no path");
        let text = e.to_string();
        assert!(text.starts_with("c.toml:3:12: key `node.data_dir`: invalid type: integer `17`"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let e = check("[node]\nid = \"x\"\ndata_dir = \n").expect_err("syntax");
        assert!(e.to_string().starts_with("c.toml:3:12: key `node.data_dir`: "), "{e}");
        let e = check("[node]\nid = \"x\"\n[[peers]]\nurl = \"receptor://a:1\"\ncost = \"high\"\n")
            .expect_err("cost");
        assert!(e.to_string().starts_with("c.toml:5:8: key `peers.cost`: "), "{e}");
        check("[node]\nid = \"x\"\ndata_dir = \"/tmp/x\"\n").expect("a valid file");
    }
}
