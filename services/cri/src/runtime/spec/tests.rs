//! Spec building: Kubernetes' command rules, env, capabilities, errors.

use super::*;
use crate::proto::v1::{
    Capability as CriCaps, KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext,
};

fn image() -> RunConfig {
    RunConfig {
        entrypoint: Some(vec!["/entry".into()]),
        cmd: Some(vec!["serve".into(), "--port=80".into()]),
        env: Some(vec!["PATH=/bin".into(), "MODE=image".into()]),
        ..Default::default()
    }
}

/// The spec for `c` alone: no image config, namespaces or pod files.
fn build_bare(c: &ContainerConfig, rootfs: &std::path::Path) -> Result<Spec, RuntimeError> {
    build(&Inputs {
        config: c,
        image: &RunConfig::default(),
        rootfs,
        net: None,
        ipc: None,
        uts: None,
        cgroups_path: "/t".into(),
        oom_score_adj: None,
        pod_files: Vec::new(),
    })
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn command_replaces_the_entrypoint_and_args_replace_cmd() {
    let mut c = ContainerConfig::default();
    assert_eq!(argv(&c, &image()), strs(&["/entry", "serve", "--port=80"]));
    c.args = strs(&["other"]);
    assert_eq!(argv(&c, &image()), strs(&["/entry", "other"]));
    c.command = strs(&["/bin/sh"]);
    assert_eq!(argv(&c, &image()), strs(&["/bin/sh", "other"]));
    c.args.clear();
    assert_eq!(argv(&c, &image()), strs(&["/bin/sh"]));
}

#[test]
fn request_env_overrides_the_image() {
    let c = ContainerConfig {
        envs: vec![KeyValue {
            key: "MODE".into(),
            value: "pod".into(),
        }],
        ..Default::default()
    };
    assert_eq!(env(&c, &image()), strs(&["PATH=/bin", "MODE=pod"]));
    let bare = env(&ContainerConfig::default(), &RunConfig::default());
    assert!(bare[0].starts_with("PATH=/usr/local/sbin"));
}

#[test]
fn capabilities_add_drop_and_privileged() {
    let dir = tempfile::tempdir().unwrap();
    let caps = |sc: LinuxContainerSecurityContext| {
        let c = ContainerConfig {
            command: strs(&["/x"]),
            linux: Some(LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = build_bare(&c, dir.path()).unwrap();
        spec.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap()
    };
    let default = caps(Default::default());
    assert_eq!(default.len(), DEFAULT_CAPS.len());
    let changed = caps(LinuxContainerSecurityContext {
        capabilities: Some(CriCaps {
            add_capabilities: strs(&["NET_ADMIN"]),
            drop_capabilities: strs(&["CAP_KILL"]),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(changed.contains(&Capability::NetAdmin) && !changed.contains(&Capability::Kill));
    let privileged = caps(LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    });
    assert_eq!(privileged.len(), ALL_CAPS.len());
}

#[test]
fn no_command_and_unknown_capabilities_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ContainerConfig::default();
    let inputs = |c: &ContainerConfig| {
        build_bare(c, dir.path())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(inputs(&c).starts_with("config.command: no command"));
    c.command = strs(&["/x"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: strs(&["FLY"]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(
        inputs(&c).contains("unknown capability \"FLY\""),
        "{}",
        inputs(&c)
    );
}
