//! Who may carry transit traffic, as this node decides it for each link: from what the
//! link authenticated (the peer's announced caps, its certificate, its ID) and from the
//! operator's local policy (`[mesh] relays`, `[[listeners]] relays = false`), never from
//! what the peer advertises about itself. A peer found not to be a relay may send only
//! its own frames and advertisements on the link, and this node marks it in its signed
//! advertisement so every node's routing keeps paths from continuing through it there
//! (docs/PROTOCOL.md §6, docs/SECURITY.md).

pub use crate::config::PatternError;
use crate::config::check_node_pattern;
use crate::transport::PeerIdentity;
use crate::wire::{Hello, NodeId};

/// `[mesh] relays`: node-ID patterns of the peers that may relay on links with this node.
/// `None` (the default): every peer whose link shows nothing against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayPolicy {
    patterns: Option<Vec<String>>,
}

impl RelayPolicy {
    /// Every peer may relay unless its link shows otherwise.
    pub fn any() -> RelayPolicy {
        RelayPolicy { patterns: None }
    }

    /// Only peers whose ID matches one of `patterns` (`*` alone, `prefix*`, or an exact
    /// node ID) may relay.
    pub fn only(patterns: &[String]) -> Result<RelayPolicy, PatternError> {
        for p in patterns {
            check_node_pattern(p)?;
        }
        Ok(RelayPolicy { patterns: Some(patterns.to_vec()) })
    }

    /// Whether the policy lets `id` relay (a client session NODE~TAG is matched as NODE;
    /// it is never a relay anyway).
    pub fn allows(&self, id: &NodeId) -> bool {
        let Some(patterns) = &self.patterns else { return true };
        let principal = id.principal();
        let id = principal.as_str();
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => p == id,
        })
    }
}

/// Whether the peer of a fresh link is not a relay: it says so (`EPHEMERAL` or `LEAF`
/// caps), it proved no certificate on a TLS link, it uses a temporary client ID
/// (`receptor-client-…`, never certified), the listener it came through takes no relays,
/// or the policy does not list it.
pub fn not_relay(
    peer: &Hello,
    identity: Option<&PeerIdentity>,
    listener_relays: bool,
    policy: &RelayPolicy,
) -> bool {
    peer.not_relay()
        || identity.is_some_and(|i| !i.certified)
        || crate::identity::may_join_uncertified(&peer.node_id)
        || !listener_relays
        || !policy.allows(&peer.node_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PROTOCOL_VERSION, caps};

    fn hello(id: &str, caps: u32) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            node_id: NodeId::new(id).expect("id"),
            epoch: 1,
            caps,
            idle_timeout_ms: 5000,
            cost: 1.0,
        }
    }

    fn identity(certified: bool) -> PeerIdentity {
        PeerIdentity { node_ids: vec!["hub-b".into()], fingerprint: [0; 32], certified }
    }

    #[test]
    fn patterns_are_node_ids_with_an_optional_trailing_star() {
        for good in ["*", "hub-*", "hub-a", "core.example.com"] {
            assert!(RelayPolicy::only(&[good.to_owned()]).is_ok(), "{good}");
        }
        for bad in ["", "h*b", "**", "hub a*", "localhost", "a~b*"] {
            assert_eq!(RelayPolicy::only(&[bad.to_owned()]), Err(PatternError(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn the_policy_allows_what_it_lists() {
        let p = RelayPolicy::only(&["hub-*".into(), "core".into()]).expect("policy");
        let id = |s: &str| NodeId::new(s).expect("id");
        assert!(p.allows(&id("hub-a")) && p.allows(&id("core")));
        assert!(!p.allows(&id("core2")) && !p.allows(&id("leaf-1")));
        assert!(RelayPolicy::any().allows(&id("leaf-1")));
        assert!(!RelayPolicy::only(&[]).expect("empty").allows(&id("hub-a")));
    }

    #[test]
    fn links_decide_who_relays() {
        let any = RelayPolicy::any();
        let certified = identity(true);
        assert!(!not_relay(&hello("hub-b", caps::STREAMS), Some(&certified), true, &any), "a certified hub");
        assert!(!not_relay(&hello("hub-b", caps::STREAMS), None, true, &any), "a plain-TCP hub");
        assert!(not_relay(&hello("hub-b", caps::STREAMS | caps::LEAF), Some(&certified), true, &any));
        assert!(not_relay(&hello("hub-b", caps::STREAMS | caps::EPHEMERAL), Some(&certified), true, &any));
        let anonymous = identity(false);
        assert!(not_relay(&hello("receptor-client-x", caps::STREAMS), Some(&anonymous), true, &any));
        assert!(not_relay(&hello("receptor-client-x", caps::STREAMS), None, true, &any), "a temporary ID");
        assert!(not_relay(&hello("hub-b", caps::STREAMS), Some(&certified), false, &any), "listener");
        let hubs = RelayPolicy::only(&["hub-*".into()]).expect("policy");
        assert!(!not_relay(&hello("hub-b", caps::STREAMS), Some(&certified), true, &hubs));
        assert!(not_relay(&hello("leaf-b", caps::STREAMS), Some(&certified), true, &hubs), "not listed");
    }
}
