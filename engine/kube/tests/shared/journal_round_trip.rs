//! A journal appended, rolled over into new chunks, read back, continued by a second store
//! and taken over by a third, checked the same way against the fake API server
//! (`journal_store.rs`) and a real one (`cluster.rs`).

use http::Method;
use runbook_kube::journal_store::{
    JournalSpec, JournalStore, JournalStoreError, CHUNK_LABEL, RECORDS_KEY, RUN_LABEL,
};
use runbook_kube::transport::{Call, Transport};
use serde_json::Value as Json;

/// One JSON line of about 60 bytes.
pub fn record(index: usize) -> Vec<u8> {
    format!("{{\"time\":\"2026-12-04T03:49:22.000Z\",\"run\":\"r\",\"seq\":{index:04}}}\n")
        .into_bytes()
}

/// The run's chunks as stored: (number, records), in the order the server listed them.
pub async fn chunks(transport: &Transport, namespace: &str, label: &str) -> Vec<(u32, String)> {
    let uri =
        format!("/api/v1/namespaces/{namespace}/configmaps?labelSelector={RUN_LABEL}%3D{label}");
    let list = transport
        .json(&Call::new(Method::GET, uri, "list the chunks"))
        .await
        .unwrap_or_else(|error| panic!("list the chunks: {error}"));
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item: &Json| {
            let number = item["metadata"]["labels"][CHUNK_LABEL]
                .as_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(u32::MAX);
            let records = item["data"][RECORDS_KEY]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (number, records)
        })
        .collect()
}

/// Appends 20 records (one by one, then 8 at once) with chunks of 200 bytes, and checks the
/// journal and its chunks; then a second store continues it, and a third takes it over.
pub async fn check_journal_round_trip(transport: &Transport, namespace: &str, run: &str) {
    let mut spec = JournalSpec::new(namespace, run);
    spec.chunk_bytes = 200;
    let (store, journal) = JournalStore::open(transport.clone(), spec.clone())
        .await
        .unwrap_or_else(|error| panic!("open: {error}"));
    assert!(journal.is_empty(), "a new run has an empty journal");
    let mut expected = Vec::new();
    for index in 0..12 {
        store
            .append(&record(index))
            .await
            .unwrap_or_else(|error| panic!("append {index}: {error}"));
        expected.extend(record(index));
    }
    let batch: Vec<u8> = (12..20).flat_map(record).collect();
    store
        .append(&batch)
        .await
        .unwrap_or_else(|error| panic!("append a batch: {error}"));
    expected.extend(&batch);

    let read = JournalStore::read(transport, namespace, run)
        .await
        .unwrap_or_else(|error| panic!("read: {error}"));
    assert_eq!(
        String::from_utf8_lossy(&read),
        String::from_utf8_lossy(&expected)
    );
    let mut stored = chunks(transport, namespace, run).await;
    stored.sort();
    let numbers: Vec<u32> = stored.iter().map(|(n, _)| *n).collect();
    // 20 records of 57 bytes, 3 to a chunk of 200 bytes.
    assert_eq!(numbers, (0..7).collect::<Vec<u32>>(), "{stored:#?}");
    for (number, records) in &stored {
        assert!(
            records.len() <= 200,
            "chunk {number} holds {} bytes",
            records.len()
        );
        assert!(records.ends_with('\n'), "chunk {number} holds whole lines");
    }
    drop(store);

    // A second store (a replica that took the run over) goes on in the last chunk.
    let (second, journal) = JournalStore::open(transport.clone(), spec.clone())
        .await
        .unwrap_or_else(|error| panic!("open again: {error}"));
    assert_eq!(journal, expected, "open returns the journal so far");
    second
        .append(&record(20))
        .await
        .unwrap_or_else(|error| panic!("append after open: {error}"));
    expected.extend(record(20));
    let mut after = chunks(transport, namespace, run).await;
    after.sort();
    assert_eq!(after.len(), 7, "the last chunk had room: {after:#?}");
    assert_eq!(after[6].1.len(), 3 * record(0).len());

    // A third store opens it too and writes: the second's next append finds it taken.
    let (third, _) = JournalStore::open(transport.clone(), spec.clone())
        .await
        .unwrap_or_else(|error| panic!("open a third time: {error}"));
    third
        .append(&record(21))
        .await
        .unwrap_or_else(|error| panic!("the third appends: {error}"));
    expected.extend(record(21));
    let taken = second.append(&record(99)).await;
    assert!(
        matches!(taken, Err(JournalStoreError::Taken { .. })),
        "{taken:?}"
    );
    let again = second.append(&record(99)).await;
    assert!(
        matches!(again, Err(JournalStoreError::Taken { .. })),
        "stays taken: {again:?}"
    );
    let read = JournalStore::read(transport, namespace, run)
        .await
        .unwrap_or_else(|error| panic!("read at the end: {error}"));
    assert_eq!(
        read, expected,
        "nothing of the taken store's appends was written"
    );
}
