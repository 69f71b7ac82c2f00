//! The command line (argh): one subcommand per operation.

use std::path::PathBuf;

use argh::FromArgs;

/// Operate Kiln nodes: validate machine configs, generate the PKI and configs.
#[derive(FromArgs)]
#[argh(
    example = "Make the PKI, a node config and a client config for a new cluster:\n  $ {command_name} gen config --cluster prod --endpoint https://10.0.0.10:6443 --out ./prod",
    example = "Check a machine config before applying it:\n  $ {command_name} validate ./prod/node.yaml",
    note = "Set KILNCTL_LOG=debug for diagnostics on stderr.",
    error_code(1, "failure: invalid config, existing file, I/O error"),
    error_code(2, "usage error: unknown or malformed arguments")
)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum Command {
    Validate(ValidateCommand),
    Gen(GenCommand),
}

/// Validate machine config files offline, with the node's own rules: every
/// error is printed on its own line as `FILE: field.path: problem`.
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "validate",
    example = "$ {command_name} configs/machine/dhcp-worker.yaml",
    error_code(1, "a file is invalid or unreadable")
)]
pub struct ValidateCommand {
    /// machine config YAML files
    #[argh(positional, greedy)]
    pub files: Vec<PathBuf>,
}

/// Generate configs and credentials.
#[derive(FromArgs)]
#[argh(subcommand, name = "gen")]
pub struct GenCommand {
    #[argh(subcommand)]
    pub command: GenSubcommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum GenSubcommand {
    Config(GenConfigCommand),
}

/// Generate a machine CA, an admin and a reader client certificate, a node
/// config (node.yaml, with the machine CA and the cluster join data) and a
/// client config (kilnconfig, with a context per role). Without
/// --kubernetes-ca a Kubernetes CA is generated too (kubernetes-ca.crt/.key,
/// for the control plane, e.g. kubeadm's /etc/kubernetes/pki/ca.*) along with
/// a fresh bootstrap token. Private keys are written mode 0600 and never
/// printed; existing files are left alone unless --force.
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "config",
    example = "$ {command_name} --cluster prod --endpoint https://k8s.example.com:6443 --node 10.0.0.21 --out ./prod",
    note = "Files written: node.yaml (0600: holds the machine CA key and the bootstrap token), kilnconfig (0600: holds client keys), and without --kubernetes-ca: kubernetes-ca.crt, kubernetes-ca.key (0600)."
)]
pub struct GenConfigCommand {
    /// cluster name (DNS label): names the contexts and the CA
    #[argh(option)]
    pub cluster: String,
    /// the Kubernetes API endpoint nodes join, https://host[:port]
    #[argh(option)]
    pub endpoint: String,
    /// output directory, created 0700 if missing (default: .)
    #[argh(option, default = "PathBuf::from(\".\")")]
    pub out: PathBuf,
    /// a node address for the client config's contexts (repeatable)
    #[argh(option)]
    pub node: Vec<String>,
    /// PEM CA of an existing Kubernetes cluster, instead of generating one
    #[argh(option)]
    pub kubernetes_ca: Option<PathBuf>,
    /// replace existing files
    #[argh(switch)]
    pub force: bool,
}
