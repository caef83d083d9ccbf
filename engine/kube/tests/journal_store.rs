//! The journal kept through the API (`runbook_kube::journal_store`), against the fake API
//! server: what is stored where, rollover, continuing and taking over a journal, retries,
//! lost answers, gaps, long run names, and the blocking bridge from synchronous code.

use runbook_fake_apiserver as support;

use std::time::Duration;

use runbook_kube::journal_store::{
    chunk_name, run_label, BlockingJournalStore, JournalSpec, JournalStore, JournalStoreError,
    CHUNK_LABEL, RECORDS_KEY, RUN_LABEL,
};
use runbook_kube::transport::Transport;
use runbook_kube::{connect, ConnectOptions, Policy};
use serde_json::{json, Value as Json};
use support::{FakeApi, Fault, Recorded};

#[path = "shared/journal_round_trip.rs"]
mod journal_round_trip;
use journal_round_trip::{check_journal_round_trip, record};

const CONFIG_MAPS: &str = "/api/v1/namespaces/shop/configmaps";

fn policy() -> Policy {
    Policy {
        call_timeout: Duration::from_millis(300),
        attempts: 3,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

/// The transport as the CLI builds it: a client from `connect` (kube's own retries off), our
/// retry policy on top. The requests of connecting are forgotten.
async fn connected(api: &FakeApi) -> Transport {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let connection = connect(&ConnectOptions {
        kubeconfig: Some(api.write_kubeconfig(dir.path(), "shop")),
        context: None,
        namespace: None,
        policy: policy(),
    })
    .await
    .expect("connect to the fake API server");
    api.clear_requests();
    Transport::new(connection.client, policy())
}

fn spec(run: &str, chunk_bytes: usize) -> JournalSpec {
    let mut spec = JournalSpec::new("shop", run);
    spec.chunk_bytes = chunk_bytes;
    spec
}

async fn open(api: &FakeApi, spec: JournalSpec) -> JournalStore {
    let (store, _) = JournalStore::open(connected(api).await, spec)
        .await
        .expect("open the journal");
    store
}

fn chunk(api: &FakeApi, name: &str) -> Json {
    api.object("v1", "ConfigMap", Some("shop"), name)
        .unwrap_or_else(|| panic!("chunk {name} is stored"))
}

fn lines(api: &FakeApi) -> Vec<String> {
    api.requests().iter().map(Recorded::line).collect()
}

fn records(lines: std::ops::Range<usize>) -> Vec<u8> {
    lines.flat_map(record).collect()
}

#[tokio::test]
async fn appended_lines_are_read_back_from_a_labelled_chunk() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 1024)).await;
    api.clear_requests();
    store.append(&record(0)).await.expect("append one line");
    let created = chunk(&api, "run-1-journal-0000");
    store
        .append(&records(1..3))
        .await
        .expect("append two lines");
    let path = format!("{CONFIG_MAPS}/run-1-journal-0000");
    assert_eq!(
        lines(&api),
        [format!("POST {CONFIG_MAPS}"), format!("PUT {path}")],
        "the chunk is created by the first append and updated by the next"
    );
    let update = api.requests()[1].body.clone().expect("a body");
    assert_eq!(
        update["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"],
        "an update carries the version the create answered"
    );
    assert_eq!(
        created["metadata"]["labels"],
        json!({RUN_LABEL: "run-1", CHUNK_LABEL: "0"})
    );
    assert_eq!(
        created["metadata"]["annotations"],
        json!({RUN_LABEL: "run-1"})
    );
    assert!(created["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        chunk(&api, "run-1-journal-0000")["data"][RECORDS_KEY]
            .as_str()
            .map(str::as_bytes),
        Some(records(0..3).as_slice())
    );
    let read = JournalStore::read(&connected(&api).await, "shop", "run-1")
        .await
        .expect("read");
    assert_eq!(read, records(0..3));
}

#[tokio::test]
async fn a_journal_rolls_over_into_numbered_chunks_none_over_the_bound() {
    let api = FakeApi::start().await;
    check_journal_round_trip(&connected(&api).await, "shop", "run-rollover").await;
}

