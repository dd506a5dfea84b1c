//! `[[control.allow]]` as configured: which remote control clients may use the node-wide
//! commands `reload` and `connect`. The rule is applied by `control::allow::permits`.

use serde::Deserialize;

/// A node-wide control command that needs an explicit rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Reload,
    Connect,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reload => "reload",
            Action::Connect => "connect",
        }
    }
}

/// Lets `clients` (node IDs; `*` alone or as a suffix wildcard) use `actions`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControlAllow {
    pub clients: Vec<String>,
    pub actions: Vec<Action>,
}
