//! Zero-copy sends: a file range goes from the page cache to a socket through
//! a pipe with io_uring splice, so record bytes never enter user space.
//! glommio exposes no splice, so each shard owns a small raw ring of its own;
//! completions wake the shard through an eventfd that glommio reads, which
//! waits without polling (DESIGN.md §10 measured this shape).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::channel::oneshot;
use glommio::io::BufferedFile;
use glommio::sync::Semaphore;
use io_uring::{opcode, squeue, types, IoUring};
use tracing::warn;

/// Submission slots of the ring; also the bound on splices in flight.
const RING_ENTRIES: u32 = 256;
/// Pipes kept per shard; a send waits for one when all are in use. Each
/// holds at most `PIPE_BYTES` of page references while a chunk is in it.
const PIPES_MAX: usize = 256;
/// Requested pipe capacity: one splice moves at most this much.
const PIPE_BYTES: i32 = 1 << 20;

/// One response frame as it goes out: encoded bytes and, for Fetch, the
/// record sets sent from the segment files in between (zero-copy).
#[derive(Debug)]
pub struct OutFrame {
    pub parts: Vec<OutPart>,
}

#[derive(Debug)]
pub enum OutPart {
    Bytes(Vec<u8>),
    File(FileSlice),
}

impl From<Vec<u8>> for OutFrame {
    fn from(bytes: Vec<u8>) -> OutFrame {
        OutFrame {
            parts: vec![OutPart::Bytes(bytes)],
        }
    }
}

/// A file range to send; the descriptor is the sender's own (a dup), so the
/// owning shard may close or delete the segment meanwhile. It counts against
/// the owning shard's [`SliceDescriptors`] until it drops, wherever that is.
#[derive(Debug)]
pub struct FileSlice {
    pub fd: OwnedFd,
    pub position: u64,
    pub len: u64,
    _held: SliceHeld,
}

/// A shard's bound on the segment descriptors it has duplicated for
/// responses not yet sent (a Fetch of many partitions takes one each). The
/// count is shared with the connection shards that drop the slices: an
/// atomic counter, no lock.
#[derive(Debug, Clone)]
pub struct SliceDescriptors {
    in_use: Arc<AtomicUsize>,
    limit: usize,
}

#[derive(Debug)]
struct SliceHeld(Arc<AtomicUsize>);

impl Drop for SliceHeld {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SliceDescriptors {
    pub fn new(limit: usize) -> SliceDescriptors {
        assert!(limit > 0);
        SliceDescriptors {
            in_use: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// Duplicated descriptors not yet dropped.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// A slice of the file behind `fd`, on a descriptor of its own; Ok(None)
    /// when the bound is reached (the caller sends nothing for now: the
    /// client fetches again once responses in flight are sent).
    pub fn slice(&self, fd: RawFd, position: u64, len: u64) -> io::Result<Option<FileSlice>> {
        if self.in_use.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.in_use.fetch_sub(1, Ordering::AcqRel);
            return Ok(None);
        }
        let held = SliceHeld(self.in_use.clone());
        // SAFETY: fcntl on a descriptor we were lent; the result is a new one we own.
        let duplicate = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if duplicate < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(FileSlice {
            // SAFETY: `duplicate` is a fresh descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(duplicate) },
            position,
            len,
            _held: held,
        }))
    }
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity_bytes: u64,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills two descriptors on success.
        // Non-blocking: a full pipe answers EAGAIN (then it is drained)
        // instead of stopping the shard.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are fresh descriptors owned from here on.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Larger pipes mean fewer splices; the kernel may grant less
        // (fs.pipe-max-size), so read back what we got.
        // SAFETY: fcntl on our own descriptor.
        let granted = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        if granted <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            read,
            write,
            capacity_bytes: granted as u64,
        })
    }
}

/// io-wq workers for bounded work (file I/O) per shard thread. They mostly
/// wait on the device in fdatasync, so more than one per core pays: under
/// latency-50mbps (8 partitions, one shard) 2 workers gave a mean fdatasync
/// of 8.6 ms, 8 gave 3.2 ms, 16 gave 2.9 ms and 32 gave 3.5 ms.
const IOWQ_BOUNDED_WORKERS: u32 = 16;

fn raise_iowq_bounded_workers(ring: &IoUring) {
    let mut current = [0u32, 0u32];
    if let Err(e) = ring.submitter().register_iowq_max_workers(&mut current) {
        warn!(error = %e, "cannot read the io-wq worker bounds; left as they are");
        return;
    }
    if current[0] >= IOWQ_BOUNDED_WORKERS {
        return;
    }
    // Zero leaves the unbounded (socket) pool as it is.
    let mut wanted = [IOWQ_BOUNDED_WORKERS, 0];
    if let Err(e) = ring.submitter().register_iowq_max_workers(&mut wanted) {
        warn!(error = %e, bounded = current[0], "cannot raise the io-wq bounded worker limit; fdatasyncs of different partitions will queue behind each other");
    }
}

