//! Read-ahead of upstream response bodies ("spooling", nginx's `proxy_buffering` with
//! `proxy_max_temp_file_size`): a task reads the upstream body as fast as the upstream sends it,
//! into memory and then into an unlinked temporary file, and the client's body is served from
//! there at the client's pace. The upstream connection goes back to its pool (or the HTTP/2
//! stream slot is freed) when the upstream has sent everything, not when the slowest client has
//! read it, so clients that read slowly cannot take every upstream connection (issue 13).
//!
//! Frames keep their order: once a frame has gone to the file, later frames follow it there
//! until the reader has drained the file (the reader always takes memory first, then the
//! file). Trailers and the end (or the upstream's error) are delivered after the last byte.
//! Disk reads and writes run on tokio's blocking pool, never on a worker thread.
//!
//! Written by hand because no maintained crate spools an `http_body::Body` with a memory
//! and disk bound and a backpressure point.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use metrics::{Counter, Gauge};
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future as _;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use torii_core::BoxError;

/// Bytes read from the temporary file at once.
const FILE_CHUNK: u64 = 64 * 1024;

/// The spool settings of one config, with the gateway-wide disk budget.
pub struct Spooling {
    /// Bytes of one response held in memory.
    pub memory: usize,
    /// Bytes of one response held on disk.
    pub max_file: u64,
    /// Bytes on disk for every response together.
    pub max_total: u64,
    /// Where temporary files are made.
    pub dir: PathBuf,
    /// Bytes on disk now (shared by every config of this gateway).
    pub on_disk: Arc<AtomicU64>,
    /// Its gauge.
    pub gauge: Gauge,
    /// Responses that went to disk.
    pub spooled: Counter,
}

impl Spooling {
    /// Whether a response with these headers and body is read ahead: not when its whole
    /// length fits in `memory` (socket buffers take it), nor for streams whose upstream side
    /// is held by their nature (gRPC, server-sent events), nor when the upstream asks for it
    /// with `X-Accel-Buffering: no`.
    pub fn wants(&self, headers: &HeaderMap, body: &impl HttpBody) -> bool {
        if body.is_end_stream() {
            return false;
        }
        if body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= self.memory as u64)
        {
            return false;
        }
        if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
            let ct = ct.as_bytes();
            let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
            if starts(b"application/grpc")
                || starts(b"text/event-stream")
                || starts(b"multipart/x-mixed-replace")
            {
                return false;
            }
        }
        !headers
            .get("x-accel-buffering")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"))
    }

    /// Starts reading `body` ahead on its own task; the returned body is what the client gets.
    pub fn start<B>(self: &Arc<Self>, body: B) -> Spooled
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
    {
        let hint = body.size_hint().exact();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            space: Notify::new(),
            gone: Notify::new(),
            settings: self.clone(),
        });
        tokio::spawn(read_ahead(body, shared.clone()));
        Spooled {
            shared,
            reading: None,
            left: hint,
            ended: false,
        }
    }
}

/// What the reader and the read-ahead task share.
struct Shared {
    state: Mutex<State>,
    /// The reader took something: the read-ahead task may have room again.
    space: Notify,
    /// The reader is gone: the read-ahead task stops.
    gone: Notify,
    settings: Arc<Spooling>,
}

#[derive(Default)]
struct State {
    mem: VecDeque<Bytes>,
    mem_bytes: usize,
    file: Option<Arc<File>>,
    /// Bytes of the file the reader has taken; the unread part is `read..written`.
    read: u64,
    /// End of the data written to the file.
    written: u64,
    /// Bytes of the disk budget this file holds: its size (a file drained and started over
    /// keeps its size until the response ends, so the budget counts what is on disk).
    reserved: u64,
    trailers: Option<HeaderMap>,
    /// The upstream body ended: `Ok` cleanly, `Err` with its error (given to the reader once).
    end: Option<Result<(), BoxError>>,
    reader: Option<Waker>,
    reader_gone: bool,
    /// The file could not be made: memory only from then on.
    no_disk: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn release_disk(&self, bytes: u64) {
        if bytes > 0 {
            let s = &self.settings;
            s.on_disk.fetch_sub(bytes, Ordering::AcqRel);
            s.gauge.decrement(bytes as f64);
        }
    }
    /// Reserves `bytes` of the gateway's disk budget.
    fn reserve_disk(&self, bytes: u64) -> bool {
        let s = &self.settings;
        let ok = s
            .on_disk
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(bytes).filter(|&n| n <= s.max_total)
            })
            .is_ok();
        if ok {
            s.gauge.increment(bytes as f64);
        }
        ok
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let reserved = self.lock().reserved;
        self.release_disk(reserved);
    }
}

/// Ends the client's body with an error if the read-ahead task stops without having ended it
/// (a panic in the upstream body, a cancelled disk task), so the client never waits forever.
struct EndGuard(Arc<Shared>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        if st.end.is_none() {
            st.end = Some(Err("response read-ahead stopped".into()));
        }
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }
}

/// Where the next frame of the upstream goes.
enum Place {
    Memory,
    /// The file, at this offset (the budget already counts it).
    Disk(Arc<File>, u64),
    /// The file, once it is made (the budget already counts the first write).
    NewFile,
    /// Nowhere yet: wait until the reader takes something.
    Wait,
    /// The reader is gone.
    Stop,
}

