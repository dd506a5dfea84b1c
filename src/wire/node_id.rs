//! Validated node identifiers, shared by the wire, the mesh and configuration.

use std::fmt;
use std::sync::Arc;

/// Longest node ID accepted, in bytes.
pub const MAX_LEN: usize = 64;

/// A node's name in the mesh: 1–64 bytes of `[A-Za-z0-9._@:-]`, not `localhost`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeIdError {
    #[error("node id is empty")]
    Empty,
    #[error("node id is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("node id {0:?} contains {1:?}; allowed are letters, digits and . _ - @ :")]
    BadChar(String, char),
    #[error("node id \"localhost\" is reserved")]
    Reserved,
}

impl NodeId {
    pub fn new(s: impl AsRef<str>) -> Result<NodeId, NodeIdError> {
        let s = s.as_ref();
        if s.is_empty() {
            return Err(NodeIdError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(NodeIdError::TooLong);
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-@:".contains(*c))) {
            return Err(NodeIdError::BadChar(s.to_owned(), c));
        }
        if s.eq_ignore_ascii_case("localhost") {
            return Err(NodeIdError::Reserved);
        }
        Ok(NodeId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = NodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeId::new(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_ids() {
        for ok in ["node1", "host.example.com", "a-b_c", "runner@x:1", "3e51085605"] {
            assert!(NodeId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(NodeId::new(""), Err(NodeIdError::Empty));
        assert_eq!(NodeId::new("x".repeat(65)), Err(NodeIdError::TooLong));
        assert!(matches!(NodeId::new("a b"), Err(NodeIdError::BadChar(_, ' '))));
        assert!(matches!(NodeId::new("a/b"), Err(NodeIdError::BadChar(_, '/'))));
        assert_eq!(NodeId::new("LocalHost"), Err(NodeIdError::Reserved));
    }
}