pub struct SpliceRing {
    ring: RefCell<IoUring>,
    /// Signalled by the kernel on every completion; owns the eventfd.
    wake: BufferedFile,
    waiters: RefCell<HashMap<u64, oneshot::Sender<i32>>>,
    next_user_data: Cell<u64>,
    in_flight: Cell<usize>,
    reaping: Cell<bool>,
    slots: Semaphore,
    pipes: RefCell<Vec<Pipe>>,
    pipe_slots: Semaphore,
}

impl SpliceRing {
    pub fn new() -> io::Result<Rc<SpliceRing>> {
        // No DEFER_TASKRUN/SQPOLL: the eventfd must fire from any context.
        let ring = IoUring::new(RING_ENTRIES)?;
        // SAFETY: eventfd returns a fresh descriptor, owned by `wake` below.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `wake` takes ownership of the descriptor and closes it.
        let wake = unsafe { BufferedFile::from_raw_fd(eventfd) };
        ring.submitter().register_eventfd(eventfd)?;
        // The kernel's io-wq is per thread, shared with glommio's own rings:
        // fdatasyncs, splices and large writes all run on it. Its default
        // bound (2 workers here, with the shard pinned to one core) let 2
        // partitions sync at a time while the others' fdatasyncs queued:
        // raise it, never cap it (a cap queued fdatasyncs behind splices).
        raise_iowq_bounded_workers(&ring);
        Ok(Rc::new(SpliceRing {
            ring: RefCell::new(ring),
            wake,
            waiters: RefCell::new(HashMap::new()),
            next_user_data: Cell::new(1),
            in_flight: Cell::new(0),
            reaping: Cell::new(false),
            slots: Semaphore::new(RING_ENTRIES as u64),
            pipes: RefCell::new(Vec::new()),
            pipe_slots: Semaphore::new(PIPES_MAX as u64),
        }))
    }

    /// Submits one operation and waits for its result (a byte count or
    /// -errno). The descriptors it names must stay open until it returns.
    async fn run(self: &Rc<Self>, entry: squeue::Entry) -> i32 {
        let Ok(_slot) = self.slots.acquire_permit(1).await else {
            return -libc::ECANCELED;
        };
        let user_data = self.next_user_data.get();
        self.next_user_data.set(user_data + 1);
        let (sender, receiver) = oneshot::channel();
        {
            let mut ring = self.ring.borrow_mut();
            // SAFETY: the entry's descriptors outlive the operation (callers
            // hold them across this await) and it names no user memory.
            let pushed = unsafe { ring.submission().push(&entry.user_data(user_data)) };
            assert!(pushed.is_ok(), "slots bound the submission queue");
            if let Err(e) = ring.submit() {
                return -e.raw_os_error().unwrap_or(libc::EIO);
            }
        }
        self.waiters.borrow_mut().insert(user_data, sender);
        self.in_flight.set(self.in_flight.get() + 1);
        self.start_reaper();
        receiver.await.unwrap_or(-libc::ECANCELED)
    }

    fn start_reaper(self: &Rc<Self>) {
        if self.reaping.replace(true) {
            return;
        }
        let ring = self.clone();
        glommio::spawn_local(async move { ring.reap().await }).detach();
    }

    /// Runs while operations are in flight: sleeps on the eventfd, then
    /// hands out every completion.
    async fn reap(&self) {
        while self.in_flight.get() > 0 {
            if let Err(e) = self.wake.read_at(0, 8).await {
                warn!(error = %e, "splice ring wake-up failed; retrying");
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            let mut ring = self.ring.borrow_mut();
            let mut waiters = self.waiters.borrow_mut();
            for cqe in ring.completion() {
                self.in_flight.set(self.in_flight.get() - 1);
                if let Some(waiter) = waiters.remove(&cqe.user_data()) {
                    let _ = waiter.send(cqe.result());
                }
            }
        }
        self.reaping.set(false);
    }

    /// Sends one response frame that carries file ranges: the whole frame
    /// is assembled in a pipe — encoded bytes written into it, cached file
    /// ranges spliced into it right here (page references, no copy, no
    /// disk wait), cold ranges spliced by the ring — and the pipe drained
    /// into the socket by the ring whenever it fills and at the end. One
    /// frame with many small partitions thus costs few ring round trips.
    /// On an error the connection is unusable (part of a frame may be on
    /// the wire): the caller closes it.
    pub async fn send_frame(self: &Rc<Self>, socket: RawFd, frame: OutFrame) -> io::Result<()> {
        let Ok(_pipe_slot) = self.pipe_slots.acquire_permit(1).await else {
            return Err(io::Error::other("splice ring closed"));
        };
        let pipe = match self.pipes.borrow_mut().pop() {
            Some(pipe) => pipe,
            None => Pipe::new()?,
        };
        // The pipe goes back to the pool only when it is known empty; on an
        // error it is dropped (closed) with whatever is left in it.
        let mut sender = PipeSender {
            ring: self,
            pipe: &pipe,
            socket,
            in_pipe_bytes: 0,
        };
        for part in &frame.parts {
            match part {
                OutPart::Bytes(bytes) => sender.push_bytes(bytes).await?,
                OutPart::File(slice) => sender.push_file(slice).await?,
            }
        }
        sender.drain().await?;
        self.pipes.borrow_mut().push(pipe);
        Ok(())
    }
}

/// One frame on its way through a pipe.
struct PipeSender<'a> {
    ring: &'a Rc<SpliceRing>,
    pipe: &'a Pipe,
    socket: RawFd,
    /// Bytes in the pipe not yet sent to the socket.
    in_pipe_bytes: u64,
}

