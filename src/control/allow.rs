//! `[[control.allow]]`: which remote control clients — TLS control clients by the node ID
//! of their certificate, other nodes over the `control` mesh service — may use the
//! node-wide commands `reload` and `connect`. Without a rule nobody but the local Unix
//! socket may: `reload` re-reads this node's configuration, and `connect` opens mesh
//! streams under this node's name (around `[[work.allow]]` on the far end).

pub use crate::config::{Action, ControlAllow};
use crate::identity::Origin;

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Whether `origin` may use `action`. The Unix socket always may; a plain-TCP client
/// (no node ID) only through a rule whose clients include `*` itself.
pub fn permits(rules: &[ControlAllow], origin: &Origin, action: Action) -> bool {
    let client = match origin {
        Origin::Socket => return true,
        other => other.node().map(|n| n.as_str().to_owned()),
    };
    rules.iter().any(|r| {
        r.actions.contains(&action)
            && r.clients.iter().any(|c| match &client {
                Some(id) => matches(c, id),
                None => c == "*",
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeId;

    #[test]
    fn only_the_socket_and_explicit_rules_may_reload_or_connect() {
        let id = |s: &str| Some(NodeId::new(s).expect("id"));
        let rules = vec![ControlAllow { clients: vec!["ops-*".into()], actions: vec![Action::Reload] }];
        assert!(permits(&[], &Origin::Socket, Action::Connect));
        assert!(!permits(&[], &Origin::Network(id("ops-1")), Action::Reload));
        assert!(permits(&rules, &Origin::Network(id("ops-1")), Action::Reload));
        assert!(!permits(&rules, &Origin::Network(id("ops-1")), Action::Connect));
        assert!(!permits(&rules, &Origin::Network(id("dev-1")), Action::Reload));
        assert!(!permits(&rules, &Origin::Network(None), Action::Reload));
        let anyone = vec![ControlAllow { clients: vec!["*".into()], actions: vec![Action::Reload] }];
        assert!(permits(&anyone, &Origin::Network(None), Action::Reload));
    }
}
