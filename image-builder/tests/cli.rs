//! The `kiln-image` command line: help, and the errors a user sees before
//! any image is written (missing inputs, bad spec fields, apt failing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kiln_image(args: &[&str], path_env: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln-image"));
    c.args(args);
    if let Some(p) = path_env {
        c.env("PATH", p);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A build of x86_64 from `spec` with an empty cache; returns its stderr.
fn failing_build(spec: &Path, cache: &Path, path_env: Option<&str>) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = cache.join("out");
    let o = kiln_image(
        &[
            "build",
            "--arch",
            "x86_64",
            "--spec",
            spec.to_str().unwrap(),
            "--kiln-binary",
            exe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        path_env,
    );
    assert!(!o.status.success(), "the build should have failed");
    assert!(!out.join("kiln-x86_64.raw").exists());
    stderr(&o)
}

#[test]
fn help_explains_the_build() {
    let o = kiln_image(&["build", "--help"], None);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "--arch",
        "--spec",
        "--kiln-binary",
        "--out",
        "--cache",
        "--epoch",
        "SOURCE_DATE_EPOCH",
        "apt-get download",
    ] {
        assert!(text.contains(want), "{want} not in help:\n{text}");
    }
}

#[test]
fn missing_kiln_binary_is_named() {
    let o = kiln_image(
        &[
            "build",
            "--arch",
            "x86_64",
            "--kiln-binary",
            "/nonexistent/kiln",
            "--out",
            "/nonexistent/out",
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--kiln-binary /nonexistent/kiln: no such file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_spec_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("configs/image.toml")).unwrap();
    let spec = dir.path().join("image.toml");
    std::fs::write(
        &spec,
        text.replace(
            "a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1",
            "a86e",
        ),
    )
    .unwrap();
    let err = failing_build(&spec, dir.path(), None);
    assert!(
        err.contains("arch.x86_64.kernel.sha256: expected 64 hex characters"),
        "{err}"
    );

    std::fs::write(
        &spec,
        text.replace("ephemeral_mib = 128", "ephemeral_mib = 128\ndisk_mib = 200"),
    )
    .unwrap();
    let err = failing_build(&spec, dir.path(), None);
    assert!(
        err.contains("partitions.disk_mib: 200 MiB is too small: the partitions need 322 MiB"),
        "{err}"
    );
}

/// A package missing from the cache is fetched with apt-get; when there is
/// no apt-get, or apt cannot find the pinned version, the error says which
/// package it was after.
#[test]
fn missing_package_without_apt_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = repo().join("configs/image.toml");
    let err = failing_build(&spec, dir.path(), Some("/nonexistent"));
    assert!(
        err.contains(
            "cannot download linux-image-6.1.0-56-amd64:amd64=6.1.192-2: cannot run apt-get"
        ),
        "{err}"
    );

    // The real apt, asked for a version no archive has (answered from the
    // local package lists, no network).
    let text = std::fs::read_to_string(&spec).unwrap();
    let bad = dir.path().join("image.toml");
    std::fs::write(
        &bad,
        text.replace(
            "version = \"6.1.192-2\"",
            "version = \"0.0.0-kiln-missing\"",
        ),
    )
    .unwrap();
    let err = failing_build(&bad, dir.path(), None);
    assert!(
        err.contains("cannot download linux-image-6.1.0-56-amd64:amd64=0.0.0-kiln-missing: apt-get download failed"),
        "{err}"
    );
}