/// Before the first update of a chunk, someone else updated it: a 409, which is a takeover.
#[tokio::test]
async fn a_second_store_writing_the_journal_makes_the_first_one_stop() {
    let api = FakeApi::start().await;
    let first = open(&api, spec("run-1", 4096)).await;
    first.append(&record(0)).await.expect("the first appends");
    let second = open(&api, spec("run-1", 4096)).await;
    second.append(&record(1)).await.expect("the second appends");
    api.clear_requests();
    let error = first.append(&record(2)).await.expect_err("taken");
    match &error {
        JournalStoreError::Taken { namespace, run, .. } => {
            assert_eq!((namespace.as_str(), run.as_str()), ("shop", "run-1"));
        }
        other => panic!("not Taken: {other:?}"),
    }
    assert!(error.to_string().contains("shop/run-1"), "{error}");
    let path = format!("{CONFIG_MAPS}/run-1-journal-0000");
    assert_eq!(
        lines(&api),
        [format!("PUT {path}"), format!("GET {path}")],
        "sent once, then read back to see whose write it was"
    );
    api.clear_requests();
    let again = first.append(&record(2)).await;
    assert!(
        matches!(again, Err(JournalStoreError::Taken { .. })),
        "{again:?}"
    );
    assert!(lines(&api).is_empty(), "a taken store sends nothing");
    let read = JournalStore::read(&connected(&api).await, "shop", "run-1")
        .await
        .expect("read");
    assert_eq!(read, records(0..2));
}

#[tokio::test]
async fn two_stores_creating_the_first_chunk_leave_one_journal() {
    let api = FakeApi::start().await;
    let first = open(&api, spec("run-1", 4096)).await;
    let second = open(&api, spec("run-1", 4096)).await;
    second
        .append(&record(1))
        .await
        .expect("the second creates chunk 0");
    let error = first
        .append(&record(0))
        .await
        .expect_err("AlreadyExists is a takeover");
    assert!(
        matches!(error, JournalStoreError::Taken { .. }),
        "{error:?}"
    );
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        record(1)
    );
}

#[tokio::test]
async fn a_server_error_on_the_chunk_is_retried_until_the_append_succeeds() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 4096)).await;
    store.append(&record(0)).await.expect("append");
    let path = format!("{CONFIG_MAPS}/run-1-journal-0000");
    api.fault(Fault::status("PUT", &path, 503, "ServiceUnavailable", "etcd is slow").times(2));
    api.clear_requests();
    store
        .append(&record(1))
        .await
        .expect("retried until it succeeds");
    assert_eq!(lines(&api), vec![format!("PUT {path}"); 3]);
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..2)
    );
}

/// The update was made but its answer lost: the retry gets 409 (the version moved, by our own
/// write), which reading the chunk back shows to be ours, not a takeover.
#[tokio::test]
async fn an_update_whose_answer_was_lost_is_not_a_takeover_nor_written_twice() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 4096)).await;
    store.append(&record(0)).await.expect("append");
    let path = format!("{CONFIG_MAPS}/run-1-journal-0000");
    api.fault(Fault::lose_answer("PUT", &path).times(1));
    store
        .append(&record(1))
        .await
        .expect("the lost answer is found out");
    store
        .append(&record(2))
        .await
        .expect("and the store goes on");
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..3)
    );
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_not_a_takeover() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 4096)).await;
    api.fault(Fault::lose_answer("POST", CONFIG_MAPS).times(1));
    store
        .append(&record(0))
        .await
        .expect("the lost answer is found out");
    store
        .append(&record(1))
        .await
        .expect("and the store goes on");
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..2)
    );
}

