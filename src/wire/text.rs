//! Length-checked text for the wire: values of these types always encode into fields the
//! decoder accepts, so a node can never emit a frame its neighbours must reject.

use std::fmt;
use std::ops::Deref;

use super::MAX_REASON;

/// Most bytes of a service name, work-type name or version string.
pub const MAX_NAME: usize = 256;

/// Human-readable text (why a link or stream ended) of at most [`MAX_REASON`] bytes.
/// Longer text, e.g. a peer's words echoed into an error, is cut at a character boundary
/// and marked with `…`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reason(String);

impl Reason {
    pub fn new(text: impl Into<String>) -> Reason {
        let mut s = text.into();
        if s.len() > MAX_REASON {
            let mut end = MAX_REASON - '…'.len_utf8();
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
        }
        Reason(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<String> for Reason {
    fn from(s: String) -> Reason {
        Reason::new(s)
    }
}

impl From<&str> for Reason {
    fn from(s: &str) -> Reason {
        Reason::new(s)
    }
}

impl Deref for Reason {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name on the wire (service, work type, version): at most [`MAX_NAME`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// Why a string cannot be a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is {0} bytes long; at most {MAX_NAME} fit the protocol")]
    TooLong(usize),
}

impl Name {
    pub fn new(s: impl Into<String>) -> Result<Name, NameError> {
        let s = s.into();
        if s.len() > MAX_NAME {
            return Err(NameError::TooLong(s.len()));
        }
        Ok(Name(s))
    }

    /// For names decoded from the wire, already bounded by the decoder.
    pub(super) fn from_wire(s: String) -> Name {
        Name(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_to_fit_at_a_char_boundary() {
        let r = Reason::new("é".repeat(MAX_REASON));
        assert!(r.len() <= MAX_REASON);
        assert!(r.ends_with('…'));
        assert_eq!(Reason::new("short").as_str(), "short");
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(Name::new("x".repeat(MAX_NAME + 1)), Err(NameError::TooLong(MAX_NAME + 1)));
        assert!(Name::new("x".repeat(MAX_NAME)).is_ok());
    }
}
