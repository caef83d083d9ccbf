//! `--cluster-state`: the runs' journals through the API, written from a thread of their own.
//!
//! A run's journal is written synchronously by the executor, on the runs' runtime, and a
//! record that must be durable may not return before the API server has it. If that write
//! went through the server's shared client, it could wait on a connection that the runs'
//! runtime itself drives, with that runtime's threads all waiting on the journal: a deadlock
//! (seen once as a stall until the request timed out, and possible with parallel steps even
//! with `block_in_place`). So the journals have a client of their own, built on a thread and
//! runtime of their own that never wait on anything else: a write is a message to that
//! thread and an answer back.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;

use runbook_kube::journal_store::{JournalSpec, JournalStore};
use tokio::sync::{mpsc, oneshot};

enum Request {
    /// Open a run's journal (owned by its object's uid, if given): what it holds.
    Open {
        run: String,
        uid: Option<String>,
        answer: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    Append {
        run: String,
        lines: Vec<u8>,
        answer: std_mpsc::SyncSender<Result<(), String>>,
    },
    Close {
        run: String,
    },
}

/// The journals' thread; cheap to clone.
#[derive(Clone)]
pub(super) struct Journals {
    requests: mpsc::UnboundedSender<Request>,
}

impl Journals {
    /// Starts the thread, with a client connected as `connect` says, for `namespace`.
    pub(super) fn start(
        connect: runbook_kube::ConnectOptions,
        namespace: String,
    ) -> Result<Self, String> {
        let (requests, mut received) = mpsc::unbounded_channel::<Request>();
        let (ready, started) = std_mpsc::sync_channel::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("runbook-journals".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(error.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let policy = connect.policy.clone();
                    let transport = match runbook_kube::connect(&connect).await {
                        Ok(connection) => {
                            runbook_kube::transport::Transport::new(connection.client, policy)
                        }
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let mut stores: HashMap<String, JournalStore> = HashMap::new();
                    while let Some(request) = received.recv().await {
                        match request {
                            Request::Open { run, uid, answer } => {
                                let mut spec = JournalSpec::new(namespace.clone(), run.clone());
                                spec.run_uid = uid.filter(|uid| !uid.is_empty());
                                let opened = JournalStore::open(transport.clone(), spec).await;
                                let _ = answer.send(match opened {
                                    Ok((store, existing)) => {
                                        stores.insert(run, store);
                                        Ok(existing)
                                    }
                                    Err(error) => Err(error.to_string()),
                                });
                            }
                            Request::Append { run, lines, answer } => {
                                let result = match stores.get(&run) {
                                    Some(store) => {
                                        store.append(&lines).await.map_err(|e| e.to_string())
                                    }
                                    None => Err(format!("the journal of run {run} is not open")),
                                };
                                let _ = answer.send(result);
                            }
                            Request::Close { run } => {
                                stores.remove(&run);
                            }
                        }
                    }
                });
            })
            .map_err(|e| format!("cannot start the journals' thread: {e}"))?;
        match started.recv() {
            Ok(result) => result.map(|()| Self { requests }),
            Err(_) => Err("the journals' thread stopped before it started".to_owned()),
        }
    }

    /// Opens `run`'s journal for appending (owned by its object `uid`, if given): what it
    /// holds so far.
    pub(super) async fn open(&self, run: &str, uid: Option<String>) -> Result<Vec<u8>, String> {
        let (answer, answered) = oneshot::channel();
        self.requests
            .send(Request::Open {
                run: run.to_owned(),
                uid,
                answer,
            })
            .map_err(|_| "the journals' thread has stopped".to_owned())?;
        answered
            .await
            .map_err(|_| "the journals' thread has stopped".to_owned())?
    }

    /// The mirror a run's journal writes to (after [`Journals::open`]).
    pub(super) fn mirror(&self, run: &str) -> Mirror {
        Mirror {
            journals: self.clone(),
            run: run.to_owned(),
        }
    }
}

/// One run's journal in the cluster, as the executor's journal writes to it.
pub(super) struct Mirror {
    journals: Journals,
    run: String,
}

impl runbook_core::journal::Mirror for Mirror {
    fn append(&self, lines: &[u8]) -> Result<(), String> {
        let (answer, answered) = std_mpsc::sync_channel(1);
        self.journals
            .requests
            .send(Request::Append {
                run: self.run.clone(),
                lines: lines.to_vec(),
                answer,
            })
            .map_err(|_| "the journals' thread has stopped".to_owned())?;
        // Blocks this thread only: the write is carried by the journals' own thread.
        answered
            .recv()
            .map_err(|_| "the journals' thread has stopped".to_owned())?
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.journals.requests.send(Request::Close {
            run: self.run.clone(),
        });
    }
}
