//! Shard 0's controller listener (`--controller-listen`): peers' raft
//! messages go to the quorum driver, their requests to this node's
//! controller, whose replies go back on the same connection.

use std::rc::Rc;
use std::time::Duration;

use engine::raft::decode_message;
use futures::future::LocalBoxFuture;
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::wire::{
    decode_request, encode_frame, encode_reply, read_frame, write_frame, ControllerReply,
    ControllerRequest, FrameKind,
};
use crate::controller::QuorumDriver;

/// Replies queued for one connection's writer.
const REPLIES_QUEUED_MAX: usize = 256;
/// Forwarded requests one connection may have in flight; past it the
/// listener stops reading that connection until one is answered (TCP then
/// pushes back on the peer, whose own queue refuses what does not fit).
const REQUESTS_IN_FLIGHT_MAX: u64 = 256;

/// Serves requests forwarded by peers (the controller, when it leads).
pub trait ControllerService {
    fn serve_forwarded(&self, request: ControllerRequest) -> LocalBoxFuture<'_, ControllerReply>;
}

pub async fn serve_controller_listener(
    listener: TcpListener,
    quorum: Rc<QuorumDriver>,
    service: Rc<dyn ControllerService>,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let (quorum, service) = (quorum.clone(), service.clone());
                glommio::spawn_local(serve_peer(stream, quorum, service)).detach();
            }
            Err(e) => {
                warn!(error = %e, "controller listener accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_peer(
    stream: TcpStream,
    quorum: Rc<QuorumDriver>,
    service: Rc<dyn ControllerService>,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let (mut reader, mut writer) = futures::io::AsyncReadExt::split(stream);
    let (replies, outgoing) = local_channel::new_bounded::<Vec<u8>>(REPLIES_QUEUED_MAX);
    let writer_task = glommio::spawn_local(async move {
        while let Some(frame) = outgoing.recv().await {
            if write_frame(&mut writer, &frame).await.is_err() {
                return;
            }
        }
    });
    let replies = Rc::new(replies);
    let in_flight = Rc::new(glommio::sync::Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(frame) => frame,
            Err(e) => {
                debug!(%peer, error = %e, "controller connection closed");
                break;
            }
        };
        match frame.kind {
            FrameKind::Raft => match decode_message(&frame.payload) {
                Ok(message) => quorum.deliver(message).await,
                Err(e) => {
                    warn!(%peer, error = %e, "undecodable raft message; closing");
                    break;
                }
            },
            FrameKind::Request => {
                let request = match decode_request(&frame.payload) {
                    Ok(request) => request,
                    Err(e) => {
                        warn!(%peer, error = %e, "undecodable controller request; closing");
                        break;
                    }
                };
                let Ok(permit) = in_flight.acquire_static_permit(1).await else {
                    break;
                };
                let (service, replies) = (service.clone(), replies.clone());
                glommio::spawn_local(async move {
                    let _permit = permit;
                    let reply = service.serve_forwarded(request).await;
                    let frame =
                        encode_frame(FrameKind::Reply, frame.correlation, &encode_reply(&reply));
                    let _ = replies.send(frame).await;
                })
                .detach();
            }
            FrameKind::Reply => {
                warn!(%peer, "a peer sent a reply to a listener; closing");
                break;
            }
        }
    }
    drop(replies);
    drop(writer_task.cancel());
}