/// Every attempt failed, the first after it was made: the append is an error; given again,
/// its lines are found stored and not written twice.
#[tokio::test]
async fn lines_given_again_after_a_failed_append_are_stored_once() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 4096)).await;
    store.append(&record(0)).await.expect("append");
    let path = format!("{CONFIG_MAPS}/run-1-journal-0000");
    api.fault(Fault::lose_answer("PUT", &path).times(1));
    api.fault(Fault::status("*", &path, 503, "ServiceUnavailable", "down").times(2));
    let error = store.append(&record(1)).await.expect_err("no answer");
    assert!(
        matches!(
            error,
            JournalStoreError::Api(runbook_core::effects::EffectError::Unavailable(_))
        ),
        "{error:?}"
    );
    api.clear_faults();
    store.append(&record(1)).await.expect("given again");
    store.append(&record(2)).await.expect("then the next");
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..3)
    );
    // And lines whose write never happened are written when given again.
    api.fault(Fault::status("PUT", &path, 503, "ServiceUnavailable", "down").times(3));
    store.append(&record(3)).await.expect_err("no answer");
    store.append(&record(3)).await.expect("given again");
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..4)
    );
}

fn seeded_chunk(run: &str, number: u32, records: &[u8]) -> Json {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": chunk_name(run, number).expect("a chunk name"),
            "namespace": "shop",
            "labels": {RUN_LABEL: run_label(run).expect("a label"), CHUNK_LABEL: number.to_string()},
            "annotations": {RUN_LABEL: run},
        },
        "data": {RECORDS_KEY: String::from_utf8_lossy(records)},
    })
}

#[tokio::test]
async fn a_missing_chunk_is_an_error_naming_it() {
    let api = FakeApi::start().await;
    api.insert(seeded_chunk("run-1", 0, &record(0)));
    api.insert(seeded_chunk("run-1", 2, &record(2)));
    api.insert(seeded_chunk("run-1", 3, &record(3)));
    let error = JournalStore::read(&connected(&api).await, "shop", "run-1")
        .await
        .expect_err("a gap");
    assert!(
        matches!(&error, JournalStoreError::Gap { missing: 1, found, .. } if found == &[0, 2, 3]),
        "{error:?}"
    );
    assert!(error.to_string().contains("no chunk 1"), "{error}");
    let opened = JournalStore::open(connected(&api).await, spec("run-1", 4096)).await;
    assert!(matches!(
        opened,
        Err(JournalStoreError::Gap { missing: 1, .. })
    ));
}

#[tokio::test]
async fn an_opened_journal_goes_on_in_its_last_chunk_leaving_other_runs_chunks_out() {
    let api = FakeApi::start().await;
    for number in [2, 0, 1] {
        api.insert(seeded_chunk(
            "run-1",
            number,
            &records(number as usize * 2..number as usize * 2 + 2),
        ));
    }
    api.insert(seeded_chunk("run-10", 0, &record(99)));
    let (store, journal) = JournalStore::open(connected(&api).await, spec("run-1", 4096))
        .await
        .expect("open");
    assert_eq!(journal, records(0..6));
    api.clear_requests();
    store.append(&record(6)).await.expect("append");
    assert_eq!(
        lines(&api),
        [format!("PUT {CONFIG_MAPS}/run-1-journal-0002")],
        "the store goes on in the last chunk"
    );
}

#[tokio::test]
async fn a_long_run_name_is_hashed_in_the_label_and_kept_whole_in_the_annotation() {
    let api = FakeApi::start().await;
    let run = format!("nightly-{}", "maintenance-".repeat(8))
        .trim_end_matches('-')
        .to_owned();
    assert!(run.len() > 63);
    // Another run whose label would be the same: its annotation tells them apart.
    let mut stranger = seeded_chunk("other", 0, &record(99));
    stranger["metadata"]["labels"][RUN_LABEL] = json!(run_label(&run).expect("a label"));
    api.insert(stranger);
    let store = open(&api, spec(&run, 4096)).await;
    store.append(&record(0)).await.expect("append");
    let stored = chunk(&api, &format!("{run}-journal-0000"));
    let label = stored["metadata"]["labels"][RUN_LABEL]
        .as_str()
        .expect("a label");
    assert_eq!(label.len(), 63, "{label}");
    assert!(label.starts_with("nightly-maintenance-"), "{label}");
    assert_eq!(stored["metadata"]["annotations"][RUN_LABEL], run.as_str());
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", &run)
            .await
            .expect("read"),
        record(0)
    );

    let too_long = "r".repeat(241);
    let error = JournalStore::open(connected(&api).await, spec(&too_long, 4096))
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, JournalStoreError::Name { .. }), "{error:?}");
    assert!(error.to_string().contains("too long"), "{error}");
}

