//! Deferred request writes: one "flusher" task per runtime thread writes the request heads that
//! the thread's requests prepared during one scheduler pass, together, after the pass.
//!
//! Why: an upstream on the same CPU as the gateway is woken by each request written to it.
//! Written one by one, each write wakes it (and it preempts the gateway) once per request;
//! written after the pass, one wake-up serves the whole batch (docs/performance.md). The
//! request's own task used to get this by yielding before its write, but a yield makes hyper
//! poll the whole client connection again from the top (~1.2k instructions per request). Here
//! the request's task hands its connection over and sleeps until the response arrives; the
//! small flusher task does the write and registers the request task for the socket's
//! readiness, so the request task is polled once less.
//!
//! Only plain TCP connections opened on a current-thread runtime, and requests without a body,
//! take this path (see [`hand_over`]); the rest write from their own task. On the
//! multi-thread runtime the flusher and the request tasks are spread over the workers by work
//! stealing, so a batch is no longer one thread's scheduler pass, and the measured CPU per
//! request was higher than without it (docs/performance.md, decision 0015). No maintained crate does
//! this hand-over, so it is written here.

use super::Connection;
use crate::codec::encode::{WriteError, Writer};
use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A request handed to the flusher, and given back once written.
pub(crate) struct Handoff(Mutex<Stage>);

enum Stage {
    /// Waiting for the flusher; `waker` is the request task's.
    Queued {
        conn: Box<Connection>,
        writer: Writer,
        waker: Waker,
    },
    /// Written (completely, partly, or failed): for the request task to take back.
    Written {
        conn: Box<Connection>,
        writer: Writer,
        failed: Option<std::io::Error>,
    },
    /// Taken back.
    Taken,
}

/// A thread's queue and its flusher.
struct Queue(Mutex<QueueState>);

struct QueueState {
    jobs: Vec<Arc<Handoff>>,
    /// The flusher's waker while it waits for jobs.
    waker: Option<Waker>,
    /// The flusher task is gone (its runtime shut down): the next request starts another.
    closed: bool,
}

thread_local! {
    static QUEUE: RefCell<Option<Arc<Queue>>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`hand_over`] gives back.
pub(crate) enum Handed {
    /// Written by the flusher (or partly, or failed: `failed`); the request task goes on with
    /// the exchange (the rest of the write, then the response).
    Written(Box<Connection>, Writer, Option<std::io::Error>),
    /// Not handed over (not plain TCP, a body to stream, or no runtime to run a flusher): the
    /// request task writes itself.
    Declined(Box<Connection>, Writer),
}

/// Hands a prepared request to this thread's flusher and waits until it is written and the
/// connection is readable (the response has begun) or the connection's deadline passes
/// (armed with [`Connection::arm`] before; its timer wakes this task too).
pub(crate) async fn hand_over(mut conn: Box<Connection>, writer: Writer) -> Handed {
    if !writer.bodiless() || !conn.batched || conn.tcp().is_none() {
        return Handed::Declined(conn, writer);
    }
    // Register this task with the deadline's timer before handing the connection over.
    let expired =
        std::future::poll_fn(|cx| Poll::Ready(conn.deadline.as_mut().poll(cx).is_ready())).await;
    if expired {
        return Handed::Declined(conn, writer);
    }
    let mut pending = Some((conn, writer));
    let mut handoff: Option<Arc<Handoff>> = None;
    std::future::poll_fn(move |cx| {
        if let Some((conn, writer)) = pending.take() {
            let stage = Stage::Queued {
                conn,
                writer,
                waker: cx.waker().clone(),
            };
            match submit(stage) {
                Ok(h) => handoff = Some(h),
                Err(stage) => {
                    if let Stage::Queued { conn, writer, .. } = *stage {
                        return Poll::Ready(Handed::Declined(conn, writer));
                    }
                }
            }
            return Poll::Pending;
        }
        let Some(h) = handoff.as_ref() else {
            return Poll::Pending;
        };
        let mut stage = lock(&h.0);
        match std::mem::replace(&mut *stage, Stage::Taken) {
            Stage::Written {
                conn,
                writer,
                failed,
            } => Poll::Ready(Handed::Written(conn, writer, failed)),
            Stage::Queued {
                mut conn,
                writer,
                mut waker,
            } => {
                // Woken before the flusher ran: by the deadline, which a flusher that is not
                // running (its runtime not driven) must not turn into a hang; the request is
                // taken back (the flusher skips it) and fails with the timeout.
                if conn.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Handed::Declined(conn, writer));
                }
                // Otherwise wait on, with the current waker.
                waker.clone_from(cx.waker());
                *stage = Stage::Queued {
                    conn,
                    writer,
                    waker,
                };
                Poll::Pending
            }
            Stage::Taken => Poll::Pending,
        }
    })
    .await
}

/// Queues a request on this thread's flusher, starting one when there is none (or its runtime
/// is gone). The request comes back when no flusher can run (no runtime).
fn submit(stage: Stage) -> Result<Arc<Handoff>, Box<Stage>> {
    QUEUE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(queue) = slot.as_ref() {
            let mut q = lock(&queue.0);
            if !q.closed {
                let handoff = Arc::new(Handoff(Mutex::new(stage)));
                q.jobs.push(handoff.clone());
                let wake = q.waker.take();
                drop(q);
                if let Some(w) = wake {
                    w.wake();
                }
                return Ok(handoff);
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(Box::new(stage));
        };

        let handoff = Arc::new(Handoff(Mutex::new(stage)));
        let queue = Arc::new(Queue(Mutex::new(QueueState {
            jobs: vec![handoff.clone()],
            waker: None,
            closed: false,
        })));
        runtime.spawn(run(queue.clone()));
        *slot = Some(queue);
        Ok(handoff)
    })
}

