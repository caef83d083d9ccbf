//! Who may answer a gate, verified by the server: the identity an approval is journaled with is
//! one the server checked, never one the caller wrote in the body.
//!
//! - `--approvers FILE`: each approver has a token of their own (`NAME:TOKEN` or
//!   `NAME:sha256:HEX` per line). The server's own token, which Alertmanager holds, admits
//!   alerts but approves nothing.
//! - `--kubernetes-approvers`: the approver presents their own Kubernetes token; the API server
//!   says whose it is (TokenReview) and whether they may `approve` the runbook
//!   (SubjectAccessReview on `runbooks.runbook.dev`, named by the runbook, in the server's
//!   namespace), so a RoleBinding decides who approves what.
//! - Neither: the server's token approves, and the journal says that is all that was checked.

use std::path::Path;

use anyhow::Context as _;
use subtle::ConstantTimeEq as _;

use super::digest;

/// The verb, API group and resource a SubjectAccessReview asks about: the Role to grant is
/// `{apiGroups: [runbook.dev], resources: [runbooks], verbs: [approve]}`, with `resourceNames`
/// to limit it to some runbooks.
pub(super) const VERB: &str = "approve";
pub(super) const GROUP: &str = "runbook.dev";
pub(super) const RESOURCE: &str = "runbooks";

pub(super) enum Approvers {
    /// No approvers configured: the holder of the server's token approves.
    ServerToken,
    Tokens(Vec<TokenApprover>),
    Kubernetes {
        transport: runbook_kube::transport::Transport,
        namespace: String,
    },
}

pub(super) struct TokenApprover {
    name: String,
    digest: [u8; 32],
}

/// Why an approval is refused, and the status it gets.
#[derive(Debug)]
pub(super) enum Refusal {
    /// 401: no token, or one nobody here knows.
    Unauthenticated(String),
    /// 403: a known identity that may not approve this run.
    Forbidden(String),
    /// 503: the API server could not be asked.
    Unavailable(String),
}

