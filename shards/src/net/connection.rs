//! One client connection: read size-prefixed frames, start each request in
//! arrival order, and write the responses back in that same order (Kafka
//! clients pipeline requests and match responses by position).

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use engine::protocol::{parse_frame_size, FrameError};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::FutureExt;
use glommio::channels::local_channel;
use glommio::net::{Preallocated, TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::clock::with_timeout;
use crate::io::splice::{OutFrame, OutPart, SpliceRing};
use crate::kafka::dispatch::{start_request, RequestError, Response};
use crate::shard::Shard;

/// Requests started but not yet answered, per connection; when full the
/// connection stops reading (backpressure onto the client). Their bytes are
/// bounded by the shard's request budget; this bounds their count. 64 made
/// pipelining acks=all producers (librdkafka sends a request per linger)
/// wait in the socket behind a slow fdatasync: latency-50mbps publish p99
/// 70-76 ms at 64, 41-52 ms at 512 (perf/README.md).
const IN_FLIGHT_REQUESTS_MAX: usize = 512;
/// A request must be taken within this time once its size is known (memory
/// for it, then its body), so a client trickling bytes cannot hold request
/// memory, or a place in the queue for it, for long.
const FRAME_READ_MS_MAX: u64 = 30_000;
/// Bytes read per step of a request body: memory follows what arrives, not
/// what the size prefix claims.
const FRAME_READ_CHUNK_BYTES: usize = 1 << 20;

/// Reads a request body of `size` bytes, growing the buffer as bytes arrive.
async fn read_frame<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> std::io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(size.min(FRAME_READ_CHUNK_BYTES));
    while frame.len() < size {
        let start = frame.len();
        let step = (size - start).min(FRAME_READ_CHUNK_BYTES);
        frame.resize(start + step, 0);
        reader.read_exact(&mut frame[start..]).await?;
    }
    Ok(frame)
}

/// Writes one response: plain frames through the socket, frames with file
/// ranges through a pipe by splice (see `SpliceRing::send_frame`). A
/// failure leaves a partial frame on the wire, so the caller closes the
/// connection.
async fn write_frame<W: futures::io::AsyncWrite + Unpin>(
    writer: &mut W,
    socket_fd: RawFd,
    splice: &Rc<SpliceRing>,
    frame: OutFrame,
) -> std::io::Result<()> {
    if !frame.parts.iter().any(|p| matches!(p, OutPart::File(_))) {
        for part in &frame.parts {
            if let OutPart::Bytes(bytes) = part {
                writer.write_all(bytes).await?;
            }
        }
        return Ok(());
    }
    // Bytes written before must be on the socket first.
    writer.flush().await?;
    splice.send_frame(socket_fd, frame).await
}

/// Bytes of answered responses sent in one write. An fdatasync often
/// completes several pipelined produce requests of a connection at once, and
/// every send on loopback also pays for waking the client; one send for all
/// of them answers each as early as sending them one by one would.
const GATHERED_RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Adds a frame made only of bytes to `gathered` if it fits; false leaves
/// it to be written on its own (file ranges, or too big).
fn gather(gathered: &mut Vec<u8>, frame: &OutFrame) -> bool {
    let mut length = 0;
    for part in &frame.parts {
        match part {
            OutPart::Bytes(bytes) => length += bytes.len(),
            OutPart::File(_) => return false,
        }
    }
    if gathered.len() + length > GATHERED_RESPONSE_BYTES_MAX {
        return false;
    }
    for part in &frame.parts {
        if let OutPart::Bytes(bytes) = part {
            gathered.extend_from_slice(bytes);
        }
    }
    true
}

async fn send_gathered<W: futures::io::AsyncWrite + Unpin>(
    writer: &mut W,
    gathered: &mut Vec<u8>,
) -> std::io::Result<()> {
    if gathered.is_empty() {
        return Ok(());
    }
    writer.write_all(gathered).await?;
    gathered.clear();
    Ok(())
}

pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let open = shard.metrics.connections.get();
                let budget = shard.config.descriptors.connections_per_shard;
                if open as usize >= budget {
                    // Past its share of descriptors: refuse this one, keep
                    // the rest (partitions and connections) working.
                    let peer = stream
                        .peer_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    warn!(shard = shard.id, %peer, open, budget, "closing a new connection: this shard's connection budget (from the open-file limit) is spent");
                    drop(stream);
                    continue;
                }
                let shard = shard.clone();
                glommio::spawn_local(async move { serve(shard, stream).await }).detach();
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Bytes a connection reads from its socket at a time: a small request and
/// the next one's size prefix usually arrive in one recv. Larger frames
/// are read straight into their own buffer.
const SOCKET_READ_BUFFER_BYTES: usize = 8192;

