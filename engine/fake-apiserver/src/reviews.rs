//! `TokenReview` and `SubjectAccessReview`: who a bearer token belongs to, and whether they may
//! do something, as a real API server answers them (201 with the review and its `status`,
//! nothing stored). The users and the grants are what the test gives: [`FakeApi::add_token`]
//! and [`FakeApi::grant`], a minimal RBAC (a rule for a user or a group, a verb, a resource,
//! an optional namespace and resource names).
//!
//! [`FakeApi::add_token`]: crate::FakeApi::add_token
//! [`FakeApi::grant`]: crate::FakeApi::grant

use serde_json::{json, Value as Json};

use crate::reply::{fail, json_reply, Reply};
use crate::requests::Recorded;
use crate::store::State;

pub(crate) const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
pub(crate) const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
pub(crate) const SELF_REVIEWS: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

/// The ValidatingAdmissionPolicy of `deploy/base/approval-policy.yaml`, by name.
pub(crate) const APPROVAL_POLICY: &str = "runbook-approvals-name-their-approver";

/// One RBAC rule, bound to a user or a group: what a Role and its RoleBinding say together.
#[derive(Clone, Debug)]
pub struct Grant {
    /// `User:NAME` or `Group:NAME`.
    pub subject: String,
    pub verb: String,
    pub group: String,
    pub resource: String,
    /// `None`: a ClusterRoleBinding (every namespace).
    pub namespace: Option<String>,
    /// Empty: every name.
    pub names: Vec<String>,
    /// The binding's name, for the reason (`RBAC: allowed by RoleBinding "NAME/NS" ...`).
    pub binding: String,
}

fn invalid(kind: &str, field: &str, message: &str) -> Reply {
    fail(
        422,
        "Invalid",
        &format!(
            "{kind}.{} \"\" is invalid: {field}: Required value: {message}",
            kind.to_lowercase()
        ),
        json!({"kind": kind, "group": if kind == "TokenReview" { "authentication.k8s.io" } else { "authorization.k8s.io" },
               "causes": [{"reason": "FieldValueRequired", "message": format!("Required value: {message}"), "field": field}]}),
    )
}

impl State {
    /// The user the request's bearer token belongs to, as the authenticator answers it.
    fn requester(&self, request: &Recorded) -> Option<&Json> {
        let token = request
            .authorization
            .as_deref()
            .and_then(|value| value.strip_prefix("Bearer "))?;
        self.tokens.get(token)
    }

    /// `SelfSubjectReview`: who the caller is (201 with `status.userInfo`); 401 for a token
    /// the fake does not know, as a real server answers an unauthenticated request.
    pub(crate) fn self_review(&self, request: &Recorded) -> Reply {
        let Some(user) = self.requester(request) else {
            return fail(401, "Unauthorized", "Unauthorized", Json::Null);
        };
        json_reply(
            201,
            json!({
                "kind": "SelfSubjectReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "status": {"userInfo": user},
            }),
        )
    }

