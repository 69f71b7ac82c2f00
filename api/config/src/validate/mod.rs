//! Validation of a parsed document. Every check runs and every failure is
//! kept, so the operator fixes a config in one round. Errors come in document
//! order, except that cross-references (a bond member configured on its own)
//! follow the section they concern.

mod network;
mod syntax;

use std::collections::BTreeMap;

use crate::error::{FieldError, Problem, ValidationErrors};
use crate::model::{Cluster, Kubelet, Machine, MachineConfig, Registries, API_VERSION, KIND};
use crate::path::FieldPath;

/// Collects errors while walking the document.
pub(crate) struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn push(&mut self, path: FieldPath, problem: Problem) {
        self.errors.push(FieldError { path, problem });
    }

    /// Records `check`'s failure as an invalid `value`.
    fn check(
        &mut self,
        path: &FieldPath,
        value: &str,
        what: &'static str,
        check: Result<(), String>,
    ) {
        if let Err(reason) = check {
            let value = value.to_string();
            self.push(
                path.clone(),
                Problem::Invalid {
                    value,
                    what,
                    reason,
                },
            );
        }
    }

    /// Like [`Checker::check`] without echoing the value (secrets, PEM).
    fn check_hidden(&mut self, path: &FieldPath, what: &'static str, check: Result<(), String>) {
        if let Err(reason) = check {
            self.push(path.clone(), Problem::Malformed { what, reason });
        }
    }

    /// Checks a URL; one that may hold credentials (`user:pass@`) is not echoed.
    fn url(&mut self, path: &FieldPath, value: &str, what: &'static str, schemes: &[&str]) {
        let check = syntax::url(value, schemes);
        if value.contains('@') {
            self.check_hidden(path, what, check);
        } else {
            self.check(path, value, what, check);
        }
    }

    /// Records a required field left empty; true when it is set.
    fn required(&mut self, path: &FieldPath, value: &str, why: &'static str) -> bool {
        if value.is_empty() {
            self.push(path.clone(), Problem::Required { why });
        }
        !value.is_empty()
    }

    /// Records `value` as a duplicate if `seen` already holds it.
    fn unique(
        &mut self,
        seen: &mut BTreeMap<String, FieldPath>,
        path: &FieldPath,
        what: &'static str,
        value: String,
    ) {
        if let Some(first) = seen.get(&value) {
            let first = first.clone();
            self.push(path.clone(), Problem::Duplicate { what, value, first });
        } else {
            seen.insert(value, path.clone());
        }
    }
}

/// Checks every field of `config`; `Err` lists every problem found.
pub fn validate(config: &MachineConfig) -> Result<(), ValidationErrors> {
    let mut c = Checker { errors: Vec::new() };
    let root = FieldPath::root();
    if config.api_version != API_VERSION {
        let found = config.api_version.clone();
        c.push(
            root.key("apiVersion"),
            Problem::Unsupported {
                expected: API_VERSION,
                found,
            },
        );
    }
    if config.kind != KIND {
        let found = config.kind.clone();
        c.push(
            root.key("kind"),
            Problem::Unsupported {
                expected: KIND,
                found,
            },
        );
    }
    if let Some(h) = &config.hostname {
        let check = syntax::dns_name(h).and_then(|()| {
            (h.len() <= 64)
                .then_some(())
                .ok_or_else(|| "longer than 64 characters".to_string())
        });
        c.check(&root.key("hostname"), h, "a hostname", check);
    }
    network::network(&mut c, &config.network, &root.key("network"));
    for (i, server) in config.time.servers.iter().enumerate() {
        let p = root.key("time").key("servers").index(i);
        c.check(
            &p,
            server,
            "a host name or IP address, optionally with :port",
            syntax::host_port(server),
        );
    }
    kubelet(&mut c, &config.kubelet, &root.key("kubelet"));
    let kp = root.key("kubeProxy");
    if let Some(image) = &config.kube_proxy.image {
        c.check(
            &kp.key("image"),
            image,
            "an image reference",
            syntax::image_ref(image),
        );
    }
    extra_args(
        &mut c,
        &config.kube_proxy.extra_args,
        &kp.key("extraArgs"),
        &[],
    );
    registries(&mut c, &config.registries, &root.key("registries"));
    if let Some(install) = &config.install {
        let p = root.key("install").key("disk");
        c.check(
            &p,
            &install.disk,
            "a disk path",
            syntax::disk_path(&install.disk),
        );
    }
    for (name, value) in &config.sysctls {
        let p = root.key("sysctls").key(name);
        c.check(&p, name, "a sysctl name", syntax::sysctl_name(name));
        if value.is_empty() || value.contains(['\n', '\0']) {
            let reason = "the value must be non-empty, on one line".into();
            c.push(
                p,
                Problem::Invalid {
                    value: value.clone(),
                    what: "a sysctl value",
                    reason,
                },
            );
        }
    }
    let mut modules = BTreeMap::new();
    for (i, m) in config.kernel.modules.iter().enumerate() {
        let p = root.key("kernel").key("modules").index(i);
        c.check(&p, m, "a module name", syntax::module_name(m));
        // The kernel treats - and _ in module names alike.
        c.unique(&mut modules, &p, "module", m.replace('-', "_"));
    }
    cluster(&mut c, &config.cluster, &root.key("cluster"));
    machine(&mut c, &config.machine, &root.key("machine"));
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(c.errors))
    }
}