/// The read-ahead task: pulls the upstream body until it ends, the reader goes away, or an
/// error; waits (and so reads the upstream at the client's pace) when memory and disk are full.
async fn read_ahead<B>(mut body: B, shared: Arc<Shared>)
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
{
    use http_body_util::BodyExt;
    let _end = EndGuard(shared.clone());
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = shared.gone.notified() => return,
        };
        let frame = match frame {
            None => Ok(None),
            Some(Ok(f)) => Ok(Some(f)),
            Some(Err(e)) => Err(e),
        };
        match frame {
            Ok(Some(f)) => match f.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    if !put(&shared, data).await {
                        return;
                    }
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        shared.lock().trailers = Some(t);
                    }
                }
            },
            end => {
                let mut st = shared.lock();
                st.end = Some(end.map(drop));
                if let Some(w) = st.reader.take() {
                    w.wake();
                }
                return;
            }
        }
    }
}

/// Puts one data frame in memory or in the file; `false` when the reader is gone.
async fn put(shared: &Arc<Shared>, data: Bytes) -> bool {
    let len = data.len();
    loop {
        let place = {
            let mut st = shared.lock();
            place(shared, &mut st, len as u64)
        };
        match place {
            Place::Stop => return false,
            Place::Memory => {
                let mut st = shared.lock();
                st.mem_bytes += len;
                st.mem.push_back(data);
                if let Some(w) = st.reader.take() {
                    w.wake();
                }
                return true;
            }
            Place::Wait => {
                tokio::select! {
                    _ = shared.space.notified() => {}
                    _ = shared.gone.notified() => return false,
                }
            }
            Place::NewFile => {
                let dir = shared.settings.dir.clone();
                let made = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir)).await;
                let mut st = shared.lock();
                match made {
                    Ok(Ok(f)) => {
                        st.file = Some(Arc::new(f));
                        shared.settings.spooled.increment(1);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, dir = %shared.settings.dir.display(), "cannot make a temporary file for response read-ahead; reading ahead in memory only");
                        st.no_disk = true;
                    }
                    Err(_) => st.no_disk = true,
                }
            }
            Place::Disk(file, at) => {
                let chunk = data.clone();
                let written =
                    tokio::task::spawn_blocking(move || file.write_all_at(&chunk, at)).await;
                let mut st = shared.lock();
                match written {
                    Ok(Ok(())) => {
                        st.written = at + len as u64;
                        if let Some(w) = st.reader.take() {
                            w.wake();
                        }
                        return true;
                    }
                    Ok(Err(e)) => {
                        // A full or failing disk: memory only from now on. The frame is put
                        // again once the reader has drained the file (order is kept).
                        tracing::warn!(error = %e, "writing response read-ahead to disk failed; reading ahead in memory only");
                        st.no_disk = true;
                    }
                    Err(_) => st.no_disk = true,
                }
            }
        }
    }
}

/// Decides where `len` more bytes go (reserving disk budget for a disk place).
fn place(shared: &Shared, st: &mut State, len: u64) -> Place {
    if st.reader_gone {
        return Place::Stop;
    }
    // The file was drained: write it over from the start (it keeps its size, and its share
    // of the budget, until the response ends).
    if st.written > 0 && st.read == st.written {
        st.read = 0;
        st.written = 0;
    }
    let s = &shared.settings;
    if st.written == 0 && (st.mem.is_empty() || st.mem_bytes as u64 + len <= s.memory as u64) {
        return Place::Memory;
    }
    let end = st.written + len;
    if st.no_disk || end > s.max_file {
        return Place::Wait;
    }
    let grow = end.saturating_sub(st.reserved);
    if grow > 0 {
        if !shared.reserve_disk(grow) {
            return Place::Wait;
        }
        st.reserved += grow;
    }
    match st.file.clone() {
        Some(file) => Place::Disk(file, st.written),
        None => Place::NewFile,
    }
}

/// The client's side of a spooled response body.
pub struct Spooled {
    shared: Arc<Shared>,
    /// A read of the temporary file in flight.
    reading: Option<JoinHandle<std::io::Result<Bytes>>>,
    /// Bytes still to come, when the length is known.
    left: Option<u64>,
    ended: bool,
}

impl Spooled {
    fn data(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(l) = self.left.as_mut() {
            *l = l.saturating_sub(data.len() as u64);
        }
        self.shared.space.notify_one();
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl HttpBody for Spooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(reading) = this.reading.as_mut() {
                let done = match Pin::new(reading).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                this.reading = None;
                return match done {
                    Ok(Ok(data)) => {
                        this.shared.lock().read += data.len() as u64;
                        this.data(data)
                    }
                    Ok(Err(e)) => {
                        this.ended = true;
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Err(e) => {
                        this.ended = true;
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                };
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let mut st = this.shared.lock();
            if let Some(data) = st.mem.pop_front() {
                st.mem_bytes -= data.len();
                drop(st);
                return this.data(data);
            }
            if st.written > st.read {
                let (at, n) = (st.read, (st.written - st.read).min(FILE_CHUNK));
                let Some(file) = st.file.clone() else {
                    return Poll::Ready(Some(Err("response spool lost its file".into())));
                };
                drop(st);
                this.reading = Some(tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
                }));
                continue;
            }
            match st.end.take() {
                None => {
                    st.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(())) => {
                    this.ended = true;
                    let trailers = st.trailers.take();
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        self.shared.lock().reader_gone = true;
        self.shared.gone.notify_one();
    }
}
