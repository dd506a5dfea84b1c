//! Command-line definitions of the `receptor` client, kept in the library so man pages
//! and shell completions can be generated from the same source.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::transport::PeerUrl;
use crate::wire::NodeId;

/// `receptor`'s command line. The mesh options ([`MeshArgs`]) belong to the commands that
/// use them (`ping`, `status`, `traceroute`, `work …`, `run`) and are listed in their help
/// only; they are also accepted before the command (`receptor --socket S work list`), as
/// they always were. [`command`] is the one definition (parsing, man pages, completions).
#[derive(Parser, Debug)]
#[command(
    name = "receptor",
    version,
    about = "Client for the receptor mesh: ping, status, work, run playbooks remotely"
)]
pub struct Cli {
    /// Before the command: the same mesh options (see each command's help).
    #[command(flatten, next_help_heading = "Mesh options (for ping, status, traceroute, work, run)")]
    pub mesh: MeshArgs,
    /// Log level for the client's own diagnostics (stderr).
    #[arg(long, global = true, default_value = "warn", env = "RECEPTOR_LOG_LEVEL")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ClapArgs, Debug, Clone, Default)]
pub struct MeshArgs {
    /// Where to enter the mesh [default: receptor://localhost:8888].
    #[arg(long, value_name = "URL")]
    pub receptor_peer: Option<PeerUrl>,
    /// This client's node ID [default: a unique temporary ID, or the ID in --tls-cert].
    #[arg(long, value_name = "ID")]
    pub receptor_node_id: Option<NodeId>,
    /// Certificate presented on receptors:// links (must name the node ID).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate the peer must chain to (repeatable).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Vec<PathBuf>,
    /// Client config file (TOML: peer, node_id, `[tls]` cert/key/ca); flags take precedence.
    #[arg(long, value_name = "FILE", env = "RECEPTOR_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// The local daemon's control socket, for `work` and for `run` without a peer
    /// [default: /run/receptor/receptor.sock, when it exists].
    #[arg(long, value_name = "PATH", env = "RECEPTOR_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Sign the work this client submits over the mesh with this RSA private key (PEM),
    /// for nodes whose work types have `verify_signature` (`run --via-receptor`, and
    /// `work submit` with --receptor-peer). Each request gets its own one-use token.
    #[arg(long, value_name = "FILE", env = "RECEPTOR_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Lifetime of each signed-work token [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub token_expiration: Option<Duration>,
}

impl MeshArgs {
    /// These options, with what was given before the command filling the gaps.
    pub fn or(self, before: MeshArgs) -> MeshArgs {
        MeshArgs {
            receptor_peer: self.receptor_peer.or(before.receptor_peer),
            receptor_node_id: self.receptor_node_id.or(before.receptor_node_id),
            tls_cert: self.tls_cert.or(before.tls_cert),
            tls_key: self.tls_key.or(before.tls_key),
            tls_ca: if self.tls_ca.is_empty() { before.tls_ca } else { self.tls_ca },
            client_config: self.client_config.or(before.client_config),
            socket: self.socket.or(before.socket),
            signing_key: self.signing_key.or(before.signing_key),
            token_expiration: self.token_expiration.or(before.token_expiration),
        }
    }

    /// `--token-expiration`, 5 minutes unless given.
    pub fn token_lifetime(&self) -> Duration {
        self.token_expiration.unwrap_or(Duration::from_secs(300))
    }
}

/// The `Command` of [`Cli`], with the mesh options of `work` accepted after any of its
/// subcommands (`receptor work submit … --socket S`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let ids: Vec<String> = <MeshArgs as clap::Args>::augment_args(clap::Command::new("mesh"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    Cli::command().mut_subcommand("work", |w| {
        w.mut_args(|a| if ids.iter().any(|i| i == a.get_id().as_str()) { a.global(true) } else { a })
    })
}

