//! Validated node identifiers, shared by the wire, the mesh and configuration.

use std::fmt;
use std::sync::Arc;

/// Longest node ID accepted, in bytes.
pub const MAX_LEN: usize = 64;

/// A node's name in the mesh: 1–64 bytes of `[A-Za-z0-9._@:-]`, not `localhost`; a client
/// session adds `~TAG` to the node ID it speaks for.
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
    #[error("node id {0:?}: a client session ID is NODE~TAG, with one ~ and both parts non-empty")]
    BadSession(String),
}

/// Separates a client session's tag from the node ID it speaks for (`controller~3f9a0c21`).
pub const SESSION_SEP: char = '~';

impl NodeId {
    pub fn new(s: impl AsRef<str>) -> Result<NodeId, NodeIdError> {
        let s = s.as_ref();
        if s.is_empty() {
            return Err(NodeIdError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(NodeIdError::TooLong);
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-@:~".contains(*c))) {
            return Err(NodeIdError::BadChar(s.to_owned(), c));
        }
        let principal = match s.split_once(SESSION_SEP) {
            None => s,
            Some((p, tag)) if !p.is_empty() && !tag.is_empty() && !tag.contains(SESSION_SEP) => p,
            Some(_) => return Err(NodeIdError::BadSession(s.to_owned())),
        };
        if principal.eq_ignore_ascii_case("localhost") {
            return Err(NodeIdError::Reserved);
        }
        Ok(NodeId(Arc::from(s)))
    }

    /// A client session of `principal`: `principal~tag`. Many short-lived clients (runs in
    /// threads or processes) speak for one node ID at once, each with its own address in
    /// the mesh; only clients may use such an ID (admission), and authorization, ownership
    /// and certificates see the principal ([`NodeId::principal`]).
    pub fn session(principal: &NodeId, tag: &str) -> Result<NodeId, NodeIdError> {
        NodeId::new(format!("{}{SESSION_SEP}{tag}", principal.principal()))
    }

    /// Whether this is a client session ID (`NODE~TAG`).
    pub fn is_session(&self) -> bool {
        self.0.contains(SESSION_SEP)
    }

    /// The node ID a session speaks for; the ID itself for any other node.
    pub fn principal(&self) -> NodeId {
        match self.0.split_once(SESSION_SEP) {
            Some((p, _)) => NodeId(Arc::from(p)),
            None => self.clone(),
        }
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
        assert_eq!(NodeId::new("localhost~a"), Err(NodeIdError::Reserved));
        for bad in ["~a", "a~", "a~b~c", "~"] {
            assert!(matches!(NodeId::new(bad), Err(NodeIdError::BadSession(_))), "{bad}");
        }
    }

    #[test]
    fn sessions_speak_for_their_principal() {
        let ctl = NodeId::new("controller").expect("id");
        let s = NodeId::session(&ctl, "3f9a0c21").expect("session");
        assert_eq!(s.as_str(), "controller~3f9a0c21");
        assert!(s.is_session() && !ctl.is_session());
        assert_eq!(s.principal(), ctl);
        assert_eq!(ctl.principal(), ctl);
        assert_eq!(NodeId::session(&s, "x").expect("session").as_str(), "controller~x");
    }
}