/// Flags Kiln sets itself from dedicated fields; setting them twice is refused.
const KUBELET_OWNED_FLAGS: &[(&str, &str)] = &[
    ("node-ip", "kubelet.nodeIp"),
    ("node-labels", "kubelet.labels"),
    ("register-with-taints", "kubelet.taints"),
];

fn kubelet(c: &mut Checker, k: &Kubelet, path: &FieldPath) {
    if let Some(image) = &k.image {
        c.check(
            &path.key("image"),
            image,
            "an image reference",
            syntax::image_ref(image),
        );
    }
    if let Some(ip) = &k.node_ip {
        c.check(
            &path.key("nodeIp"),
            ip,
            "an IP address",
            syntax::ip(ip).map(drop),
        );
    }
    for (key, value) in &k.labels {
        let p = path.key("labels").key(key);
        c.check(&p, key, "a label key", syntax::label_key(key));
        c.check(&p, value, "a label value", syntax::label_value(value));
    }
    let mut seen = BTreeMap::new();
    for (i, t) in k.taints.iter().enumerate() {
        let p = path.key("taints").index(i);
        c.check(
            &p.key("key"),
            &t.key,
            "a taint key",
            syntax::label_key(&t.key),
        );
        c.check(
            &p.key("value"),
            &t.value,
            "a taint value",
            syntax::label_value(&t.value),
        );
        c.unique(&mut seen, &p, "taint", format!("{}:{:?}", t.key, t.effect));
    }
    extra_args(
        c,
        &k.extra_args,
        &path.key("extraArgs"),
        KUBELET_OWNED_FLAGS,
    );
}

fn extra_args(
    c: &mut Checker,
    args: &BTreeMap<String, String>,
    path: &FieldPath,
    owned: &[(&str, &str)],
) {
    for flag in args.keys() {
        let p = path.key(flag);
        c.check(&p, flag, "a flag name", syntax::flag_name(flag));
        if let Some((_, field)) = owned.iter().find(|(f, _)| f == flag) {
            c.push(
                p,
                Problem::Conflict(format!("--{flag} is set from {field}; set it there")),
            );
        }
    }
}

fn registries(c: &mut Checker, r: &Registries, path: &FieldPath) {
    for (host, mirror) in &r.mirrors {
        let p = path.key("mirrors").key(host);
        c.check(&p, host, "a registry host", syntax::host_port(host));
        if mirror.endpoints.is_empty() {
            c.push(
                p.key("endpoints"),
                Problem::Required {
                    why: "a mirror needs an endpoint",
                },
            );
        }
        for (i, e) in mirror.endpoints.iter().enumerate() {
            c.url(
                &p.key("endpoints").index(i),
                e,
                "a mirror URL",
                &["http", "https"],
            );
        }
    }
    for (host, config) in &r.config {
        let p = path.key("config").key(host);
        c.check(&p, host, "a registry host", syntax::host_port(host));
        if let Some(auth) = &config.auth {
            c.required(
                &p.key("auth").key("username"),
                &auth.username,
                "credentials name a user",
            );
            c.required(
                &p.key("auth").key("password"),
                &auth.password,
                "credentials need a password",
            );
        }
        if let Some(ca) = &config.ca {
            let check = syntax::certificates(ca).map(drop);
            c.check_hidden(&p.key("ca"), "PEM certificates", check);
        }
    }
}

fn cluster(c: &mut Checker, k: &Cluster, path: &FieldPath) {
    let p = path.key("endpoint");
    if c.required(&p, &k.endpoint, "the Kubernetes API endpoint to join") {
        c.check(
            &p,
            &k.endpoint,
            "an https URL",
            syntax::url(&k.endpoint, &["https"]),
        );
    }
    let p = path.key("ca");
    if c.required(&p, &k.ca, "the Kubernetes CA to trust") {
        c.check_hidden(
            &p,
            "PEM certificates",
            syntax::certificates(&k.ca).map(drop),
        );
    }
    let p = path.key("token");
    if c.required(&p, &k.token, "the bootstrap token to join with") {
        c.check_hidden(&p, "a bootstrap token", syntax::bootstrap_token(&k.token));
    }
}

fn machine(c: &mut Checker, m: &Machine, path: &FieldPath) {
    let p = path.key("ca").key("cert");
    if c.required(&p, &m.ca.cert, "the machine CA signs the API certificates") {
        let check = syntax::certificates(&m.ca.cert).and_then(|cas| match cas.as_slice() {
            [true] => Ok(()),
            [false] => Err("the certificate is not a CA (basicConstraints)".into()),
            _ => Err(format!("expected one certificate, found {}", cas.len())),
        });
        c.check_hidden(&p, "a PEM CA certificate", check);
    }
    let p = path.key("ca").key("key");
    if c.required(
        &p,
        &m.ca.key,
        "the machine CA's key signs the node's API certificate",
    ) {
        c.check_hidden(&p, "a PEM private key", syntax::private_key(&m.ca.key));
    }
    for (i, san) in m.cert_sans.iter().enumerate() {
        let p = path.key("certSans").index(i);
        c.check(&p, san, "a DNS name or IP address", syntax::cert_san(san));
    }
}