async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let stream = stream.buffered_with(Preallocated::new(SOCKET_READ_BUFFER_BYTES));
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    debug!(shard = shard.id, %peer, "connection opened");
    let client_host = stream
        .peer_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default();
    shard
        .metrics
        .connections
        .set(shard.metrics.connections.get() + 1);
    let socket_fd = stream.as_raw_fd();
    let (mut reader, mut writer) = stream.split();
    let (queue, responses) =
        local_channel::new_bounded::<glommio::task::JoinHandle<Response>>(IN_FLIGHT_REQUESTS_MAX);
    let writer_peer = peer.clone();
    let splice = shard.splice.clone();
    let writer_task = glommio::spawn_local(async move {
        let mut gathered = Vec::new();
        loop {
            // Responses already answered go out together; before waiting
            // for one that is not, what was gathered is sent.
            let mut handle = match responses.recv().now_or_never() {
                Some(Some(handle)) => handle,
                Some(None) => break,
                None => {
                    if send_gathered(&mut writer, &mut gathered).await.is_err() {
                        return Some(writer);
                    }
                    match responses.recv().await {
                        Some(handle) => handle,
                        None => break,
                    }
                }
            };
            let response = match (&mut handle).now_or_never() {
                Some(response) => response,
                None => {
                    if send_gathered(&mut writer, &mut gathered).await.is_err() {
                        return Some(writer);
                    }
                    handle.await
                }
            };
            let Some(Some(frame)) = response else {
                continue;
            };
            if gather(&mut gathered, &frame) {
                continue;
            }
            let written = match send_gathered(&mut writer, &mut gathered).await {
                Ok(()) => write_frame(&mut writer, socket_fd, &splice, frame).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                debug!(peer = %writer_peer, error = %e, "write failed; closing");
                return Some(writer);
            }
        }
        if send_gathered(&mut writer, &mut gathered).await.is_err() {
            return Some(writer);
        }
        let _ = writer.flush().await;
        Some(writer)
    });
    let request_bytes_max = shard.config.request_bytes_max;
    let idle_ms_max = shard.config.connection_idle_ms_max;
    loop {
        let mut prefix = [0u8; 4];
        match with_timeout(idle_ms_max, reader.read_exact(&mut prefix)).await {
            Some(Ok(())) => {}
            Some(Err(_)) => break,
            None => {
                debug!(%peer, "closing idle connection (connections.max.idle.ms)");
                break;
            }
        }
        let size = match parse_frame_size(prefix, request_bytes_max) {
            Ok(size) => size,
            Err(e @ FrameError::TooLarge { .. }) | Err(e @ FrameError::TooSmall(_)) => {
                warn!(%peer, error = %e, "closing connection: bad frame");
                break;
            }
        };
        // Account the request's bytes before reading them; a request larger
        // than the whole budget takes all of it. One deadline covers the
        // wait for request memory and the body: a client whose frame cannot
        // be taken in time is closed, so no connection holds a place in the
        // memory queue for ever.
        let budget = shard.config.shard_request_bytes_max;
        let received = with_timeout(FRAME_READ_MS_MAX, async {
            let permit = shard
                .request_memory
                .acquire_static_permit(size.min(budget) as u64)
                .await
                .map_err(|_| None)?;
            let frame = read_frame(&mut reader, size).await.map_err(Some)?;
            Ok::<_, Option<std::io::Error>>((permit, frame))
        })
        .await;
        let (permit, frame) = match received {
            Some(Ok(received)) => received,
            Some(Err(_)) => break,
            None => {
                warn!(%peer, size, "closing connection: request memory and body not received within {FRAME_READ_MS_MAX} ms");
                break;
            }
        };
        match start_request(&shard, bytes::Bytes::from(frame), &client_host).await {
            Ok(response) => {
                let handle = glommio::spawn_local(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
                .detach();
                if queue.send(handle).await.is_err() {
                    break;
                }
            }
            Err(RequestError::Close(reason)) => {
                warn!(%peer, %reason, "closing connection");
                break;
            }
        }
    }
    drop(queue);
    // Answer what was already started, then close.
    if let Some(mut writer) = writer_task.await {
        let _ = writer.close().await;
    }
    shard
        .metrics
        .connections
        .set(shard.metrics.connections.get() - 1);
    debug!(shard = shard.id, %peer, "connection closed");
}
