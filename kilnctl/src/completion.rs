//! `kilnctl completion bash|zsh|fish`: completion scripts generated from
//! kilnctl's own command tree (argh's `ArgsInfo`, derived from the same
//! definitions the parser uses), so they offer exactly the subcommands and
//! flags kilnctl accepts. argh cannot write completion scripts itself.
//!
//! Every script has the same shape: a table (one `case` per command path)
//! of subcommands, switches, options (flags that take a value, whose value
//! is skipped while walking the words) and choices for the positional
//! argument; a walker that finds the command path from the words before the
//! cursor; and the shell's glue. `_kilnctl_candidates WORD… CUR` prints the
//! candidates for CUR one per line, or returns 2 to ask for file names.

use anyhow::Result;
use argh::{ArgsInfo, CommandInfoWithArgs, FlagInfoKind};

use crate::cli::{Cli, CompletionCommand};
use crate::UsageError;

/// Values a flag or positional argument takes, where the CLI fixes them.
const CHOICES: &[(&str, &[&str])] = &[
    ("--output", &["text", "json"]),
    ("--mode", &["auto", "no-reboot", "staged", "try"]),
    ("completion", &["bash", "zsh", "fish"]),
];
/// Commands whose positional arguments are files.
const FILE_ARGS: &[&str] = &["validate", "apply"];

/// One command of the tree.
struct Node {
    /// Subcommand names from the root, space-separated ("" for the root).
    path: String,
    subcommands: Vec<String>,
    switches: Vec<String>,
    options: Vec<String>,
    /// Choices for its positional argument.
    values: Vec<String>,
    /// Its positional arguments are file names.
    files: bool,
}

fn walk(path: &str, info: &CommandInfoWithArgs, out: &mut Vec<Node>) {
    let mut node = Node {
        path: path.to_string(),
        subcommands: info.commands.iter().map(|c| c.name.to_string()).collect(),
        switches: vec![],
        options: vec![],
        values: vec![],
        files: FILE_ARGS.contains(&path),
    };
    for flag in info.flags.iter().filter(|f| !f.hidden) {
        let names =
            std::iter::once(flag.long.to_string()).chain(flag.short.map(|c| format!("-{c}")));
        match flag.kind {
            FlagInfoKind::Switch => node.switches.extend(names),
            FlagInfoKind::Option { .. } => node.options.extend(names),
        }
    }
    if !info.positionals.is_empty() {
        node.values = choices(path.rsplit(' ').next().unwrap_or_default());
    }
    out.push(node);
    for sub in &info.commands {
        let child = if path.is_empty() {
            sub.name.to_string()
        } else {
            format!("{path} {}", sub.name)
        };
        walk(&child, &sub.command, out);
    }
}

fn choices(name: &str) -> Vec<String> {
    CHOICES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

fn tree() -> Vec<Node> {
    let mut nodes = vec![];
    walk("", &Cli::get_args_info(), &mut nodes);
    nodes
}

/// The long and short names of options with fixed values, and the values.
fn option_choices() -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = vec![];
    let mut seen = vec![];
    fn collect(
        info: &CommandInfoWithArgs,
        seen: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, Vec<String>)>,
    ) {
        for f in info.flags {
            let values = choices(f.long);
            if matches!(f.kind, FlagInfoKind::Option { .. })
                && !values.is_empty()
                && !seen.contains(&f.long.to_string())
            {
                seen.push(f.long.to_string());
                let names =
                    std::iter::once(f.long.to_string()).chain(f.short.map(|c| format!("-{c}")));
                out.push((names.collect(), values));
            }
        }
        for sub in &info.commands {
            collect(&sub.command, seen, out);
        }
    }
    collect(&Cli::get_args_info(), &mut seen, &mut out);
    out
}

pub fn run(cmd: &CompletionCommand) -> Result<bool> {
    let script = match cmd.shell.as_str() {
        "bash" => bash(),
        "zsh" => zsh(),
        "fish" => fish(),
        other => {
            return Err(
                UsageError(format!("shell: expected bash, zsh or fish, got {other:?}")).into(),
            )
        }
    };
    print!("{script}");
    Ok(true)
}

/// The table as `case` arms for bash and zsh (same syntax).
fn posix_table() -> String {
    let mut s = String::new();
    for n in tree() {
        s += &format!(
            "        '{}') subs='{}' switches='{}' opts='{}' values='{}' files={} ;;\n",
            n.path,
            n.subcommands.join(" "),
            n.switches.join(" "),
            n.options.join(" "),
            n.values.join(" "),
            u8::from(n.files),
        );
    }
    s
}

fn posix_option_values() -> String {
    let mut s = String::new();
    for (names, values) in option_choices() {
        s += &format!(
            "        {}) printf '%s\\n' {} ;;\n",
            names.join("|"),
            values.join(" ")
        );
    }
    s
}

