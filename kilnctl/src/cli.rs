//! The command line (argh): one subcommand per operation.

use std::path::PathBuf;

use argh::{ArgsInfo, FromArgs};

/// Operate Kiln nodes: validate machine configs, generate the PKI and configs.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    example = "Make the PKI, a node config and a client config for a new cluster:\n  $ {command_name} gen config --cluster prod --endpoint https://10.0.0.10:6443 --out ./prod",
    example = "Check a machine config before applying it:\n  $ {command_name} validate ./prod/node.yaml",
    note = "Set KILNCTL_LOG=debug for diagnostics on stderr.",
    error_code(1, "failure: invalid config, existing file, I/O error"),
    error_code(2, "usage error: unknown or malformed arguments")
)]
pub struct Cli {
    /// client config file (default: $KILNCONFIG, else ~/.kiln/config)
    #[argh(option)]
    pub kilnconfig: Option<PathBuf>,
    /// context of the client config to use (default: its current one)
    #[argh(option)]
    pub context: Option<String>,
    /// nodes to call, comma-separated host[:port] (default: the context's)
    #[argh(option, short = 'n')]
    pub nodes: Option<String>,
    /// maintenance mode: no client certificate; trust the node's key by
    /// --fingerprint (or, without it, blindly)
    #[argh(switch)]
    pub insecure: bool,
    /// with --insecure: the SHA-256 fingerprint the node shows on its console
    #[argh(option)]
    pub fingerprint: Option<String>,
    /// output: text (default) or json (one object a line, labelled by node)
    #[argh(option, short = 'o', default = "String::from(\"text\")")]
    pub output: String,
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand)]
pub enum Command {
    Validate(ValidateCommand),
    Gen(GenCommand),
    Version(VersionCommand),
    Apply(ApplyCommand),
    Confirm(ConfirmCommand),
    GetConfig(GetConfigCommand),
    Reboot(RebootCommand),
    Shutdown(ShutdownCommand),
    Reset(ResetCommand),
    Logs(LogsCommand),
    Dmesg(DmesgCommand),
    Services(ServicesCommand),
    Service(ServiceCommand),
    Events(EventsCommand),
    Stats(StatsCommand),
    Completion(CompletionCommand),
}

/// Show each node's Kiln version, architecture and mode.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "version")]
pub struct VersionCommand {}

/// Apply a machine config to the nodes. The node validates it (errors name
/// the field), shows what changed and whether that needs a reboot.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "apply",
    example = "First config of a node in maintenance mode:\n  $ {command_name} --insecure --fingerprint ab:cd:… -n 10.0.0.21 ./prod/node.yaml",
    example = "Preview a change:\n  $ {command_name} --dry-run ./prod/node.yaml",
    example = "Try a change; it reverts in 2 minutes unless confirmed with `kilnctl confirm`:\n  $ {command_name} --mode try --timeout 120s ./prod/node.yaml"
)]
pub struct ApplyCommand {
    /// machine config YAML
    #[argh(positional)]
    pub file: PathBuf,
    /// auto (reboot only if needed), no-reboot (refuse changes that need
    /// one), staged (next boot), try (live, reverted after --timeout unless
    /// confirmed; refused for changes that need a reboot); default auto
    #[argh(option, default = "String::from(\"auto\")")]
    pub mode: String,
    /// with --mode try: how long until the node reverts unless confirmed,
    /// e.g. 30s or 5m (5s to 1h; default 60s)
    #[argh(option)]
    pub timeout: Option<String>,
    /// show the changes, store nothing
    #[argh(switch)]
    pub dry_run: bool,
}

/// Keep a config applied with --mode try (else the node reverts to the
/// previous one at the try's timeout, or if it reboots first).
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "confirm")]
pub struct ConfirmCommand {}

/// Wipe the nodes' EPHEMERAL partition (/var: logs, containers, images),
/// and with --wipe-state their STATE too, then reboot (admin role). PID 1
/// wipes early in the next boot. Without --wipe-state a node keeps its
/// machine config and identity; with it, it comes back in maintenance mode.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "reset",
    example = "Return a node to maintenance mode:\n  $ {command_name} --wipe-state -n 10.0.0.21"
)]
pub struct ResetCommand {
    /// also wipe STATE: machine config and machine id
    #[argh(switch)]
    pub wipe_state: bool,
}

/// Print the stored machine config (secrets redacted unless admin).
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "get-config")]
pub struct GetConfigCommand {}

/// Reboot the nodes in order: services stopped, disks unmounted.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "reboot")]
pub struct RebootCommand {}

/// Power the nodes off in order.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "shutdown")]
pub struct ShutdownCommand {}

/// Print a service's log; with -f, keep printing until ctrl-c.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "logs",
    example = "$ {command_name} -f --tail 20 apid"
)]
pub struct LogsCommand {
    /// service id (hotplug, netd, apid, …)
    #[argh(positional)]
    pub service: String,
    /// only the last N lines first (0: all)
    #[argh(option, default = "0")]
    pub tail: u32,
    /// follow new lines
    #[argh(switch, short = 'f')]
    pub follow: bool,
}

/// Print the kernel log; with -f, keep printing until ctrl-c.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "dmesg")]
pub struct DmesgCommand {
    /// follow new messages
    #[argh(switch, short = 'f')]
    pub follow: bool,
}

/// List the nodes' services: state, pid, restarts, last exit.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "services")]
pub struct ServicesCommand {}

/// Start, stop or restart a service (operator role).
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "service",
    example = "$ {command_name} restart netd",
    note = "Stopping apid is refused: it serves the call. Restarting it drops the connection once it answered."
)]
pub struct ServiceCommand {
    #[argh(subcommand)]
    pub action: ServiceAction,
}

#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand)]
pub enum ServiceAction {
    Start(ServiceStartCommand),
    Stop(ServiceStopCommand),
    Restart(ServiceRestartCommand),
}

/// Start a stopped, finished or failed service.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "start")]
pub struct ServiceStartCommand {
    /// service id
    #[argh(positional)]
    pub id: String,
}

/// Stop a service; returns once it is stopped.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "stop")]
pub struct ServiceStopCommand {
    /// service id
    #[argh(positional)]
    pub id: String,
}

/// Stop and start a service.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "restart")]
pub struct ServiceRestartCommand {
    /// service id
    #[argh(positional)]
    pub id: String,
}

/// Print the nodes' events: this boot's phases, every service's current
/// state and recent configs applied, reverted or confirmed; with -f, then
/// each change until ctrl-c.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "events")]
pub struct EventsCommand {
    /// follow new events
    #[argh(switch, short = 'f')]
    pub follow: bool,
}

/// Print the nodes' memory, CPU time, load, disk usage and services' memory
/// and CPU time.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "stats")]
pub struct StatsCommand {}

/// Print a shell completion script for kilnctl (bash, zsh or fish).
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "completion",
    example = "bash: $ source <({command_name} bash)",
    example = "zsh: $ source <({command_name} zsh)",
    example = "fish: $ {command_name} fish | source"
)]
pub struct CompletionCommand {
    /// bash, zsh or fish
    #[argh(positional)]
    pub shell: String,
}

/// Validate machine config files offline, with the node's own rules: every
/// error is printed on its own line as `FILE: field.path: problem`.
#[derive(FromArgs, ArgsInfo)]
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
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "gen")]
pub struct GenCommand {
    #[argh(subcommand)]
    pub command: GenSubcommand,
}

#[derive(FromArgs, ArgsInfo)]
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
#[derive(FromArgs, ArgsInfo)]
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
