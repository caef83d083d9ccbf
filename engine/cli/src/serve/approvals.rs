//! `--cluster-state`: gates answered through the cluster. `runbook approve RUN --cluster`
//! creates a RunbookApproval (`schemas/runbookapproval.crd.yaml`) with the approver's own
//! credentials; whichever replica runs RUN takes it in.
//!
//! Who approves is the API server's word twice over: its admission policy
//! (`deploy/base/approval-policy.yaml`) refuses an approval whose `spec.by` and `spec.groups`
//! are not its creator's, and the replica asks it (SubjectAccessReview) whether that user may
//! `approve` `runbooks.runbook.dev` named by the run's runbook, the same RBAC check as the HTTP
//! approve with `--kubernetes-approvers`. The decision is written to the approval's status at
//! the resourceVersion read, so it is taken in once. An approval of a run that has ended, or
//! that waits at another step, is refused with the reason, so the approver is not left waiting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use runbook_core::effects::{Answer, EffectError};
use serde_json::{json, Value as Json};

use super::registry::RunState;
use super::shared::phase;
use super::{lock, metrics, Server};

/// How often the admission policy's presence is checked again.
const POLICY_CHECK: Duration = Duration::from_secs(30);

/// How long a decided approval is kept before it is deleted.
const KEEP_DECIDED: Duration = Duration::from_secs(3600);

/// Takes approvals in every `every` until the server stops.
pub(super) async fn take_approvals(server: Arc<Server>, every: Duration) {
    // Whether the admission policy is installed, as last checked, and when: once found, it is
    // checked again every POLICY_CHECK, not at every pass; while missing, at every pass.
    let mut policy: Option<(std::time::Instant, Option<String>)> = None;
    loop {
        if server.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(shared) = server.shared.as_ref() else {
            return;
        };
        if policy
            .as_ref()
            .is_none_or(|(at, missing)| missing.is_some() || at.elapsed() >= POLICY_CHECK)
        {
            policy = Some((std::time::Instant::now(), policy_missing(shared).await));
        }
        let unguarded = policy.as_ref().and_then(|(_, why)| why.clone());
        if let Err(error) = pass(&server, unguarded.as_deref()).await {
            tracing::warn!(%error, "cannot read the approvals in the cluster; trying again");
        }
        tokio::time::sleep(every).await;
    }
}

fn text<'a>(object: &'a Json, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

