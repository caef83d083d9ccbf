//! The status subresource of a custom resource, checked the same way against the fake API
//! server (`contract.rs`) and a real one (`cluster.rs`), so the fake answers as kube-apiserver
//! does: `runbook serve --cluster-state` keeps a run's progress in a `RunbookRun`'s status
//! and must not learn from the fake that a write does what a real server ignores.
//!
//! What kube-apiserver does (apiextensions-apiserver `registry/customresource`,
//! `customResourceStrategy` and `statusStrategy`): create drops `status`; an update of the
//! object keeps the stored status and counts any other change outside `metadata` in
//! `metadata.generation`; an update of `/status` takes only the status; both refuse a stale
//! resourceVersion with 409, and a PUT with none with 422.

use http::Method;
use runbook_kube::transport::{Call, Policy, Retry, Transport};
use serde_json::{json, Value as Json};

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

pub fn runbook_runs(namespace: &str) -> String {
    format!("/apis/runbook.dev/v1alpha1/namespaces/{namespace}/runbookruns")
}

async fn write(
    transport: &Transport,
    method: Method,
    uri: String,
    content: &'static str,
    body: &Json,
) -> Json {
    let what = format!("{method} {uri}");
    let call = Call::new(method, uri, what.clone())
        .json(content, body)
        .retry(Retry::Never);
    transport
        .json(&call)
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

async fn read(transport: &Transport, uri: String) -> Json {
    let what = format!("GET {uri}");
    transport
        .json(&Call::new(Method::GET, uri, what.clone()))
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

fn generation(object: &Json) -> i64 {
    object["metadata"]["generation"]
        .as_i64()
        .unwrap_or_default()
}

fn resource_version(object: &Json) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Creates a RunbookRun named `name` in `namespace` and checks, write by write, which parts
/// of it each endpoint changes.
pub async fn check_runbook_run_status_subresource(
    transport: &Transport,
    namespace: &str,
    name: &str,
) {
    let collection = runbook_runs(namespace);
    let object = format!("{collection}/{name}");
    let status_path = format!("{object}/status");

    // Create: the status in the body is dropped; generation starts at 1.
    let created = write(
        transport,
        Method::POST,
        collection.clone(),
        JSON,
        &json!({
            "apiVersion": "runbook.dev/v1alpha1",
            "kind": "RunbookRun",
            "metadata": {"name": name, "labels": {"team": "web"}},
            "spec": {"runbook": "scale-api"},
            "status": {"phase": "Succeeded"},
        }),
    )
    .await;
    assert!(
        created.get("status").is_none(),
        "create keeps no status: {created}"
    );
    assert_eq!(generation(&created), 1, "{created}");
    assert!(read(transport, object.clone())
        .await
        .get("status")
        .is_none());

    // A PUT of /status that also changes the spec and a label changes only the status.
    let mut body = created.clone();
    body["spec"]["runbook"] = json!("restart-api");
    body["metadata"]["labels"]["team"] = json!("db");
    body["status"] = json!({"phase": "Running", "step": 1});
    let after_status = write(transport, Method::PUT, status_path.clone(), JSON, &body).await;
    assert_eq!(
        after_status["status"],
        json!({"phase": "Running", "step": 1})
    );
    assert_eq!(
        after_status["spec"], created["spec"],
        "the spec is as stored"
    );
    assert_eq!(
        after_status["metadata"]["labels"],
        json!({"team": "web"}),
        "so are the labels"
    );
    assert_eq!(
        generation(&after_status),
        1,
        "a status write is not a new generation"
    );
    assert_ne!(resource_version(&after_status), resource_version(&created));

    // GET of /status is the whole object.
    let whole = read(transport, status_path.clone()).await;
    assert_eq!(whole["spec"], created["spec"]);
    assert_eq!(whole["status"], after_status["status"]);

    // A PUT of the object that changes spec and status changes the spec only, and counts.
    let mut body = after_status.clone();
    body["spec"]["runbook"] = json!("drain-node");
    body["status"] = json!({"phase": "Failed"});
    let after_main = write(transport, Method::PUT, object.clone(), JSON, &body).await;
    assert_eq!(after_main["spec"]["runbook"], "drain-node");
    assert_eq!(
        after_main["status"], after_status["status"],
        "the stored status is kept"
    );
    assert_eq!(
        generation(&after_main),
        2,
        "a spec change is a new generation"
    );

    // A merge patch of the object's status alone changes nothing a reader sees.
    let patched = write(
        transport,
        Method::PATCH,
        object.clone(),
        MERGE,
        &json!({"status": {"phase": "Failed"}}),
    )
    .await;
    assert_eq!(patched["status"], after_status["status"]);
    assert_eq!(generation(&patched), 2);

    // A metadata change through the object is kept and is not a new generation.
    let labelled = write(
        transport,
        Method::PATCH,
        object.clone(),
        MERGE,
        &json!({"metadata": {"labels": {"stage": "two"}}}),
    )
    .await;
    assert_eq!(labelled["metadata"]["labels"]["stage"], "two");
    assert_eq!(generation(&labelled), 2);

    // A merge patch of /status that also carries a spec change changes only the status.
    let status_patched = write(
        transport,
        Method::PATCH,
        status_path.clone(),
        MERGE,
        &json!({"spec": {"runbook": "ignored"}, "metadata": {"labels": {"stage": "three"}}, "status": {"phase": "Succeeded"}}),
    )
    .await;
    assert_eq!(status_patched["spec"]["runbook"], "drain-node");
    assert_eq!(status_patched["metadata"]["labels"]["stage"], "two");
    assert_eq!(
        status_patched["status"],
        json!({"phase": "Succeeded", "step": 1})
    );
    assert_eq!(generation(&status_patched), 2);

    // A stale resourceVersion on /status is a conflict, with the server's words.
    let mut stale = after_status.clone();
    stale["status"] = json!({"phase": "Running", "step": 2});
    let call = Call::new(Method::PUT, status_path.clone(), "stale status write")
        .json(JSON, &stale)
        .retry(Retry::Never);
    let failure = transport
        .attempt(&call)
        .await
        .expect_err("a stale resourceVersion is refused");
    assert_eq!(failure.status, Some(409), "{failure:?}");
    assert_eq!(failure.reason, "Conflict");
    assert_eq!(
        failure.message,
        format!("Operation cannot be fulfilled on runbookruns.runbook.dev \"{name}\": the object has been modified; please apply your changes to the latest version and try again")
    );
    let current = read(transport, object.clone()).await;
    assert_eq!(
        current["status"], status_patched["status"],
        "nothing was written"
    );

    // A PUT without a resourceVersion: a custom resource is never overwritten blindly.
    let mut blind = current.clone();
    if let Some(metadata) = blind["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    blind["spec"]["runbook"] = json!("blind");
    for path in [&object, &status_path] {
        let call = Call::new(
            Method::PUT,
            path.clone(),
            "update without a resourceVersion",
        )
        .json(JSON, &blind)
        .retry(Retry::Never);
        let failure = transport
            .attempt(&call)
            .await
            .expect_err("an update without a resourceVersion is refused");
        assert_eq!(failure.status, Some(422), "{path}: {failure:?}");
        assert_eq!(failure.reason, "Invalid");
        assert!(
            failure.message.contains("metadata.resourceVersion")
                && failure.message.contains("must be specified for an update"),
            "{failure:?}"
        );
    }

    // Every write that changed something is a watch event: the status write among them.
    let watch = Transport::new(transport.client().clone(), Policy::default());
    let uri = format!(
        "{collection}?watch=true&resourceVersion={}&fieldSelector=metadata.name%3D{name}&timeoutSeconds=2",
        resource_version(&created)
    );
    let events = watch
        .send(&Call::new(Method::GET, uri, "watch the run"))
        .await
        .unwrap_or_else(|error| panic!("watch: {error}"));
    let statuses: Vec<Json> = events
        .split(|byte| *byte == b'\n')
        .filter_map(|line| serde_json::from_slice::<Json>(line).ok())
        .filter(|event| event["type"] == "MODIFIED")
        .map(|event| event["object"]["status"].clone())
        .collect();
    assert_eq!(
        statuses.first(),
        Some(&json!({"phase": "Running", "step": 1})),
        "the first change after the create is the status write: {statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&status_patched["status"]),
        "{statuses:?}"
    );
}
