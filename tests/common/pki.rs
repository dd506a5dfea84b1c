//! A test PKI: a CA and node certificates issued by the real `receptor cert` CLI.

use std::path::PathBuf;
use std::process::Command;

use super::{RECEPTOR, stderr};

/// A PKI in a temp dir: a CA and node certificates issued by the real CLI.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        Pki::named("receptord CA")
    }

    pub fn named(common_name: &str) -> Pki {
        let pki = Pki { dir: tempfile::tempdir().expect("tempdir") };
        pki.cli(&["cert", "init", "--common-name", common_name]);
        pki
    }

    /// `name`'s TLS material as the library loads it (e.g. to sign advertisements).
    pub fn context(&self, name: &str) -> receptord::transport::TlsContext {
        let settings = receptord::transport::TlsSettings {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
            ca: vec![self.path("ca.crt")],
            require_client_cert: true,
            pinned: Vec::new(),
            min_tls13: false,
            skip_node_id_check: false,
        };
        receptord::transport::TlsContext::load(settings, name).expect("tls material")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cli(&self, args: &[&str]) {
        let out =
            Command::new(RECEPTOR).current_dir(self.dir.path()).args(args).output().expect("receptor cert");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }

    /// Issues `name.crt`/`name.key` for node `id` (force-overwriting).
    pub fn issue(&self, name: &str, id: &str) {
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        self.cli(&[
            "cert",
            "issue",
            "--node-id",
            id,
            "--ip",
            "127.0.0.1",
            "--out-cert",
            &crt,
            "--out-key",
            &key,
            "--force",
        ]);
    }

    pub fn tls_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n{extra}",
            self.path(&format!("{name}.crt")).display(),
            self.path(&format!("{name}.key")).display(),
            self.path("ca.crt").display()
        )
    }

    /// Client arguments presenting `name`'s certificate.
    pub fn client_args(&self, name: &str) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path(&format!("{name}.crt")).display().to_string(),
            "--tls-key".into(),
            self.path(&format!("{name}.key")).display().to_string(),
            "--tls-ca".into(),
            self.path("ca.crt").display().to_string(),
        ]
    }
}
