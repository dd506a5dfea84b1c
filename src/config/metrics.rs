//! The `[metrics]` section: where the HTTP listener for `/metrics`, `/healthz` and
//! `/readyz` binds, and the limits that bound it (it is an entry point like any other).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `HOST:PORT` to serve on; none (the default) serves nothing.
    pub listen: Option<String>,
    /// Most HTTP connections open at once; more are closed at once.
    pub max_connections: usize,
    /// A client must send its whole request head within this long.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection is closed after this long, whatever it is doing.
    #[serde(with = "humantime_serde")]
    pub connection_timeout: Duration,
    /// How often the round trip to each linked peer is measured (a mesh ping).
    #[serde(with = "humantime_serde")]
    pub rtt_interval: Duration,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: None,
            max_connections: 16,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            rtt_interval: Duration::from_secs(10),
        }
    }
}

impl MetricsSection {
    /// The address to bind (validated at load).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }

    /// Checks the section; returns the offending key (under `metrics.`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: &str| Err((format!("metrics.{key}"), reason.to_owned()));
        if let Some(l) = &self.listen {
            if l.parse::<SocketAddr>().is_err() {
                return bad("listen", "must be HOST:PORT with an IP address, e.g. \"127.0.0.1:9100\"");
            }
        }
        if !(1..=1024).contains(&self.max_connections) {
            return bad("max_connections", "must be between 1 and 1024");
        }
        if self.header_timeout < Duration::from_millis(100) || self.header_timeout > Duration::from_secs(60) {
            return bad("header_timeout", "must be between 100ms and 60s");
        }
        if self.connection_timeout < self.header_timeout {
            return bad("connection_timeout", "must be at least metrics.header_timeout");
        }
        if self.rtt_interval < Duration::from_secs(1) {
            return bad("rtt_interval", "must be at least 1s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("receptor.toml");
        std::fs::write(&path, format!("[node]\nid = \"n\"\n{text}")).expect("write");
        crate::config::Config::load(&path)
    }

    #[test]
    fn metrics_are_off_by_default_and_keys_are_checked() {
        let cfg = load("").expect("loads");
        assert!(cfg.metrics.addr().is_none());
        let cfg = load("[metrics]\nlisten = \"127.0.0.1:9180\"\nheader_timeout = \"2s\"\n").expect("loads");
        assert_eq!(cfg.metrics.addr().map(|a| a.port()), Some(9180));
        assert_eq!(cfg.metrics.header_timeout, Duration::from_secs(2));
        for (text, key) in [
            ("listen = \"localhost\"", "metrics.listen"),
            ("max_connections = 0", "metrics.max_connections"),
            ("header_timeout = \"1ms\"", "metrics.header_timeout"),
            ("connection_timeout = \"1s\"", "metrics.connection_timeout"),
            ("rtt_interval = \"10ms\"", "metrics.rtt_interval"),
        ] {
            let err = load(&format!("[metrics]\n{text}\n")).expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let err = load("[metrics]\nport = 1\n").expect_err("unknown key");
        assert!(err.to_string().contains("port"), "{err}");
    }
}
