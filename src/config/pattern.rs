//! Node-ID patterns as configuration writes them (`[mesh] relays`): a node ID, `*`, or a
//! node ID prefix followed by `*`. Checked here at load; `mesh::relay` matches them.

use crate::wire::NodeId;

/// Why a node-ID pattern is refused (config validation names the key).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a node ID pattern: a node ID, `*`, or a node ID prefix followed by `*`")]
pub struct PatternError(pub String);

/// Checks one pattern: `*` alone, or a node ID (never a client session `NODE~TAG`) with
/// an optional trailing `*`.
pub fn check_node_pattern(p: &str) -> Result<(), PatternError> {
    let stem = p.strip_suffix('*').unwrap_or(p);
    let valid = stem.is_empty() && p == "*" || NodeId::new(stem).is_ok_and(|n| !n.is_session());
    if valid { Ok(()) } else { Err(PatternError(p.to_owned())) }
}