async fn pass(server: &Arc<Server>, unguarded: Option<&str>) -> Result<(), EffectError> {
    let Some(shared) = server.shared.as_ref() else {
        return Ok(());
    };
    if !shared.holds_lease() {
        return Ok(());
    }
    resolved_at_gates(server, shared).await?;
    // Without the policy, `spec.by` is whatever its creator typed: nothing is taken in.
    for approval in shared.objects.list_approvals().await? {
        if !text(&approval, "/status/result").is_empty() {
            // Decided: kept an hour for the record, then deleted (by whichever replica).
            let decided = humantime::parse_rfc3339_weak(text(&approval, "/status/decidedAt")).ok();
            if decided
                .and_then(|at| SystemTime::now().duration_since(at).ok())
                .is_some_and(|age| age > KEEP_DECIDED)
            {
                shared
                    .objects
                    .delete_approval(text(&approval, "/metadata/name"))
                    .await?;
            }
            continue;
        }
        let run = text(&approval, "/spec/run").to_owned();
        if let Some(why) = unguarded {
            if lock(&server.runs).contains_key(&run) {
                refuse(server, &approval, why).await?;
            }
            continue;
        }
        let waiting = lock(&server.runs).get(&run).and_then(|entry| {
            entry
                .gate
                .as_ref()
                .map(|gate| (gate.step.clone(), entry.runbook.clone()))
        });
        let Some((gate_step, runbook)) = waiting else {
            // Not waiting here: refused only when no replica can be waiting with it.
            let object = shared.objects.get(&run).await?;
            let state = object.as_ref().map(|o| text(o, "/status/phase").to_owned());
            let over = match state.as_deref() {
                None => Some(format!("there is no run `{run}`")),
                Some(phase::FINISHED | phase::CANCELLED | phase::JOINED) => Some(format!(
                    "run `{run}` is not waiting at a gate (it is {})",
                    state.as_deref().unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(why) = over {
                refuse(server, &approval, &why).await?;
            }
            continue;
        };
        let step = text(&approval, "/spec/step");
        if step.is_empty() {
            // Without its step an approval could answer whichever gate comes next.
            let why = format!(
                "an approval must name the gate's step (run `{run}` waits at `{gate_step}`): `runbook approve {run} --cluster --step {gate_step}`"
            );
            refuse(server, &approval, &why).await?;
            continue;
        }
        if step != gate_step {
            let why = format!("run `{run}` waits at the gate of step `{gate_step}`, not `{step}`");
            refuse(server, &approval, &why).await?;
            continue;
        }
        let user = runbook_kube::auth::User {
            username: text(&approval, "/spec/by").to_owned(),
            uid: String::new(),
            groups: approval["spec"]["groups"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .filter_map(Json::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            extra: Json::Null,
        };
        let decision = runbook_kube::auth::may(
            shared.objects.transport(),
            &user,
            &runbook_kube::auth::Attributes {
                verb: "approve",
                group: super::approvers::GROUP,
                resource: "runbooks",
                namespace: Some(shared.objects.namespace()),
                name: Some(&runbook),
            },
        )
        .await?;
        if !decision.allowed {
            let why = format!(
                "{} may not approve runbook `{runbook}`: RBAC allows no `approve` on runbooks.{} named `{runbook}` in namespace {} for them{}",
                user.username,
                super::approvers::GROUP,
                shared.objects.namespace(),
                if decision.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", decision.reason)
                }
            );
            refuse(server, &approval, &why).await?;
            continue;
        }
        accept(server, &approval, &run, &gate_step).await?;
    }
    Ok(())
}

/// The runs waiting at a gate here whose alert resolved at another replica (their object says
/// so) are cancelled at the gate, if they have changed nothing, as a resolve here would.
async fn resolved_at_gates(
    server: &Server,
    shared: &super::shared::Shared,
) -> Result<(), EffectError> {
    let waiting: Vec<String> = lock(&server.runs)
        .iter()
        .filter(|(_, entry)| entry.gate.is_some())
        .map(|(id, _)| id.clone())
        .collect();
    for run in waiting {
        let Some(object) = shared.objects.get(&run).await? else {
            continue;
        };
        if let Some(by) = object["status"]["resolvedBy"].as_str() {
            if let Some(step) = server.cancel_at_gate_for(&run, &format!("alert resolved ({by})")) {
                server
                    .metrics
                    .runs_cancelled
                    .get_or_create(&metrics::reason(text(&object, "/spec/runbook"), "resolved"))
                    .inc();
                tracing::info!(run_id = %run, step = %step, "run cancelled at its gate: its alert resolved at another replica before it changed anything");
            }
        }
    }
    Ok(())
}

/// Why approvals cannot be trusted, if they cannot: the admission policy (and its binding)
/// that holds an approval's `spec.by` to its creator is not installed, or cannot be read.
async fn policy_missing(shared: &super::shared::Shared) -> Option<String> {
    const NAME: &str = "runbook-approvals-name-their-approver";
    for (resource, kind) in [
        ("validatingadmissionpolicies", "ValidatingAdmissionPolicy"),
        (
            "validatingadmissionpolicybindings",
            "ValidatingAdmissionPolicyBinding",
        ),
    ] {
        let call = runbook_kube::transport::Call::new(
            http::Method::GET,
            format!("/apis/admissionregistration.k8s.io/v1/{resource}/{NAME}"),
            format!("get {kind} {NAME}"),
        );
        match shared.objects.transport().json(&call).await {
            Ok(_) => {}
            Err(EffectError::NotFound(_)) => {
                return Some(format!(
                    "the {kind} {NAME} is not installed (deploy/base/approval-policy.yaml), so the API server does not hold an approval's name to its creator; approvals through the cluster are refused until it is"
                ))
            }
            Err(error) => {
                return Some(format!(
                    "cannot check that the {kind} {NAME} is installed ({error}); approvals through the cluster are refused until it can be"
                ))
            }
        }
    }
    None
}

/// The gate answered as the approval says, and the approval marked accepted, exactly once.
async fn accept(
    server: &Server,
    approval: &Json,
    run: &str,
    gate_step: &str,
) -> Result<(), EffectError> {
    let Some(shared) = server.shared.as_ref() else {
        return Ok(());
    };
    let name = text(approval, "/metadata/name");
    let by = text(approval, "/spec/by");
    let yes = text(approval, "/spec/answer") != "deny";
    // Taken from the run first, so nothing else answers it meanwhile; put back if the
    // approval was decided elsewhere first.
    let Some(gate) = lock(&server.runs).get_mut(run).and_then(|e| e.gate.take()) else {
        return Ok(());
    };
    let status = json!({
        "result": "Accepted",
        "message": format!("the gate of step `{gate_step}` is answered {}", if yes { "yes" } else { "no" }),
        "decidedBy": shared.replica,
        "decidedAt": runbook_core::journal::timestamp(SystemTime::now()),
    });
    match shared.objects.decide_approval(approval, status).await {
        Ok(Ok(_)) => {}
        other => {
            if let Some(entry) = lock(&server.runs).get_mut(run) {
                entry.gate = Some(gate);
            }
            return other.map(|_| ());
        }
    }
    let answer = if yes { Answer::Yes } else { Answer::No };
    let by = format!("approve: {by} (kubernetes, RunbookApproval {name})");
    if gate.reply.send((answer, by.clone())).is_ok() {
        if let Some(entry) = lock(&server.runs).get_mut(run) {
            entry.state = RunState::Running;
        }
    }
    server
        .metrics
        .approvals
        .get_or_create(&metrics::ResultLabel {
            result: if yes { "approved" } else { "denied" }.to_owned(),
        })
        .inc();
    tracing::info!(run_id = %run, step = %gate_step, approved = yes, by = %by, "gate answered through the cluster");
    Ok(())
}

async fn refuse(server: &Server, approval: &Json, why: &str) -> Result<(), EffectError> {
    let Some(shared) = server.shared.as_ref() else {
        return Ok(());
    };
    let status = json!({
        "result": "Refused",
        "message": why,
        "decidedBy": shared.replica,
        "decidedAt": runbook_core::journal::timestamp(SystemTime::now()),
    });
    if let Ok(_decided) = shared.objects.decide_approval(approval, status).await? {
        server
            .metrics
            .approvals
            .get_or_create(&metrics::ResultLabel {
                result: "forbidden".to_owned(),
            })
            .inc();
        tracing::warn!(approval = %text(approval, "/metadata/name"), reason = %why, "approval through the cluster refused");
    }
    Ok(())
}