impl PipeSender<'_> {
    async fn push_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut written = 0usize;
        // Every round writes at least one byte or drains the pipe first.
        while written < bytes.len() {
            let rest = &bytes[written..];
            // SAFETY: writes from a live slice to our own pipe descriptor.
            let n = unsafe {
                libc::write(
                    self.pipe.write.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                )
            };
            if n > 0 {
                written += n as usize;
                self.in_pipe_bytes += n as u64;
                continue;
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.raw_os_error() == Some(libc::EAGAIN) && self.in_pipe_bytes > 0 {
                self.drain().await?;
                continue;
            }
            return Err(io::Error::new(e.kind(), format!("write to pipe: {e}")));
        }
        Ok(())
    }

    async fn push_file(&mut self, slice: &FileSlice) -> io::Result<()> {
        let fd = slice.fd.as_raw_fd();
        let mut position = slice.position;
        let end = slice.position + slice.len;
        // Every round moves at least one byte or drains the pipe first.
        while position < end {
            let chunk = (end - position).min(self.pipe.capacity_bytes);
            let moved = if is_cached(fd, position, chunk) {
                let mut offset = position as libc::loff_t;
                // SAFETY: splice between descriptors we hold; the pipe is
                // non-blocking and the pages are cached, so this cannot wait.
                let n = unsafe {
                    libc::splice(
                        fd,
                        &mut offset,
                        self.pipe.write.as_raw_fd(),
                        std::ptr::null_mut(),
                        chunk as usize,
                        libc::SPLICE_F_NONBLOCK,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EAGAIN) && self.in_pipe_bytes > 0 {
                        self.drain().await?;
                        continue;
                    }
                    return Err(io::Error::new(
                        e.kind(),
                        format!("splice file to pipe: {e}"),
                    ));
                }
                n as u64
            } else {
                // Not in memory: the disk read happens in the kernel's
                // worker, into an empty pipe, while this shard goes on.
                self.drain().await?;
                let file = types::Fd(fd);
                let pipe_in = types::Fd(self.pipe.write.as_raw_fd());
                let entry =
                    opcode::Splice::new(file, position as i64, pipe_in, -1, chunk as u32).build();
                check(self.ring.run(entry).await, "splice file to pipe")? as u64
            };
            if moved == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file ended before the planned range",
                ));
            }
            position += moved;
            self.in_pipe_bytes += moved;
        }
        Ok(())
    }

    /// Sends everything in the pipe to the socket.
    async fn drain(&mut self) -> io::Result<()> {
        let pipe_out = types::Fd(self.pipe.read.as_raw_fd());
        let socket = types::Fd(self.socket);
        // Every round sends at least one byte, or waits for the socket.
        while self.in_pipe_bytes > 0 {
            let chunk = self.in_pipe_bytes.min(u32::MAX as u64) as u32;
            let sent = self
                .ring
                .run(opcode::Splice::new(pipe_out, -1, socket, -1, chunk).build())
                .await;
            if sent == -libc::EAGAIN {
                let ready = self
                    .ring
                    .run(opcode::PollAdd::new(socket, libc::POLLOUT as u32).build())
                    .await;
                check(ready, "poll socket")?;
                continue;
            }
            let sent = check(sent, "splice pipe to socket")?;
            if sent == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed"));
            }
            self.in_pipe_bytes -= sent as u64;
        }
        Ok(())
    }
}

/// Whether every page of `len` bytes at `position` is in the page cache
/// (cachestat, Linux 6.5+). False when the kernel cannot tell: the range
/// then takes the asynchronous path, which is always safe.
fn is_cached(fd: RawFd, position: u64, len: u64) -> bool {
    #[repr(C)]
    struct CachestatRange {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Cachestat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    const PAGE_BYTES: u64 = 4096;
    if len == 0 {
        return true;
    }
    let range = CachestatRange { off: position, len };
    let mut stat = Cachestat::default();
    // SAFETY: the kernel reads `range` and fills `stat`, both live here.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    let pages = (position + len - 1) / PAGE_BYTES - position / PAGE_BYTES + 1;
    rc == 0 && stat.nr_cache >= pages
}

fn check(result: i32, what: &str) -> io::Result<u32> {
    if result < 0 {
        let e = io::Error::from_raw_os_error(-result);
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(result as u32)
}
