//! A fake Kubernetes API server that speaks real HTTP on a local port, so the live cluster
//! code is exercised through `kube`'s client exactly as against a real one.
//!
//! It serves discovery documents, keeps an in-memory object store with the API server's
//! semantics (resourceVersion on every write, optimistic concurrency, `dryRun=All`, the four
//! patch content types, label and field selectors, watches, the status subresource and what
//! each kind's strategy resets on create and update, `metadata.generation`, the scale
//! subresource, evictions,
//! logs, pod exec over WebSocket, and TokenReview and SubjectAccessReview against the users and
//! grants a test gives), answers errors with real `metav1.Status` bodies, and
//! records every request. A test seeds objects and scripts faults ("the next N requests to
//! this path answer 503", "never answer"); nothing else about the tests is built in, so a
//! benchmark can drive it too.
//!
//! Simplifications, each one that no caller here depends on: strategic merge patch is a JSON
//! merge patch (RFC 7386); server-side apply merges the body into the object and keeps no
//! managed fields; an apply body must be JSON (which is YAML); deletion is immediate
//! (no finalizers, no grace period); evictions succeed unless a fault says otherwise; a
//! built-in kind's `/status` write keeps the stored spec but not the per-kind metadata some
//! strategies also keep (a Deployment's labels, a Pod's ownerReferences); pods get no
//! `metadata.generation`; a PUT of an absent Lease is 404 (a real server creates it).
//!
//! A request flows `server` (HTTP, TLS, WebSocket) → `store` (the state behind one lock,
//! answering through `routes`, `selectors`, `objects` and `strategy`, what each kind's
//! registry strategy does to a write) → a `reply` back out; `resources` is the table of kinds
//! every part reads, and `requests` what a test records and scripts.
//! It is a crate of its own (test support, never published) so that runbook-kube's contract
//! tests, runbook-cli's live tests and the live-patch benchmark share one fake.

mod objects;
mod reply;
mod requests;
mod resources;
mod reviews;
mod routes;
mod selectors;
mod server;
mod store;
mod strategy;
mod validation;

/// What `/version` reports.
pub const VERSION: &str = "v1.33.1";

pub const MERGE: &str = "application/merge-patch+json";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";
pub const APPLY: &str = "application/apply-patch+yaml";

pub use reply::status;
pub use requests::{ExecReply, Fault, Recorded};
pub use resources::{by_kind, ResourceType, RESOURCES};
pub use reviews::Grant;
pub use server::FakeApi;