#[tokio::test]
async fn a_line_larger_than_a_chunk_is_refused_before_anything_is_sent() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 100)).await;
    api.clear_requests();
    let line = format!("{{\"note\":\"{}\"}}\n", "x".repeat(120));
    let error = store.append(line.as_bytes()).await.expect_err("too long");
    assert!(
        matches!(
            error,
            JournalStoreError::LineTooLong {
                chunk_bytes: 100,
                ..
            }
        ),
        "{error:?}"
    );
    let error = store.append(b"{}").await.expect_err("not a whole line");
    assert!(matches!(error, JournalStoreError::NotLines(_)), "{error:?}");
    assert!(lines(&api).is_empty(), "{:?}", lines(&api));
    let bound = JournalStore::open(connected(&api).await, spec("run-1", 2 << 20)).await;
    assert!(matches!(bound, Err(JournalStoreError::Spec(_))));
}

#[tokio::test]
async fn chunks_are_owned_by_the_run_when_its_uid_is_given() {
    let api = FakeApi::start().await;
    let mut spec = spec("run-1", 100);
    spec.run_uid = Some("0b9d6c1e-6c1e-4c1e-8c1e-0b9d6c1e6c1e".to_owned());
    let store = open(&api, spec).await;
    store.append(&records(0..3)).await.expect("append");
    for number in 0..2 {
        let stored = chunk(&api, &format!("run-1-journal-000{number}"));
        assert_eq!(
            stored["metadata"]["ownerReferences"],
            json!([{"apiVersion": "runbook.dev/v1alpha1", "kind": "RunbookRun", "name": "run-1", "uid": "0b9d6c1e-6c1e-4c1e-8c1e-0b9d6c1e6c1e"}])
        );
    }
}

/// A synchronous caller on a worker thread of a multi-thread runtime blocks on the bridge;
/// the other worker runs the client's I/O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_store_serves_a_caller_on_a_runtime_worker() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 100)).await;
    let blocking = BlockingJournalStore::new(store).expect("start the bridge");
    for index in 0..4 {
        blocking
            .append(&record(index))
            .expect("append from synchronous code");
    }
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..4)
    );
}

/// On a current-thread runtime, a synchronous caller in `spawn_blocking`.
#[tokio::test]
async fn the_blocking_store_serves_a_caller_in_spawn_blocking() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 100)).await;
    let blocking = BlockingJournalStore::new(store).expect("start the bridge");
    let appended = tokio::task::spawn_blocking(move || {
        (0..4)
            .map(|index| blocking.append(&record(index)))
            .collect::<Result<Vec<()>, JournalStoreError>>()
    })
    .await
    .expect("the blocking task");
    appended.expect("append from synchronous code");
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..4)
    );
}

/// A batch that fills the last chunk and starts the next: the update is made, the create is
/// not; given again, only the lines the create carried are written.
#[tokio::test]
async fn a_batch_given_again_after_failing_halfway_is_written_from_where_it_stopped() {
    let api = FakeApi::start().await;
    let store = open(&api, spec("run-1", 200)).await;
    store
        .append(&records(0..2))
        .await
        .expect("two lines in chunk 0");
    api.fault(Fault::status("POST", CONFIG_MAPS, 503, "ServiceUnavailable", "down").times(3));
    let batch = records(2..6);
    store
        .append(&batch)
        .await
        .expect_err("chunk 1 cannot be created");
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..3),
        "chunk 0 was filled"
    );
    store.append(&batch).await.expect("given again");
    assert_eq!(
        JournalStore::read(&connected(&api).await, "shop", "run-1")
            .await
            .expect("read"),
        records(0..6)
    );
    assert!(api
        .object("v1", "ConfigMap", Some("shop"), "run-1-journal-0001")
        .is_some());
}
