//! Who a bearer token belongs to, and whether they may do something, asked of the API server
//! itself: a `TokenReview` (authentication.k8s.io/v1) and a `SubjectAccessReview`
//! (authorization.k8s.io/v1), as kube-rbac-proxy and the aggregated API servers do. The caller
//! needs `create` on both (the `system:auth-delegator` ClusterRole grants it).
//!
//! Neither review is stored by the server; each is one POST answered with the review and its
//! `status`. Both are safe to repeat, so they are retried as reads are.

use http::Method;
use serde_json::{json, Value as Json};

use crate::transport::{Call, Transport};
use runbook_core::effects::EffectError;

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// A user the API server authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// `user.extra`, kept as the server gave it so the access review carries it back.
    pub extra: Json,
}

/// What a [`User`] asks to do: the resource attributes of a SubjectAccessReview.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Whether the API server allowed it, and its reason (RBAC names the binding that allowed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Who `token` belongs to: `Ok(None)` when the server does not authenticate it (its `error`
/// says why, and is not passed on: it can name the authenticators tried).
pub async fn review_token(transport: &Transport, token: &str) -> Result<Option<User>, EffectError> {
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    });
    let call = Call::new(
        Method::POST,
        TOKEN_REVIEWS.to_owned(),
        "create TokenReview (who presents this token)",
    )
    .json("application/json", &review);
    let answer = transport.json(&call).await?;
    let status = &answer["status"];
    if status["authenticated"] != true {
        return Ok(None);
    }
    let text = |value: &Json| value.as_str().unwrap_or_default().to_owned();
    let user = &status["user"];
    let username = text(&user["username"]);
    if username.is_empty() {
        return Ok(None);
    }
    Ok(Some(User {
        username,
        uid: text(&user["uid"]),
        groups: user["groups"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        extra: user.get("extra").cloned().unwrap_or(Json::Null),
    }))
}

/// Whether `user` may do what `attributes` say, by the cluster's RBAC (or whichever
/// authorizers the API server runs).
pub async fn may(
    transport: &Transport,
    user: &User,
    attributes: &Attributes<'_>,
) -> Result<Decision, EffectError> {
    let mut resource = json!({
        "verb": attributes.verb,
        "group": attributes.group,
        "resource": attributes.resource,
    });
    if let Some(namespace) = attributes.namespace {
        resource["namespace"] = json!(namespace);
    }
    if let Some(name) = attributes.name {
        resource["name"] = json!(name);
    }
    let mut spec = json!({
        "user": user.username,
        "groups": user.groups,
        "resourceAttributes": resource,
    });
    if !user.uid.is_empty() {
        spec["uid"] = json!(user.uid);
    }
    if user.extra.is_object() {
        spec["extra"] = user.extra.clone();
    }
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    });
    let call = Call::new(
        Method::POST,
        ACCESS_REVIEWS.to_owned(),
        format!(
            "create SubjectAccessReview (may {} {} {}.{})",
            user.username, attributes.verb, attributes.resource, attributes.group
        ),
    )
    .json("application/json", &review);
    let answer = transport.json(&call).await?;
    let status = &answer["status"];
    Ok(Decision {
        allowed: status["allowed"] == true && status["denied"] != true,
        reason: status["reason"].as_str().unwrap_or_default().to_owned(),
    })
}

const SELF_REVIEWS: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

/// Who the client's own credentials belong to, as the API server sees them
/// (`SelfSubjectReview`, GA since Kubernetes 1.28).
pub async fn who_am_i(transport: &Transport) -> Result<User, EffectError> {
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
    });
    let call = Call::new(
        Method::POST,
        SELF_REVIEWS.to_owned(),
        "create SelfSubjectReview (who am I)",
    )
    .json("application/json", &review);
    let answer = transport.json(&call).await?;
    let user = &answer["status"]["userInfo"];
    let text = |value: &Json| value.as_str().unwrap_or_default().to_owned();
    let username = text(&user["username"]);
    if username.is_empty() {
        return Err(EffectError::Forbidden(
            "the API server names no user for these credentials".to_owned(),
        ));
    }
    Ok(User {
        username,
        uid: text(&user["uid"]),
        groups: user["groups"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        extra: user.get("extra").cloned().unwrap_or(Json::Null),
    })
}
