//! What a catalog of runbooks needs from Kubernetes RBAC: every (API group, resource, verb) its
//! native steps, their undos, its rollback steps and its Kubernetes facts send, so the
//! ClusterRole a deployment grants is derived from the runbooks instead of guessed (and
//! `runbook rbac` prints it).
//!
//! It owns the mapping from an action to the requests the live cluster (`runbook-kube`) really
//! makes for it, dry-run and undo included, because a role written from the action's name
//! alone misses half of them:
//!
//! | action | requests |
//! |---|---|
//! | a `kubernetes` fact | `get` (with a name) or `list` |
//! | `exec` fact or step | `get` and `create` on `pods/exec` (a WebSocket upgrade is a GET; since Kubernetes 1.35 it is also authorized as `create`) |
//! | `logs` fact | `get` on `pods/log` |
//! | `scale` | `get` the object (the replicas its undo restores), `patch` on `RESOURCE/scale` (the step and its undo) |
//! | `restart` | `patch` (the pod template's annotation) |
//! | `patch`, `annotate`, `label` | `get` (the fields the undo restores), `patch` |
//! | `apply` | `get` (the previous object), `patch` (server-side apply), `create` (an apply that creates is authorized as create too), `delete` (the undo of a create); a RoleBinding also needs `bind` on the role it names, a Role `escalate` |
//! | `delete` | `delete` |
//! | `cordon`, `uncordon` | `get` and `patch` on `nodes` |
//! | `drain` | `get` and `patch` on `nodes`, `list` and `get` on `pods`, `create` on `pods/eviction` |
//! | `wait` | `get` (a dry-run reads once), `list` and `watch` (a live wait lists the object, then watches it) |
//!
//! Writes in a dry-run carry `dryRun=All`, which RBAC authorizes as the same verb, so a dry-run
//! needs nothing more. Discovery (`/api`, `/apis`) and `/version` are open to every
//! authenticated identity (`system:discovery`), so no rule names them. Resources come from
//! the kinds table ([`crate::kinds::plural`]); a custom resource is named by its group and
//! plural like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value as Json;

use crate::expr::{Template, TemplatePart};
use crate::runbook::{
    Action, Catalog, FactSource, JsonTemplate, LogTarget, RollbackSpec, Target, UndoSpec,
};

/// One thing RBAC may allow: a verb on a resource of an API group, on every object or on one
/// named object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// `""` for the core group.
    pub group: String,
    /// `deployments`, or with a subresource `deployments/scale`.
    pub resource: String,
    pub verb: String,
    /// Only the object of this name (`resourceNames`); `None`: every object.
    pub name: Option<String>,
}

impl Permission {
    fn new(group: &str, resource: &str, verb: &str) -> Self {
        Self {
            group: group.to_owned(),
            resource: resource.to_owned(),
            verb: verb.to_owned(),
            name: None,
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " named {name}")?;
        }
        Ok(())
    }
}

/// What a catalog needs: every permission, with the runbooks that need it.
#[derive(Clone, Debug, Default)]
pub struct Requirements {
    pub needs: BTreeMap<Permission, BTreeSet<String>>,
    /// What could not be derived, such as an `apply` whose manifest's kind is a template; the
    /// role cannot be complete for these, and says so.
    pub unknown: Vec<String>,
}

/// The permissions every runbook of `catalog` needs.
pub fn requirements(catalog: &Catalog) -> Requirements {
    let mut requirements = Requirements::default();
    for runbook in &catalog.runbooks {
        let mut deriver = Deriver {
            runbook: &runbook.name,
            requirements: &mut requirements,
        };
        for fact in runbook.facts.values() {
            deriver.fact(&fact.source);
        }
        for step in &runbook.steps {
            deriver.action(&step.action);
            if let UndoSpec::Declared(undo) = &step.undo {
                deriver.action(undo);
            }
        }
        if let Some(RollbackSpec::Steps(steps)) = &runbook.rollback {
            for step in steps {
                deriver.action(&step.action);
                if let UndoSpec::Declared(undo) = &step.undo {
                    deriver.action(undo);
                }
            }
        }
    }
    requirements
}

struct Deriver<'a> {
    runbook: &'a str,
    requirements: &'a mut Requirements,
}

