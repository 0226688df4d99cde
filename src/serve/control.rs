//! Stopping a statement: cancel requests (psql's Ctrl-C) and `statement_timeout`, for the
//! whole of a statement, including the rows it computes while the client reads them.
//!
//! pgwire cancels only the handler's future (planning, a `FETCH` that waits); the rows of a
//! query are computed later, as pgwire sends them. So each connection also has a
//! [`StatementControl`], found by its cancel key, and a query's rows are computed on a task of
//! their own ([`controlled`]) that a cancel or the deadline aborts, answering `57014`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::error::{Error, sqlstate};

/// A connection's cancel signal: a counter of cancel requests, and a wake-up for whoever
/// waits on it.
#[derive(Debug, Default)]
pub struct StatementControl {
    cancels: AtomicU64,
    notify: Notify,
}

impl StatementControl {
    /// A cancel request arrived for this connection.
    pub fn cancel(&self) {
        self.cancels.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Cancel requests so far: a statement notes it when it starts.
    pub fn cancels(&self) -> u64 {
        self.cancels.load(Ordering::SeqCst)
    }

    /// Resolves once a cancel request arrives after `seen` of them.
    async fn cancelled_after(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            futures::pin_mut!(notified);
            notified.as_mut().enable();
            if self.cancels() != seen {
                return;
            }
            notified.await;
        }
    }
}

/// Every connection's [`StatementControl`], by its cancel key.
#[derive(Debug, Default)]
pub struct CancelRegistry(Mutex<HashMap<CancelKey, Weak<StatementControl>>>);

/// A connection's process id and secret key, as bytes.
type CancelKey = (i32, Vec<u8>);

/// A secret key as bytes: a cancel request may carry as bytes the key a connection was given
/// as an `i32`.
fn key_bytes(key: &SecretKey) -> Vec<u8> {
    match key {
        SecretKey::I32(v) => v.to_be_bytes().to_vec(),
        SecretKey::Bytes(b) => b.to_vec(),
    }
}

impl CancelRegistry {
    /// Registers a connection's control under its key (and forgets closed connections).
    pub fn register(&self, pid: i32, key: SecretKey, control: &Arc<StatementControl>) {
        let mut map = crate::sync::lock(&self.0, "the cancel keys");
        map.retain(|_, c| c.strong_count() > 0);
        map.insert((pid, key_bytes(&key)), Arc::downgrade(control));
    }

    fn find(&self, pid: i32, key: &SecretKey) -> Option<Arc<StatementControl>> {
        crate::sync::lock(&self.0, "the cancel keys")
            .get(&(pid, key_bytes(key)))
            .and_then(Weak::upgrade)
    }
}

/// Routes a cancel request to pgwire (which stops the handler's future) and to the
/// connection's [`StatementControl`] (which stops its rows).
#[derive(Debug)]
pub struct SluiceCancelHandler {
    inner: DefaultCancelHandler,
    registry: Arc<CancelRegistry>,
}

impl SluiceCancelHandler {
    /// A handler over pgwire's and our registry.
    pub fn new(inner: DefaultCancelHandler, registry: Arc<CancelRegistry>) -> Self {
        Self { inner, registry }
    }
}

#[async_trait]
impl CancelHandler for SluiceCancelHandler {
    async fn on_cancel_request(&self, request: CancelRequest) {
        match self.registry.find(request.pid, &request.secret_key) {
            Some(control) => control.cancel(),
            None => tracing::debug!(pid = request.pid, "a cancel request for no connection"),
        }
        self.inner.on_cancel_request(request).await;
    }
}

/// The error of a statement stopped by a cancel request.
pub fn cancelled() -> Error {
    Error::user(
        sqlstate::QUERY_CANCELED,
        "canceling statement due to user request",
    )
}

/// The error of a statement stopped by `statement_timeout`.
pub fn timed_out() -> Error {
    Error::user(
        sqlstate::QUERY_CANCELED,
        "canceling statement due to statement timeout",
    )
}

/// The error of a statement that panicked (a bug of ours): `XX000` with the panic's message,
/// logged.
pub fn panicked(panic: &(dyn std::any::Any + Send)) -> Error {
    let message = crate::sync::panic_message(panic);
    tracing::error!(%message, "a statement panicked");
    Error::internal(format!("internal error: the statement panicked: {message}"))
}

/// Rows computed at most a batch ahead of the client.
const AHEAD: usize = 1;

/// Computes `rows` on a task of its own once the client first asks for them, handing them on
/// a batch at a time; a cancel request after `seen` ones, or `timeout` after that first ask,
/// aborts the task and ends the rows with `57014`. A panic while computing them ends them with
/// `XX000`.
pub fn controlled(
    rows: SendableRecordBatchStream,
    control: Arc<StatementControl>,
    seen: u64,
    timeout: Option<std::time::Duration>,
) -> SendableRecordBatchStream {
    let schema = rows.schema();
    enum State {
        NotStarted(SendableRecordBatchStream),
        Running {
            receiver: mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
            task: AbortOnDrop,
            deadline: Option<Instant>,
        },
        Done,
    }
    let state = State::NotStarted(rows);
    let out = futures::stream::unfold(state, move |state| {
        let control = Arc::clone(&control);
        async move {
            let (mut receiver, mut task, deadline) = match state {
                State::Done => return None,
                State::NotStarted(mut rows) => {
                    let deadline = timeout.map(|t| Instant::now() + t);
                    let (sender, receiver) = mpsc::channel(AHEAD);
                    let task = tokio::spawn(async move {
                        while let Some(batch) = rows.next().await {
                            let failed = batch.is_err();
                            if sender.send(batch).await.is_err() || failed {
                                return;
                            }
                        }
                    });
                    (receiver, AbortOnDrop(Some(task)), deadline)
                }
                State::Running {
                    receiver,
                    task,
                    deadline,
                } => (receiver, task, deadline),
            };
            let deadline_passed = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = control.cancelled_after(seen) => {
                    Some((Err(cancelled().into()), State::Done))
                }
                () = deadline_passed => Some((Err(timed_out().into()), State::Done)),
                batch = receiver.recv() => match batch {
                    Some(batch) => Some((batch, State::Running { receiver, task, deadline })),
                    // The task ended: all rows sent, or it panicked.
                    None => task
                        .finish()
                        .await
                        .map(|panicked| (Err(panicked.into()), State::Done)),
                },
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, out))
}

/// A task aborted when its handle is dropped (the client went away, or stopped the rows).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Waits for the task's end: the error of its panic, if it panicked.
    async fn finish(&mut self) -> Option<Error> {
        let task = self.0.take()?;
        match task.await {
            Ok(()) => None,
            Err(e) if e.is_panic() => Some(panicked(e.into_panic().as_ref())),
            Err(e) => Some(Error::internal(format!("the query's task ended: {e}"))),
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}
