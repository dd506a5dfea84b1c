//! Human-readable error chains for the binaries: each cause once, even when an error's
//! own message already includes its source.

use std::error::Error;

/// `outer: cause: root`, skipping causes whose text the previous message already contains.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut last = out.clone();
    let mut cur = err.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        cur = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to x: {source}")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn repeated_causes_are_printed_once() {
        let e = Outer { source: std::io::Error::other("refused") };
        assert_eq!(chain(&e), "cannot connect to x: refused");
    }
}