impl Deriver<'_> {
    fn need(&mut self, permission: Permission) {
        self.requirements
            .needs
            .entry(permission)
            .or_default()
            .insert(self.runbook.to_owned());
    }

    fn verbs(&mut self, group: &str, resource: &str, verbs: &[&str]) {
        for verb in verbs {
            self.need(Permission::new(group, resource, verb));
        }
    }

    fn fact(&mut self, source: &FactSource) {
        match source {
            FactSource::Kubernetes {
                api_version,
                kind,
                name,
                ..
            } => {
                let (group, resource) = resource(api_version, kind);
                let verb = if name.is_some() { "get" } else { "list" };
                self.verbs(&group, &resource, &[verb]);
            }
            FactSource::Exec { .. } => self.verbs("", "pods/exec", &["get", "create"]),
            FactSource::Logs { target, .. } => {
                if let LogTarget::Deployment(_) = target {
                    // The Deployment's selector, then its pods, to pick one as kubectl does.
                    self.verbs("apps", "deployments", &["get"]);
                    self.verbs("", "pods", &["list"]);
                }
                self.verbs("", "pods/log", &["get"]);
            }
            FactSource::Command { .. } | FactSource::Http { .. } | FactSource::Expr(_) => {}
        }
    }

    fn action(&mut self, action: &Action) {
        let target = |target: &Target| resource(&target.api_version, &target.kind);
        match action {
            Action::Scale { target: t, .. } => {
                let (group, resource) = target(t);
                self.verbs(&group, &resource, &["get"]);
                self.verbs(&group, &format!("{resource}/scale"), &["patch"]);
            }
            Action::Restart { target: t } => {
                let (group, resource) = target(t);
                self.verbs(&group, &resource, &["patch"]);
            }
            Action::Patch { target: t, .. }
            | Action::Annotate { target: t, .. }
            | Action::Label { target: t, .. } => {
                let (group, resource) = target(t);
                self.verbs(&group, &resource, &["get", "patch"]);
            }
            Action::Apply { manifest } => self.apply(manifest),
            Action::Delete { target: t, .. } => {
                let (group, resource) = target(t);
                self.verbs(&group, &resource, &["delete"]);
            }
            Action::Cordon { .. } | Action::Uncordon { .. } => {
                self.verbs("", "nodes", &["get", "patch"]);
            }
            Action::Drain { .. } => {
                self.verbs("", "nodes", &["get", "patch"]);
                self.verbs("", "pods", &["get", "list"]);
                self.verbs("", "pods/eviction", &["create"]);
            }
            Action::Exec { .. } => self.verbs("", "pods/exec", &["get", "create"]),
            Action::Wait { target: t, .. } => {
                let (group, resource) = target(t);
                self.verbs(&group, &resource, &["get", "list", "watch"]);
            }
            Action::Run { .. }
            | Action::Verify { .. }
            | Action::Capture(_)
            | Action::Gate
            | Action::Notify(_)
            | Action::Page(_)
            | Action::Call { .. } => {}
        }
    }

    fn apply(&mut self, manifest: &JsonTemplate) {
        let (Some(api_version), Some(kind)) = (
            literal_at(manifest, &["apiVersion"]),
            literal_at(manifest, &["kind"]),
        ) else {
            self.requirements.unknown.push(format!(
                "{}: an `apply` whose manifest's apiVersion or kind is a template",
                self.runbook
            ));
            return;
        };
        let (group, resource) = resource(&api_version, &kind);
        self.verbs(&group, &resource, &["get", "patch", "create", "delete"]);
        const RBAC: &str = "rbac.authorization.k8s.io";
        if group != RBAC {
            return;
        }
        // The API server refuses to store a binding to a role, or a role, granting more than
        // its author holds, unless the author may `bind` that role or `escalate`.
        match kind.as_str() {
            "RoleBinding" | "ClusterRoleBinding" => {
                let role_kind = literal_at(manifest, &["roleRef", "kind"]);
                let role = literal_at(manifest, &["roleRef", "name"]);
                match role_kind.as_deref() {
                    Some(role_kind @ ("Role" | "ClusterRole")) => self.need(Permission {
                        name: role,
                        ..Permission::new(RBAC, &crate::kinds::plural(role_kind), "bind")
                    }),
                    _ => self.requirements.unknown.push(format!(
                        "{}: a {kind} whose roleRef.kind is not Role or ClusterRole as written",
                        self.runbook
                    )),
                }
            }
            "Role" | "ClusterRole" => self.need(Permission {
                name: literal_at(manifest, &["metadata", "name"]),
                ..Permission::new(RBAC, &resource, "escalate")
            }),
            _ => {}
        }
    }
}