/// Marks the queue closed when the flusher task is dropped (its runtime shut down).
struct CloseOnDrop(Arc<Queue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let mut q = lock(&self.0.0);
        q.closed = true;
        q.jobs.clear();
    }
}

/// The flusher: waits for requests, lets the rest of the scheduler pass queue theirs, then
/// writes them all.
async fn run(queue: Arc<Queue>) {
    let closer = CloseOnDrop(queue);
    let queue = &closer.0;
    let mut batch = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            let mut q = lock(&queue.0);
            if q.jobs.is_empty() {
                if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    q.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        tokio::task::yield_now().await;
        std::mem::swap(&mut lock(&queue.0).jobs, &mut batch);
        for h in batch.drain(..) {
            // A request whose task is gone (client disconnected) is not sent; dropping it
            // closes the connection.
            if Arc::strong_count(&h) > 1 {
                h.write();
            }
        }
    }
}

impl Handoff {
    /// Writes the request (on the flusher's task, with the request task's waker: if the
    /// socket is full, the request task is woken when it drains and writes the rest), then
    /// registers the request task for the response.
    fn write(&self) {
        let mut stage = lock(&self.0);
        let Stage::Queued {
            mut conn,
            mut writer,
            waker,
        } = std::mem::replace(&mut *stage, Stage::Taken)
        else {
            return;
        };
        let mut cx = Context::from_waker(&waker);
        let failed = match writer.poll_write(&mut cx, &mut conn.io) {
            Poll::Ready(Err(WriteError::Io(e))) => Some(e),
            // No body, so no body error; a partial write (Pending) is finished by the task.
            _ => None,
        };
        let readable = failed.is_some()
            || !writer.done()
            || conn
                .tcp()
                .is_none_or(|tcp| tcp.poll_read_ready(&mut cx).is_ready());
        *stage = Stage::Written {
            conn,
            writer,
            failed,
        };
        drop(stage);
        if readable {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use torii_core::Body;

    fn prepare(conn: &mut Connection, parts: &http::request::Parts, body: Body) -> Writer {
        conn.prepare(
            parts,
            body,
            &http::HeaderValue::from_static("up"),
            false,
            None,
        )
    }

    /// A connection to a fresh local listener, the accepted server side, and a prepared GET.
    async fn setup() -> (Box<Connection>, Writer, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await
            .unwrap();
        let mut conn = Box::new(Connection::new(Box::new(client), permit));
        let (parts, ()) = http::Request::get("/x").body(()).unwrap().into_parts();
        let writer = prepare(&mut conn, &parts, Body::Empty);
        conn.arm(crate::h1::Timeouts {
            response_head: std::time::Duration::from_secs(5),
            upload_idle: std::time::Duration::from_secs(5),
        });
        (conn, writer, server)
    }

    /// The flusher writes the request; the request task is woken when the response arrives.
    async fn exchange() {
        let (conn, writer, mut server) = setup().await;
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            let n = server.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /x HTTP/1.1\r\n"));
            server
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            server
        });
        let Handed::Written(conn, writer, failed) = hand_over(conn, writer).await else {
            panic!("a plain TCP request without a body is handed over");
        };
        assert!(failed.is_none() && writer.done());
        let _server = server.await.unwrap();
        assert!(conn.tcp().is_some());
    }

    #[tokio::test]
    async fn the_flusher_writes_and_the_task_wakes_for_the_response() {
        tokio::time::timeout(std::time::Duration::from_secs(10), exchange())
            .await
            .expect("the exchange finished");
    }

    #[test]
    fn a_new_runtime_on_the_same_thread_gets_a_new_flusher() {
        // The first runtime's flusher is dropped with it; the thread-local queue must not keep
        // sending requests to it (they would never be written).
        for _ in 0..3 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), exchange())
                    .await
                    .expect("the exchange finished");
            });
        }
    }

    #[test]
    fn a_flusher_that_does_not_run_ends_in_the_deadline_not_a_hang() {
        // Runtime A stays alive but is not driven while runtime B runs on the same thread: B's
        // request is queued on A's flusher, which never runs. The deadline takes it back.
        let a = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        a.block_on(exchange());
        let b = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        b.block_on(async {
            let (mut conn, writer, _server) = setup().await;
            conn.arm(crate::h1::Timeouts {
                response_head: std::time::Duration::from_millis(50),
                upload_idle: std::time::Duration::from_millis(50),
            });
            let handed =
                tokio::time::timeout(std::time::Duration::from_secs(10), hand_over(conn, writer))
                    .await
                    .expect("the deadline ended the wait");
            assert!(matches!(handed, Handed::Declined(..)));
        });
        drop(a);
    }

    #[tokio::test]
    async fn a_request_with_a_body_is_declined() {
        let (mut conn, _, _server) = setup().await;
        let (parts, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        let writer = prepare(&mut conn, &parts, Body::full("data"));
        assert!(matches!(
            hand_over(conn, writer).await,
            Handed::Declined(..)
        ));
    }

    /// The multi-thread runtime writes from the request's task (decision 0015): a connection
    /// opened there is never handed to a flusher.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_of_the_multi_thread_runtime_are_declined() {
        let (conn, writer, _server) = setup().await;
        assert!(!conn.batched);
        assert!(matches!(
            hand_over(conn, writer).await,
            Handed::Declined(..)
        ));
    }
}
