//! `kiln-cni`: one binary for Kiln's CNI plugins. The plugin is the name it
//! was run as (a `kiln-bridge` symlink, say) or, failing that, its first
//! argument: `kiln-cni kiln-bridge`.

fn main() -> std::process::ExitCode {
    kiln_cni::cli::main()
}