/// The API group and resource that serve `kind` of `api_version`.
pub fn resource(api_version: &str, kind: &str) -> (String, String) {
    let group = api_version
        .split_once('/')
        .map_or("", |(group, _)| group)
        .to_owned();
    (group, crate::kinds::plural(kind))
}

/// The text at `path` in a manifest, when it is written out (not a template).
fn literal_at(manifest: &JsonTemplate, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    match manifest {
        JsonTemplate::Literal(json) => {
            let mut value = json.get(first)?;
            for key in rest {
                value = value.get(key)?;
            }
            value.as_str().map(str::to_owned)
        }
        JsonTemplate::Object(entries) => {
            let (_, value) = entries.iter().find(|(key, _)| key == first)?;
            if rest.is_empty() {
                match value {
                    JsonTemplate::Literal(Json::String(text)) => Some(text.clone()),
                    JsonTemplate::String(template) => literal_text(template),
                    _ => None,
                }
            } else {
                literal_at(value, rest)
            }
        }
        JsonTemplate::String(_) | JsonTemplate::Array(_) => None,
    }
}

fn literal_text(template: &Template) -> Option<String> {
    template.is_literal().then(|| {
        template
            .parts
            .iter()
            .map(|part| match part {
                TemplatePart::Text(text) => text.as_str(),
                TemplatePart::Expr(..) => "",
            })
            .collect()
    })
}

/// One rule of a Role or ClusterRole, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

impl Rule {
    /// Reads the `rules` of a Role or ClusterRole object; entries that are not rules are
    /// left out.
    pub fn all_in(role: &Json) -> Vec<Rule> {
        let strings = |rule: &Json, field: &str| -> Vec<String> {
            rule.get(field)
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        };
        role.get("rules")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|rule| Rule {
                api_groups: strings(rule, "apiGroups"),
                resources: strings(rule, "resources"),
                verbs: strings(rule, "verbs"),
                resource_names: strings(rule, "resourceNames"),
            })
            .collect()
    }

    /// Whether this rule allows `permission`, as RBAC decides it (`*` matches anything; a rule
    /// with `resourceNames` allows only those objects).
    pub fn allows(&self, permission: &Permission) -> bool {
        let has =
            |list: &[String], value: &str| list.iter().any(|item| item == "*" || item == value);
        has(&self.api_groups, &permission.group)
            && has(&self.resources, &permission.resource)
            && has(&self.verbs, &permission.verb)
            && (self.resource_names.is_empty()
                || permission
                    .name
                    .as_ref()
                    .is_some_and(|name| self.resource_names.contains(name)))
    }
}

