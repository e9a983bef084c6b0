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
            if starts(b"application/grpc") || starts(b"text/event-stream") {
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
    /// Bytes written to the file (and counted in the disk budget).
    written: u64,
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
            let now = s.on_disk.fetch_sub(bytes, Ordering::AcqRel) - bytes;
            s.gauge.set(now as f64);
        }
    }
    /// Reserves `bytes` of the gateway's disk budget.
    fn reserve_disk(&self, bytes: u64) -> bool {
        let s = &self.settings;
        let ok = s
            .on_disk
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(bytes).filter(|&n| n <= s.max_total)
            });
        match ok {
            Ok(before) => {
                s.gauge.set((before + bytes) as f64);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let written = self.lock().written;
        self.release_disk(written);
    }
}

/// Where the next frame of the upstream goes.
enum Place {
    Memory,
    /// The file, at this offset (the bytes are already counted in the budget).
    Disk(Arc<File>, u64),
    /// The file, once it is made.
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
                let written =
                    tokio::task::spawn_blocking(move || file.write_all_at(&data, at)).await;
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
                        // The budget was reserved for bytes that are not there: give it back,
                        // and end the body with the error (the client's response is cut, as
                        // when the upstream breaks it).
                        drop(st);
                        shared.release_disk(len as u64);
                        let mut st = shared.lock();
                        st.end = Some(Err(Box::new(e)));
                        if let Some(w) = st.reader.take() {
                            w.wake();
                        }
                        return false;
                    }
                    Err(_) => {
                        drop(st);
                        shared.release_disk(len as u64);
                        return false;
                    }
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
    // The file was drained: start it over (its bytes leave the budget).
    if st.written > 0 && st.read == st.written {
        let freed = st.written;
        st.read = 0;
        st.written = 0;
        shared.release_disk(freed);
    }
    let s = &shared.settings;
    if st.written == 0 && (st.mem.is_empty() || st.mem_bytes as u64 + len <= s.memory as u64) {
        return Place::Memory;
    }
    if st.no_disk || st.written + len > s.max_file {
        return Place::Wait;
    }
    let Some(file) = st.file.clone() else {
        return Place::NewFile;
    };
    if !shared.reserve_disk(len) {
        return Place::Wait;
    }
    Place::Disk(file, st.written)
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
