//! Work authorization: which submitting nodes may run which work types.

use crate::config::AllowRule;
use crate::wire::NodeId;

/// The rules of one node. Without rules every admitted node may submit anything.
#[derive(Debug, Clone, Default)]
pub struct Authorization {
    rules: Vec<AllowRule>,
}

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl Authorization {
    pub fn new(rules: Vec<AllowRule>) -> Authorization {
        Authorization { rules }
    }

    pub fn allows(&self, submitter: &NodeId, work_type: &str) -> bool {
        self.rules.is_empty()
            || self.rules.iter().any(|r| {
                r.submitters.iter().any(|s| matches(s, submitter.as_str()))
                    && r.work_types.iter().any(|w| matches(w, work_type))
            })
    }

    /// For a client with no node ID (a plain-TCP control client): only rules whose
    /// submitters include `*` itself apply.
    pub fn allows_anonymous(&self, work_type: &str) -> bool {
        self.rules.is_empty()
            || self.rules.iter().any(|r| {
                r.submitters.iter().any(|s| s == "*") && r.work_types.iter().any(|w| matches(w, work_type))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid")
    }

    #[test]
    fn no_rules_allow_everything_and_rules_restrict() {
        assert!(Authorization::default().allows(&id("x"), "cat"));
        let a = Authorization::new(vec![
            AllowRule { submitters: vec!["awx-*".into()], work_types: vec!["ansible_runner".into()] },
            AllowRule { submitters: vec!["ops".into()], work_types: vec!["*".into()] },
        ]);
        assert!(a.allows(&id("awx-1"), "ansible_runner"));
        assert!(!a.allows(&id("awx-1"), "cat"));
        assert!(a.allows(&id("ops"), "cat"));
        assert!(!a.allows(&id("opsx"), "cat"));
    }
}