/// Parses the process's arguments with [`command`].
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let mut matches = command().get_matches();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure the round trip to a node.
    Ping {
        node: NodeId,
        #[arg(short, long, default_value_t = 4)]
        count: u32,
        /// Give up on one ping after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Pause between pings.
        #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// One JSON object per ping (JSON Lines).
        #[arg(long)]
        json: bool,
        #[command(flatten, next_help_heading = "Mesh options")]
        mesh: MeshArgs,
    },
    /// Show the mesh: nodes, their links, routes and work types.
    #[command(after_help = STATUS_AFTER_HELP)]
    Status {
        /// The documented JSON document (docs/STATUS.md) instead of the table.
        #[arg(long, conflicts_with_all = ["graph", "svg"])]
        json: bool,
        /// The mesh as a Graphviz DOT graph (e.g. `| dot -Tpng -o mesh.png`).
        #[arg(long, conflicts_with = "svg")]
        graph: bool,
        /// Draw the mesh as SVG into FILE (`-` for stdout), laid out without graphviz.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        #[command(flatten, next_help_heading = "Mesh options")]
        mesh: MeshArgs,
    },
    /// List the nodes on the way to a node, hop by hop, with round trips.
    Traceroute {
        node: NodeId,
        /// Give up on one hop after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// One JSON object per hop (JSON Lines).
        #[arg(long)]
        json: bool,
        #[command(flatten, next_help_heading = "Mesh options")]
        mesh: MeshArgs,
    },
    /// Run work on a node.
    Work(WorkArgs),
    /// Certificates: a CA, node certificates (node ID in the SAN), and the CSR flow.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run a playbook like `ansible-runner run`, on mesh node --via-receptor (or here).
    #[command(after_help = RUN_AFTER_HELP)]
    Run(Box<RunArgs>),
    /// Configuration files: translate a Go Receptor config.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Translate a Go Receptor YAML config into a receptord TOML config.
    #[command(after_help = IMPORT_AFTER_HELP)]
    Import {
        /// The Go Receptor YAML config (receptor --config FILE).
        file: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// The tcp-peers already run receptord: dial them with receptor:// (receptors://)
        /// instead of netceptor:// (netceptors://).
        #[arg(long)]
        native_peers: bool,
    },
}