impl Requirements {
    /// The ClusterRole `name` granting exactly these permissions, as YAML: one rule per
    /// resource (and object name), sorted, each with a comment naming the runbooks behind
    /// each verb, so a reviewer can tell why every verb is there.
    pub fn cluster_role(&self, name: &str) -> String {
        // (group, resource, object name) -> verb -> runbooks.
        type Verbs<'a> = BTreeMap<&'a str, &'a BTreeSet<String>>;
        let mut rules: BTreeMap<(&str, &str, Option<&str>), Verbs<'_>> = BTreeMap::new();
        for (permission, runbooks) in &self.needs {
            rules
                .entry((
                    &permission.group,
                    &permission.resource,
                    permission.name.as_deref(),
                ))
                .or_default()
                .insert(&permission.verb, runbooks);
        }
        let mut out = String::new();
        out.push_str(
            "# Generated by `runbook rbac` from the runbooks folder: what its runbooks' steps, undos,\n\
             # rollbacks and facts read and change through the API, dry-run included. Do not edit by\n\
             # hand: a test compares this file with `runbook rbac`. Not here: what `run` steps and\n\
             # `command` facts do (kubectl, helm...) with the credentials their process is given.\n",
        );
        for unknown in &self.unknown {
            let _ = writeln!(out, "# Not derived (grant it yourself): {unknown}");
        }
        let _ = write!(
            out,
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {}\nrules:",
            yaml_scalar(name)
        );
        if rules.is_empty() {
            out.push_str(" []\n");
            return out;
        }
        out.push('\n');
        for ((group, resource, object), verbs) in &rules {
            // As kubectl names them: `deployments.apps/scale`, `pods/exec`.
            let (plural, subresource) = match resource.split_once('/') {
                Some((plural, subresource)) => (plural, format!("/{subresource}")),
                None => (*resource, String::new()),
            };
            let mut what = if group.is_empty() {
                format!("{plural}{subresource}")
            } else {
                format!("{plural}.{group}{subresource}")
            };
            if let Some(object) = object {
                let _ = write!(what, " named {object}");
            }
            let _ = writeln!(out, "  # {what}");
            // Verbs needed by the same runbooks share a line.
            let mut by_runbooks: BTreeMap<&BTreeSet<String>, Vec<&str>> = BTreeMap::new();
            for (verb, runbooks) in verbs {
                by_runbooks.entry(runbooks).or_default().push(verb);
            }
            let mut lines: Vec<(String, &BTreeSet<String>)> = by_runbooks
                .into_iter()
                .map(|(runbooks, verbs)| (verbs.join(", "), runbooks))
                .collect();
            lines.sort();
            for (verbs, runbooks) in lines {
                comment_list(&mut out, &format!("  #   {verbs}: "), runbooks);
            }
            let verbs: Vec<&str> = verbs.keys().copied().collect();
            let _ = writeln!(out, "  - apiGroups: [{}]", yaml_scalar(group));
            let _ = writeln!(out, "    resources: [{}]", yaml_scalar(resource));
            if let Some(object) = object {
                let _ = writeln!(out, "    resourceNames: [{}]", yaml_scalar(object));
            }
            let _ = writeln!(
                out,
                "    verbs: [{}]",
                verbs
                    .iter()
                    .map(|verb| yaml_scalar(verb))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        out
    }
}

/// `lead` and the runbooks, comma-separated, wrapped under 100 columns.
fn comment_list(out: &mut String, lead: &str, runbooks: &BTreeSet<String>) {
    const WIDTH: usize = 100;
    let indent = format!("  #{}", " ".repeat(lead.len() - 3));
    let mut line = lead.to_owned();
    let mut first = true;
    for runbook in runbooks {
        let piece = if first {
            runbook.clone()
        } else {
            format!(", {runbook}")
        };
        if !first && line.len() + piece.len() > WIDTH {
            out.push_str(&line);
            out.push_str(",\n");
            line = format!("{indent}{runbook}");
        } else {
            line.push_str(&piece);
        }
        first = false;
    }
    out.push_str(&line);
    out.push('\n');
}

/// A plain YAML scalar when the text is one (names, groups, verbs), else a JSON string (valid
/// YAML too).
fn yaml_scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '/' | '_'))
        && text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !matches!(
            text,
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        text.to_owned()
    } else {
        Json::String(text.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(runbooks: &[&str]) -> Catalog {
        let loader = crate::loader::Loader::new();
        let mut diagnostics = crate::diagnostic::Diagnostics::new();
        let mut workspace = crate::loader::Workspace::default();
        for (index, text) in runbooks.iter().enumerate() {
            loader.load_text(
                std::path::Path::new(&format!("runbook-{index}.yaml")),
                (*text).to_owned(),
                &mut workspace,
                &mut diagnostics,
            );
        }
        let catalog = crate::check::check(&workspace, &mut diagnostics);
        assert!(!diagnostics.has_errors(), "{diagnostics:?}");
        catalog
    }

    fn runbook(name: &str, spec: &str) -> String {
        format!("apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata:\n  name: {name}\nspec:\n{spec}")
    }

    fn needed(catalog: &Catalog) -> Vec<String> {
        requirements(catalog)
            .needs
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_scale_step_needs_the_scale_subresource_and_a_read_for_its_undo() {
        let catalog = catalog(&[&runbook(
            "scale-api",
            "  steps:\n    - scale: {kind: Deployment, name: api, namespace: shop, replicas: 3}\n",
        )]);
        assert_eq!(
            needed(&catalog),
            ["get apps/deployments", "patch apps/deployments/scale"]
        );
    }

    #[test]
    fn drain_exec_and_logs_need_their_subresources() {
        let catalog = catalog(&[&runbook(
            "node-work",
            "  params:\n    - {name: node, default: n1}\n  facts:\n    - name: api.log\n      logs: {namespace: shop, pod: api-0, tail: 10}\n  steps:\n    - drain: {node: \"${params.node}\"}\n    - exec: {namespace: shop, pod: api-0, command: [\"true\"]}\n      irreversible: true\n    - verify: api.log != \"\"\n",
        )]);
        assert_eq!(
            needed(&catalog),
            [
                "get core/nodes",
                "patch core/nodes",
                "get core/pods",
                "list core/pods",
                "create core/pods/eviction",
                "create core/pods/exec",
                "get core/pods/exec",
                "get core/pods/log",
            ]
        );
    }

    #[test]
    fn a_deployments_log_needs_the_deployment_and_its_pods_listed() {
        let catalog = catalog(&[&runbook(
            "crash",
            "  facts:\n    - name: api.crash\n      logs: {namespace: shop, deployment: api, previous: true}\n  steps:\n    - verify: api.crash != \"\"\n",
        )]);
        assert_eq!(
            needed(&catalog),
            [
                "list core/pods",
                "get core/pods/log",
                "get apps/deployments"
            ]
        );
    }

    #[test]
    fn apply_may_create_and_its_undo_may_delete_and_a_binding_needs_bind_on_its_role() {
        let catalog = catalog(&[&runbook(
            "grant",
            "  steps:\n    - apply:\n        manifest:\n          apiVersion: rbac.authorization.k8s.io/v1\n          kind: RoleBinding\n          metadata: {name: devs, namespace: team}\n          roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}\n          subjects: [{kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}]\n",
        )]);
        assert_eq!(
            needed(&catalog),
            [
                "bind rbac.authorization.k8s.io/clusterroles named edit",
                "create rbac.authorization.k8s.io/rolebindings",
                "delete rbac.authorization.k8s.io/rolebindings",
                "get rbac.authorization.k8s.io/rolebindings",
                "patch rbac.authorization.k8s.io/rolebindings",
            ]
        );
    }

    #[test]
    fn facts_get_by_name_or_list_and_a_custom_resource_is_named_by_group_and_plural() {
        let catalog = catalog(&[&runbook(
            "flux",
            "  facts:\n    - name: release\n      kubernetes: {apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: api, namespace: shop}\n    - name: policies\n      kubernetes: {kind: NetworkPolicy, namespace: shop}\n  steps:\n    - verify: release.status != () && policies.items.len() >= 0\n",
        )]);
        assert_eq!(
            needed(&catalog),
            [
                "get helm.toolkit.fluxcd.io/helmreleases",
                "list networking.k8s.io/networkpolicies"
            ]
        );
    }

    #[test]
    fn the_role_lists_each_resource_once_with_the_runbooks_behind_each_verb() {
        let catalog = catalog(&[
            &runbook(
                "scale-api",
                "  steps:\n    - scale: {kind: Deployment, name: api, namespace: shop, replicas: 3}\n",
            ),
            &runbook(
                "restart-api",
                "  steps:\n    - restart: {kind: Deployment, name: api, namespace: shop}\n",
            ),
        ]);
        let role = requirements(&catalog).cluster_role("runbook");
        let body = role
            .split_once("apiVersion:")
            .map(|(_, body)| body)
            .unwrap_or_default();
        assert_eq!(
            body,
            " rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: runbook
rules:
  # deployments.apps
  #   get: scale-api
  #   patch: restart-api
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, patch]
  # deployments.apps/scale
  #   patch: scale-api
  - apiGroups: [apps]
    resources: [deployments/scale]
    verbs: [patch]
"
        );
    }

    #[test]
    fn a_rule_allows_what_rbac_would() {
        let rule = Rule {
            api_groups: vec!["apps".into()],
            resources: vec!["deployments".into(), "deployments/scale".into()],
            verbs: vec!["get".into(), "patch".into()],
            resource_names: vec![],
        };
        assert!(rule.allows(&Permission::new("apps", "deployments/scale", "patch")));
        assert!(!rule.allows(&Permission::new("apps", "deployments", "delete")));
        assert!(!rule.allows(&Permission::new("", "deployments", "get")));
        let named = Rule {
            api_groups: vec!["rbac.authorization.k8s.io".into()],
            resources: vec!["clusterroles".into()],
            verbs: vec!["bind".into()],
            resource_names: vec!["edit".into()],
        };
        let bind = |name: Option<&str>| Permission {
            name: name.map(str::to_owned),
            ..Permission::new("rbac.authorization.k8s.io", "clusterroles", "bind")
        };
        assert!(named.allows(&bind(Some("edit"))));
        assert!(!named.allows(&bind(Some("admin"))));
        assert!(!named.allows(&bind(None)));
        let everything = Rule {
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            verbs: vec!["*".into()],
            resource_names: vec![],
        };
        assert!(everything.allows(&bind(None)));
    }
}
