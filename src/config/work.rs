//! The `[work]` section: work types (commands, ansible-runner), admission rules, unit
//! retention, signing and verification of remote work, systemd scopes for units.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkSection {
    pub command: Vec<CommandSection>,
    pub ansible_runner: AnsibleRunnerSection,
    /// Most jobs running at once; further requests are refused until one ends.
    pub max_jobs: usize,
    /// Who may submit what. No rules: any node admitted to the mesh may submit any work
    /// type (admission is the trust boundary: with mutual TLS, holders of a certificate
    /// from your CA). With rules, only what a rule allows.
    pub allow: Vec<AllowRule>,
    /// Completed work units older than this are released automatically ("0s": never).
    #[serde(with = "humantime_serde")]
    pub unit_retention: Duration,
    /// Signs remote work units submitted with `signwork` (JWT RS512).
    pub signing: Option<SigningSection>,
    /// Verifies signed submissions for work types with `verify_signature`.
    pub verification: Option<VerificationSection>,
    /// Under systemd, as root: run each work unit (its supervisor and job) in its own
    /// transient scope `receptord-unit-<ID>.scope` in `receptord-units.slice`, outside the
    /// service's control group, so restarts and upgrades leave nothing behind in it.
    pub unit_scopes: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSection {
    /// PEM RSA private key (PKCS#1 or PKCS#8).
    pub private_key: PathBuf,
    /// Lifetime of each token.
    #[serde(with = "humantime_serde", default = "default_token_expiration")]
    pub token_expiration: Duration,
}

fn default_token_expiration() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationSection {
    /// PEM RSA public key (PKIX `PUBLIC KEY`).
    pub public_key: PathBuf,
    /// Also accept Go Receptor's tokens (only `aud` and `exp`: not bound to the request,
    /// replayable by anyone who sees one until it expires) for submissions. Without it
    /// they are accepted only for cancel, release and results of a unit the requester
    /// owns. See docs/SECURITY.md.
    #[serde(default)]
    pub accept_replayable_go_tokens: bool,
}

/// Lets `submitters` (node IDs; `*` alone or as a suffix wildcard) run `work_types`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub submitters: Vec<String>,
    pub work_types: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSection {
    pub name: String,
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Whether a work unit submitted through the control socket may add arguments
    /// (receptorctl's `params`); they are split shell-like, never run through a shell.
    #[serde(default)]
    pub allow_runtime_params: bool,
    /// Whether submissions that do not come through the Unix control socket must carry a
    /// token signed by the key in `[work.verification]` (Go Receptor's `verifysignature`).
    #[serde(default)]
    pub verify_signature: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnsibleRunnerSection {
    /// `auto` registers the worker when ansible-runner is found; `false` never does.
    pub enabled: bool,
    /// An explicit `ansible-runner` executable.
    pub path: Option<PathBuf>,
    /// A virtualenv whose `bin/ansible-runner` to use.
    pub virtualenv: Option<PathBuf>,
    pub keep_job_dirs: bool,
    /// Like a command type's `verify_signature`: submissions from outside the Unix socket
    /// must carry a signed token (AWX execution nodes: its control node signs).
    pub verify_signature: bool,
    pub max_archive_bytes: u64,
    pub max_archive_entries: u64,
    pub max_compression_ratio: u64,
}

impl Default for AnsibleRunnerSection {
    fn default() -> Self {
        AnsibleRunnerSection {
            enabled: true,
            path: None,
            virtualenv: None,
            keep_job_dirs: false,
            verify_signature: false,
            max_archive_bytes: 1 << 30,
            max_archive_entries: 100_000,
            max_compression_ratio: 200,
        }
    }
}

impl Default for WorkSection {
    fn default() -> Self {
        WorkSection {
            command: Vec::new(),
            ansible_runner: AnsibleRunnerSection::default(),
            max_jobs: 64,
            allow: Vec::new(),
            unit_retention: Duration::from_secs(7 * 24 * 3600),
            signing: None,
            verification: None,
            unit_scopes: true,
        }
    }
}

fn default_version() -> String {
    "1".into()
}
