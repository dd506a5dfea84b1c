//! How a run is named so another client can pick it up: the `NODE:UNIT` reference that
//! `--attach` takes, and the options that client must repeat (where it enters the mesh,
//! who it speaks as, its TLS material), printed when a durable run starts.

use crate::client::DEFAULT_PEER;
use crate::client::run::RunRequest;
use crate::wire::NodeId;

/// A run's work unit: the node it runs on and its unit ID there (for a run through a
/// local daemon, the ID of that daemon's unit). Written and parsed as `NODE:UNIT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRef {
    pub node: NodeId,
    pub unit: String,
}

impl std::fmt::Display for UnitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.node, self.unit)
    }
}

impl std::str::FromStr for UnitRef {
    type Err = String;
    fn from_str(s: &str) -> Result<UnitRef, String> {
        let (node, unit) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not NODE:UNIT"))?;
        let node = NodeId::new(node).map_err(|e| format!("{s:?}: {e}"))?;
        crate::work::units::valid_id(unit).map_err(|e| e.to_string())?;
        Ok(UnitRef { node, unit: unit.to_owned() })
    }
}

/// The options another client needs to attach to this run, as they would be typed: where
/// it enters the mesh (unless the default), who it speaks as, its TLS material.
/// Through a local daemon (`control_socket`) there is nothing to add.
pub fn attach_options(req: &RunRequest, node_id: Option<&NodeId>) -> String {
    if req.control_socket.is_some() {
        return String::new();
    }
    let mut out = String::new();
    if let Some(peer) = req.receptor_peer.as_ref().map(ToString::to_string) {
        if peer != DEFAULT_PEER {
            out.push_str(&format!(" --receptor-peer {}", shell_word(&peer)));
        }
    }
    if let Some(id) = node_id {
        out.push_str(&format!(" --receptor-node-id {}", id.principal()));
    }
    if let Some(tls) = &req.tls {
        out.push_str(&format!(" --tls-cert {}", shell_word(&tls.cert.to_string_lossy())));
        out.push_str(&format!(" --tls-key {}", shell_word(&tls.key.to_string_lossy())));
        for ca in &tls.ca {
            out.push_str(&format!(" --tls-ca {}", shell_word(&ca.to_string_lossy())));
        }
    }
    out
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    shlex::try_quote(s).map(|q| q.into_owned()).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_refs_parse_and_print() {
        let r: UnitRef = "node3:AbC123".parse().expect("parse");
        assert_eq!(r.node.as_str(), "node3");
        assert_eq!(r.unit, "AbC123");
        assert_eq!(r.to_string(), "node3:AbC123");
        for bad in ["node3", "node3:", ":AbC", "node3:../x", "node3:a b"] {
            assert!(bad.parse::<UnitRef>().is_err(), "{bad}");
        }
    }
}