/// The walker and candidate printer; valid bash and zsh.
fn posix_candidates() -> String {
    format!(
        r#"# Generated by `kilnctl completion`, from kilnctl's own command tree.
_kilnctl_node() {{
    subs='' switches='' opts='' values='' files=0
    case "$1" in
{table}    esac
}}

# _kilnctl_candidates WORD... CUR: the words after `kilnctl` before the
# cursor, then the word being completed. Prints candidates; returns 2 for
# file names.
_kilnctl_candidates() {{
    local kpath='' skip=0 w='' cur subs switches opts values files
    _kilnctl_node ''
    while [ $# -gt 1 ]; do
        w="$1"; shift
        if [ "$skip" = 1 ]; then skip=0; continue; fi
        case " $opts " in *" $w "*) skip=1; continue ;; esac
        case " $subs " in
            *" $w "*) kpath="${{kpath:+$kpath }}$w"; _kilnctl_node "$kpath" ;;
        esac
    done
    cur="$1"
    if [ "$skip" = 1 ]; then
        case "$w" in
{option_values}            *) return 2 ;;
        esac
        return 0
    fi
    case "$cur" in
        -*) printf '%s\n' $switches $opts ;;
        *)
            if [ -n "$subs" ]; then printf '%s\n' $subs
            elif [ -n "$values" ]; then printf '%s\n' $values
            elif [ "$files" = 1 ]; then return 2
            fi ;;
    esac
}}
"#,
        table = posix_table(),
        option_values = posix_option_values(),
    )
}

fn bash() -> String {
    posix_candidates()
        + r#"
_kilnctl() {
    local cur="${COMP_WORDS[COMP_CWORD]}" out status
    out="$(_kilnctl_candidates "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur")"
    status=$?
    if [ "$status" = 2 ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$out" -- "$cur"))
    fi
}
complete -F _kilnctl kilnctl
"#
}

fn zsh() -> String {
    // zsh splits unquoted parameters only with SH_WORD_SPLIT: set locally.
    "#compdef kilnctl\n".to_string()
        + &posix_candidates().replace(
            "_kilnctl_candidates() {\n",
            "_kilnctl_candidates() {\n    setopt local_options sh_word_split\n",
        )
        + r#"
_kilnctl() {
    local out
    out="$(_kilnctl_candidates "${(@)words[2,CURRENT-1]}" "$PREFIX")"
    if [ $? = 2 ]; then
        _files
    else
        local -a candidates
        candidates=("${(@f)out}")
        compadd -a candidates
    fi
}
compdef _kilnctl kilnctl
"#
}

fn fish() -> String {
    let mut table = String::new();
    for n in tree() {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        table += &format!(
            "        case '{}'\n            set subs {}; set switches {}; set opts {}; set values {}; set files {}\n",
            n.path,
            list(&n.subcommands),
            list(&n.switches),
            list(&n.options),
            list(&n.values),
            u8::from(n.files),
        );
    }
    let mut option_values = String::new();
    for (names, values) in option_choices() {
        option_values += &format!(
            "            case {}\n                printf '%s\\n' {}\n",
            names.join(" "),
            values.join(" ")
        );
    }
    format!(
        r#"# Generated by `kilnctl completion fish`, from kilnctl's own command tree.
# __kilnctl_candidates WORD... CUR: the words after `kilnctl` before the
# cursor, then the word being completed. Prints candidates; returns 2 for
# file names.
function __kilnctl_candidates
    set -l cur $argv[-1]
    set -l words $argv[1..-2]
    set -l kpath ''
    set -l skip 0
    set -l w ''
    set -l subs; set -l switches; set -l opts; set -l values; set -l files 0
    for step in (seq 0 (count $words))
        if test $step -gt 0
            set w $words[$step]
            if test $skip = 1
                set skip 0
                continue
            end
            if contains -- $w $opts
                set skip 1
                continue
            end
            if not contains -- $w $subs
                continue
            end
            if test -n "$kpath"
                set kpath "$kpath $w"
            else
                set kpath $w
            end
        end
        set subs; set switches; set opts; set values; set files 0
        switch $kpath
{table}        end
    end
    if test $skip = 1
        switch $w
{option_values}            case '*'
                return 2
        end
        return 0
    end
    if string match -q -- '-*' $cur
        printf '%s\n' $switches $opts
    else if test (count $subs) -gt 0
        printf '%s\n' $subs
    else if test (count $values) -gt 0
        printf '%s\n' $values
    else if test $files = 1
        return 2
    end
end

function __kilnctl_complete
    set -l tokens (commandline -opc)
    set -l out (__kilnctl_candidates $tokens[2..-1] (commandline -ct))
    if test $status = 2
        __fish_complete_path (commandline -ct)
    else
        printf '%s\n' $out
    end
end

complete -c kilnctl -f -a '(__kilnctl_complete)'
"#
    )
}