pub const IMPORT_AFTER_HELP: &str = "\
Every Go setting receptord has no equivalent for is listed on stderr, one line each:
`left out: YAML-PATH: reason` (and in the TOML's header).
Exit status: 0 when everything was translated, 3 when something was left out (the TOML is
still written), 1 when FILE is not a Go Receptor config (unreadable, not YAML, over 1 MiB,
wrong shape or value types; nothing is written).";

pub const STATUS_AFTER_HELP: &str = "\
Exit status: 0 when the mesh status was read, 1 when it could not be (peer unreachable, ...).
--json prints one document, schema_version 1 (docs/STATUS.md); --graph prints DOT with
short-lived clients in their own cluster; --svg draws the same graph.";

pub const RUN_AFTER_HELP: &str = "\
The output is printed live; PRIVATE_DATA_DIR/artifacts/IDENT/ is written as \
`ansible-runner process` would; the exit status is the playbook's rc (0 ok, 2 failed play, ...).

Left out, and why:
  --process-isolation*, --container-*   isolation is the execution node's choice, not the client's
  -r/--role, --role-vars, --roles-path   roles are resolved from paths on the client; put the play in project/
  --artifact-dir, --project-dir          absolute client paths mean nothing on the remote node
  -b/--binary                            raw commands are not an ansible-runner `run` job
  start, stop, is-alive                  see --detach and --attach instead

A run on another node is a durable work unit there: a lost link or a relay restart only
pauses the output (\"reconnecting to NODE…\" on stderr), then it resumes where it stopped.
Ctrl-C cancels and releases the unit; so does --timeout; a unit no client has followed
for longer than --lease is released by the node itself.";

/// `receptor work …`: the mesh options, then the subcommand.
#[derive(ClapArgs, Debug)]
pub struct WorkArgs {
    #[command(flatten, next_help_heading = "Mesh options")]
    pub mesh: MeshArgs,
    #[command(subcommand)]
    pub command: WorkCommand,
}

#[derive(ClapArgs, Debug)]
pub struct RunArgs {
    /// The private data directory (project/, inventory/, env/ ...).
    pub private_data_dir: PathBuf,
    /// Run the job on this mesh node instead of locally.
    #[arg(long, value_name = "NODE")]
    pub via_receptor: Option<NodeId>,
    /// Playbook to run, relative to PRIVATE_DATA_DIR/project.
    #[arg(short, long)]
    pub playbook: Option<String>,
    /// Module to run ad hoc (with --hosts).
    #[arg(short, long)]
    pub module: Option<String>,
    /// Module arguments.
    #[arg(short = 'a', long = "args", value_name = "ARGS")]
    pub module_args: Option<String>,
    /// Host pattern for -m.
    #[arg(long)]
    pub hosts: Option<String>,
    /// Identifier of this run (names artifacts/IDENT) [default: a new UUID].
    #[arg(short, long)]
    pub ident: Option<String>,
    /// Inventory path, inside the private data dir.
    #[arg(long)]
    pub inventory: Option<String>,
    /// Host limit.
    #[arg(long)]
    pub limit: Option<String>,
    /// Number of parallel processes.
    #[arg(long)]
    pub forks: Option<u32>,
    /// Increase verbosity (-v ... -vvvvv).
    #[arg(short, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Extra ansible-playbook command-line arguments.
    #[arg(long, allow_hyphen_values = true)]
    pub cmdline: Option<String>,
    /// Print the raw event JSON lines instead of the playbook output.
    #[arg(short, long)]
    pub json: bool,
    /// Omit event data from events.
    #[arg(long)]
    pub omit_event_data: bool,
    /// Only keep event data of failed tasks.
    #[arg(long)]
    pub only_failed_event_data: bool,
    /// Keep only the N most recent artifact directories.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rotate_artifacts: u32,
    /// Print nothing of the playbook output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Extra variables as a JSON object (ansible_runner's `extravars`).
    #[arg(long, value_name = "JSON")]
    pub extravars: Option<String>,
    /// Environment variables of the job as a JSON object of strings (`envvars`).
    #[arg(long, value_name = "JSON")]
    pub envvars: Option<String>,
    /// Further `ansible_runner.run` keyword arguments for the node's worker, as a JSON
    /// object (passwords, settings, ssh_key, fact_cache, tags, ...): sent in the kwargs
    /// line as `ansible-runner transmit` sends them, over the keys the flags above set.
    /// A `playbook` given here is not looked for in PRIVATE_DATA_DIR/project: the worker
    /// reports a missing one as ansible-runner does (a failed run). `-` reads the object
    /// from stdin (at most 64 MiB), which keeps passwords out of the process list; the
    /// Python package always does so.
    #[arg(long, value_name = "JSON")]
    pub kwargs: Option<String>,
    /// Instead of the playbook output, print the run as JSON Lines on stdout: status
    /// changes, every job event, the output as a local run prints it, artifacts, the final
    /// status and rc, or the error with a machine-readable kind (docs/EVENTS-STREAM.md).
    /// Used by the Python package.
    #[arg(long, conflicts_with_all = ["detach", "quiet"])]
    pub events_stream: bool,
    /// Remote runs: the node cancels and releases the run's work unit once no client has
    /// followed it for this long (1s to 7 days).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Remote runs: cancel and release the work unit after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Submit the run, print NODE:UNIT (and how to attach) and exit 0; attach within --lease.
    #[arg(long, conflicts_with = "attach")]
    pub detach: bool,
    /// Follow a run submitted with --detach (or whose client died): print its output, write
    /// PRIVATE_DATA_DIR/artifacts/IDENT/ (-i IDENT as printed), exit with its rc. Attach the
    /// way it was submitted: the same --socket, or the mesh with the same --receptor-node-id.
    #[arg(long, value_name = "NODE:UNIT", requires = "ident")]
    pub attach: Option<crate::client::durable::UnitRef>,
    #[command(flatten, next_help_heading = "Mesh options")]
    pub mesh: MeshArgs,
}

/// Work units of the local daemon, through its control socket (as receptorctl does).
/// `work submit` with --receptor-peer instead runs the work directly over the mesh on
/// --node and prints its output (nothing is kept: --follow and --rm are implied; --ttl,
/// --signwork and --json, which concern a stored unit, are refused).
#[derive(Subcommand, Debug)]
pub enum WorkCommand {
    /// Submit a work unit of WORK_TYPE, on this node or on --node.
    Submit {
        work_type: String,
        /// The node to run it on [default: the local daemon's node].
        #[arg(long)]
        node: Option<NodeId>,
        /// File whose bytes are the unit's stdin; `-` for this command's stdin.
        #[arg(short, long, conflicts_with = "payload_literal")]
        payload: Option<PathBuf>,
        /// This text (and a newline) is the unit's stdin.
        #[arg(short = 'l', long)]
        payload_literal: Option<String>,
        /// A work parameter, KEY=VALUE (repeatable); `params=...` adds command arguments.
        #[arg(short = 'a', long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Remote units only: fail if not started within this long (e.g. 30s, 1h).
        #[arg(long)]
        ttl: Option<String>,
        /// Sign the work for the remote node ([work.signing] on the local daemon).
        #[arg(long)]
        signwork: bool,
        /// Print the unit's output as it comes; exit with its exit status.
        #[arg(short, long)]
        follow: bool,
        /// Release the unit once followed.
        #[arg(long, requires = "follow")]
        rm: bool,
        /// Print {"unit_id", "result"} as JSON (without --follow).
        #[arg(long, conflicts_with = "follow")]
        json: bool,
    },
    /// List work units (JSON), or only UNIT.
    List {
        unit: Option<String>,
        /// Only the unit IDs.
        #[arg(short, long)]
        quiet: bool,
        /// With --receptor-peer: the units this client's node ID (--receptor-node-id)
        /// submitted to NODE, e.g. runs detached over the mesh.
        #[arg(long)]
        node: Option<NodeId>,
    },
    /// Show one unit's status (JSON).
    Status { unit: String },
    /// Print a unit's output from byte --start, following it until the unit is complete.
    Results {
        unit: String,
        #[arg(long, default_value_t = 0)]
        start: u64,
    },
    /// Cancel units: their processes are stopped; the units and their output stay.
    Cancel {
        #[arg(required = true)]
        units: Vec<String>,
        /// Print one JSON object mapping each unit to its result.
        #[arg(long)]
        json: bool,
    },
    /// Release units: cancel if needed, then delete them (on their remote node too).
    Release {
        units: Vec<String>,
        /// Release even if cancelling or deleting fails.
        #[arg(long)]
        force: bool,
        /// Release every unit.
        #[arg(long)]
        all: bool,
        /// Release every unit in this state (Succeeded, Failed, Canceled, ...).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Print one JSON object mapping each unit to its result.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create a certificate authority (ECDSA P-256).
    Init {
        #[arg(long, default_value = "receptord CA")]
        common_name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Key algorithm of the CA.
        #[arg(long, value_enum, default_value_t = crate::certs::KeyType::EcdsaP256)]
        key_type: crate::certs::KeyType,
        #[arg(long, default_value = "ca.crt")]
        out_cert: PathBuf,
        #[arg(long, default_value = "ca.key")]
        out_key: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node key and certificate signed by the CA.
    Issue {
        #[command(flatten)]
        subject: SubjectArgs,
        #[arg(long, default_value = "ca.crt")]
        ca_cert: PathBuf,
        #[arg(long, default_value = "ca.key")]
        ca_key: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Output certificate [default: NODE_ID.crt].
        #[arg(long)]
        out_cert: Option<PathBuf>,
        /// Output key [default: NODE_ID.key].
        #[arg(long)]
        out_key: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Make a key (or use --in-key) and a signing request, on the node's own host.
    Makereq {
        #[command(flatten)]
        subject: SubjectArgs,
        /// Use this existing key instead of generating one.
        #[arg(long)]
        in_key: Option<PathBuf>,
        #[arg(long)]
        out_req: Option<PathBuf>,
        #[arg(long)]
        out_key: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Sign a request with the CA.
    Signreq {
        #[arg(long)]
        req: PathBuf,
        #[arg(long, default_value = "ca.crt")]
        ca_cert: PathBuf,
        #[arg(long, default_value = "ca.key")]
        ca_key: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        out_cert: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

#[derive(ClapArgs, Debug)]
pub struct SubjectArgs {
    /// The node ID the certificate names (repeatable).
    #[arg(long = "node-id", required = true)]
    pub node_ids: Vec<String>,
    /// A DNS name (repeatable).
    #[arg(long)]
    pub dns: Vec<String>,
    /// An IP address (repeatable).
    #[arg(long)]
    pub ip: Vec<std::net::IpAddr>,
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut m = command().try_get_matches_from(args)?;
        Cli::from_arg_matches_mut(&mut m)
    }

    fn help(path: &[&str]) -> String {
        let mut cmd = command();
        cmd.build();
        let mut sub = &mut cmd;
        for p in path {
            sub = sub.find_subcommand_mut(p).expect("subcommand");
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn each_command_shows_only_the_options_it_uses() {
        command().debug_assert();
        for cert in [&["cert"][..], &["cert", "init"], &["cert", "issue"], &["cert", "makereq"]] {
            let text = help(cert);
            for mesh in ["--receptor-peer", "--tls-cert", "--socket", "--signing-key", "--client-config"] {
                assert!(!text.contains(mesh), "{cert:?} help lists {mesh}:\n{text}");
            }
        }
        for user in
            [&["ping"][..], &["status"], &["traceroute"], &["run"], &["work", "submit"], &["work", "list"]]
        {
            let text = help(user);
            assert!(text.contains("--receptor-peer") && text.contains("--socket"), "{user:?}:\n{text}");
        }
    }

    #[test]
    fn mesh_options_work_before_and_after_the_command() {
        let before = parse(&["receptor", "--socket", "/s", "work", "list"]).expect("before");
        assert_eq!(before.mesh.socket.as_deref(), Some(std::path::Path::new("/s")));
        let after = parse(&["receptor", "work", "submit", "cat", "--socket", "/s", "-f"]).expect("after");
        let Command::Work(w) = after.command else { panic!("work") };
        assert_eq!(w.mesh.socket.as_deref(), Some(std::path::Path::new("/s")));
        let ping = parse(&["receptor", "ping", "n1", "--receptor-peer", "receptor://h:1"]).expect("ping");
        let Command::Ping { mesh, .. } = ping.command else { panic!("ping") };
        assert!(mesh.receptor_peer.is_some());
        assert!(parse(&["receptor", "cert", "init", "--receptor-peer", "receptor://h:1"]).is_err());
        let merged = MeshArgs { socket: Some("/a".into()), ..MeshArgs::default() }.or(MeshArgs {
            socket: Some("/b".into()),
            token_expiration: Some(Duration::from_secs(9)),
            ..MeshArgs::default()
        });
        assert_eq!((merged.token_lifetime(), merged.socket), (Duration::from_secs(9), Some("/a".into())));
    }
}