impl Refusal {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl Approvers {
    /// How approvals are checked, for the log at start.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::ServerToken => "the server's token (no --approvers: approvals are not tied to a person)".to_owned(),
            Self::Tokens(approvers) => format!("{} approvers, each with a token of their own", approvers.len()),
            Self::Kubernetes { namespace, .. } => format!(
                "Kubernetes: TokenReview, then SubjectAccessReview of `{VERB}` on {RESOURCE}.{GROUP} in namespace {namespace}"
            ),
        }
    }

    /// Reads `--approvers FILE`: one approver per line, `NAME:TOKEN` or `NAME:sha256:HEX` (the
    /// token's SHA-256, so the file need not hold the token itself); `#` starts a comment.
    pub(super) fn load_file(path: &Path) -> anyhow::Result<Self> {
        let text = crate::commands::read_named(path)
            .with_context(|| format!("cannot read the approvers file {}", path.display()))?;
        let approvers = parse(&text)
            .map_err(|(line, why)| anyhow::anyhow!("{}:{line}:1: {why}", path.display()))?;
        if approvers.is_empty() {
            anyhow::bail!(
                "{}: no approvers (each line is NAME:TOKEN or NAME:sha256:HEX)",
                path.display()
            );
        }
        #[cfg(unix)]
        if text
            .lines()
            .any(|line| !line.contains(":sha256:") && line.contains(':'))
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(file = %path.display(), "the approvers file holds tokens and others may read it: `chmod 600` it, or write NAME:sha256:HEX lines");
                }
            }
        }
        Ok(Self::Tokens(approvers))
    }

    /// Who presents `token`, and whether they may approve a run of `runbook`.
    pub(super) async fn verify(
        &self,
        server_token: &[u8; 32],
        token: Option<&str>,
        runbook: &str,
        claimed: &str,
    ) -> Result<String, Refusal> {
        let Some(token) = token.filter(|token| !token.is_empty()) else {
            return Err(Refusal::Unauthenticated(
                "missing `Authorization: Bearer TOKEN`".to_owned(),
            ));
        };
        let presented = digest(token.as_bytes());
        let is_server_token = bool::from(presented.ct_eq(server_token));
        match self {
            Self::ServerToken if is_server_token => Ok(if claimed.is_empty() {
                "the server's token".to_owned()
            } else {
                format!("the server's token (unverified name: {claimed})")
            }),
            Self::ServerToken => Err(Refusal::Unauthenticated(
                "the bearer token is not the server's".to_owned(),
            )),
            _ if is_server_token => Err(Refusal::Forbidden(
                "the server's token admits alerts but approves nothing: use an approver's own token".to_owned(),
            )),
            Self::Tokens(approvers) => {
                // Every entry is compared, so the time taken does not say which one matched.
                let mut found = None;
                for approver in approvers {
                    if bool::from(presented.ct_eq(&approver.digest)) {
                        found = Some(approver.name.as_str());
                    }
                }
                found
                    .map(|name| format!("{name} (approvers file)"))
                    .ok_or_else(|| {
                        Refusal::Unauthenticated("the token is no approver's".to_owned())
                    })
            }
            Self::Kubernetes {
                transport,
                namespace,
            } => {
                let unavailable = |error: runbook_core::effects::EffectError| {
                    Refusal::Unavailable(format!(
                        "cannot check the approver with the API server: {error}"
                    ))
                };
                let user = runbook_kube::auth::review_token(transport, token)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| {
                        Refusal::Unauthenticated(
                            "the API server does not authenticate this token".to_owned(),
                        )
                    })?;
                let decision = runbook_kube::auth::may(
                    transport,
                    &user,
                    &runbook_kube::auth::Attributes {
                        verb: VERB,
                        group: GROUP,
                        resource: RESOURCE,
                        namespace: Some(namespace),
                        name: Some(runbook),
                    },
                )
                .await
                .map_err(unavailable)?;
                if decision.allowed {
                    Ok(format!("{} (kubernetes)", user.username))
                } else {
                    Err(Refusal::Forbidden(format!(
                        "{} may not {VERB} {RESOURCE}.{GROUP} `{runbook}` in namespace {namespace}{}",
                        user.username,
                        if decision.reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", decision.reason)
                        }
                    )))
                }
            }
        }
    }
}

/// The approvers of a file's text, or the line and what is wrong with it.
fn parse(text: &str) -> Result<Vec<TokenApprover>, (usize, String)> {
    let mut approvers: Vec<TokenApprover> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, secret)) = line.split_once(':') else {
            return Err((line_no, "expected NAME:TOKEN or NAME:sha256:HEX".to_owned()));
        };
        let (name, secret) = (name.trim(), secret.trim());
        let valid_name = !name.is_empty()
            && name.len() <= 100
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
        if !valid_name {
            return Err((
                line_no,
                "the approver's name must be 1 to 100 of A-Z a-z 0-9 . _ @ -".to_owned(),
            ));
        }
        let digest = match secret.strip_prefix("sha256:") {
            Some(hex) => parse_hex(hex).ok_or_else(|| {
                (
                    line_no,
                    format!("`{name}`: sha256: must be followed by 64 hex digits (`printf %s TOKEN | sha256sum`)"),
                )
            })?,
            None if secret.len() < 16 => {
                return Err((
                    line_no,
                    format!("`{name}`: the token is shorter than 16 characters; make one with `openssl rand -hex 32`"),
                ))
            }
            None => digest(secret.as_bytes()),
        };
        if approvers.iter().any(|other| other.name == name) {
            return Err((line_no, format!("`{name}` is listed twice")));
        }
        if approvers.iter().any(|other| other.digest == digest) {
            return Err((
                line_no,
                format!("`{name}` has the same token as another approver; each needs their own"),
            ));
        }
        approvers.push(TokenApprover {
            name: name.to_owned(),
            digest,
        });
    }
    Ok(approvers)
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0_u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