    /// What the approval policy (`deploy/base/approval-policy.yaml`, CEL run by the API
    /// server's admission) does to a write of a RunbookApproval, which the fake stands in for
    /// without CEL: a create must name its creator in `spec.by` and claim only groups the
    /// creator is in; an update may not change `spec`. Denied: 403 Forbidden with the
    /// server's message. Writes to `/status` are not matched (the policy names only the
    /// resource), so the server records its decisions.
    pub(crate) fn approval_admission(&self, request: &Recorded) -> Option<Reply> {
        let path = request.path.trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        // /apis/runbook.dev/v1alpha1/namespaces/NS/runbookapprovals[/NAME]
        let at = segments.iter().position(|s| *s == "runbookapprovals")?;
        if segments.get(1..3) != Some(&["apis", "runbook.dev"][..]) || segments.len() > at + 2 {
            return None;
        }
        let body = request.body.as_ref()?;
        let name = body["metadata"]["name"].as_str().unwrap_or_default();
        let deny = |message: String| {
            Some(fail(
                403,
                "Forbidden",
                &format!(
                    "runbookapprovals.runbook.dev \"{name}\" is forbidden: ValidatingAdmissionPolicy '{APPROVAL_POLICY}' with binding '{APPROVAL_POLICY}' denied request: {message}"
                ),
                json!({"name": name, "group": "runbook.dev", "kind": "runbookapprovals"}),
            ))
        };
        match request.method.as_str() {
            "POST" => {
                let user = self.requester(request).cloned().unwrap_or(Json::Null);
                let username = user["username"].as_str().unwrap_or_default();
                let by = body["spec"]["by"].as_str().unwrap_or_default();
                if by != username {
                    return deny(format!(
                        "spec.by must name who gives the approval ({username}), not {by}"
                    ));
                }
                let groups: Vec<&str> = user["groups"]
                    .as_array()
                    .map(|g| g.iter().filter_map(Json::as_str).collect())
                    .unwrap_or_default();
                let claimed = body["spec"]["groups"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if claimed
                    .iter()
                    .any(|g| !g.as_str().is_some_and(|g| groups.contains(&g)))
                {
                    return deny("spec.groups may name only groups the approver is in".to_owned());
                }
                None
            }
            "PUT" | "PATCH" => {
                let changes_spec = match request.method.as_str() {
                    "PUT" => {
                        let stored = segments.get(at + 1).and_then(|name| {
                            let namespace = segments.get(at - 1)?;
                            self.objects
                                .values()
                                .find(|o| {
                                    o["kind"] == "RunbookApproval"
                                        && o["metadata"]["name"] == *name
                                        && o["metadata"]["namespace"] == *namespace
                                })
                                .cloned()
                        });
                        stored.is_some_and(|stored| stored["spec"] != body["spec"])
                    }
                    _ => body.get("spec").is_some(),
                };
                changes_spec.then(|| deny("an approval cannot be changed once given".to_owned()))?
            }
            _ => None,
        }
    }

    pub(crate) fn token_review(&self, request: &Recorded) -> Reply {
        let Some(review) = request.body.clone() else {
            return fail(
                400,
                "BadRequest",
                "the body is not a TokenReview",
                Json::Null,
            );
        };
        let token = review
            .pointer("/spec/token")
            .and_then(Json::as_str)
            .unwrap_or_default();
        if token.is_empty() {
            return invalid("TokenReview", "spec.token", "token must not be empty");
        }
        let status = match self.tokens.get(token) {
            Some(user) => {
                json!({"authenticated": true, "user": user, "audiences": ["https://kubernetes.default.svc.cluster.local"]})
            }
            None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
        };
        json_reply(
            201,
            json!({
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": review.get("spec").cloned().unwrap_or(Json::Null),
                "status": status,
            }),
        )
    }

    pub(crate) fn access_review(&self, request: &Recorded) -> Reply {
        let Some(review) = request.body.clone() else {
            return fail(
                400,
                "BadRequest",
                "the body is not a SubjectAccessReview",
                Json::Null,
            );
        };
        let spec = review.get("spec").cloned().unwrap_or(Json::Null);
        let user = spec["user"].as_str().unwrap_or_default();
        let groups: Vec<&str> = spec["groups"]
            .as_array()
            .map(|groups| groups.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        if user.is_empty() && groups.is_empty() {
            return invalid(
                "SubjectAccessReview",
                "spec.user",
                "at least one of user or group must be specified",
            );
        }
        let attributes = &spec["resourceAttributes"];
        if !attributes.is_object() {
            return invalid(
                "SubjectAccessReview",
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            );
        }
        let field = |name: &str| attributes[name].as_str().unwrap_or_default();
        let allowed_by = self.grants.iter().find(|grant| {
            let subject = match grant.subject.split_once(':') {
                Some(("User", name)) => name == user,
                Some(("Group", name)) => groups.contains(&name),
                _ => false,
            };
            subject
                && (grant.verb == field("verb") || grant.verb == "*")
                && grant.group == field("group")
                && grant.resource == field("resource")
                && grant
                    .namespace
                    .as_deref()
                    .is_none_or(|namespace| namespace == field("namespace"))
                && (grant.names.is_empty() || grant.names.iter().any(|name| name == field("name")))
        });
        let status = match allowed_by {
            Some(grant) => {
                let (kind, name) = match grant.subject.split_once(':') {
                    Some((kind, name)) => (kind, name),
                    None => ("User", grant.subject.as_str()),
                };
                let binding = match &grant.namespace {
                    Some(namespace) => format!("RoleBinding \"{}/{namespace}\"", grant.binding),
                    None => format!("ClusterRoleBinding \"{}\"", grant.binding),
                };
                json!({"allowed": true, "reason": format!("RBAC: allowed by {binding} of Role \"{}\" to {kind} \"{name}\"", grant.binding)})
            }
            None => json!({"allowed": false}),
        };
        json_reply(
            201,
            json!({
                "kind": "SubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": spec,
                "status": status,
            }),
        )
    }
}
