//! The quorum leader's side of broker liveness (Kafka's BrokerRegistration
//! and BrokerHeartbeat): registrations become `RegisterBroker` records, a
//! registered broker starts fenced and is unfenced once it has applied the
//! metadata up to its registration, and a broker whose heartbeats stop for
//! `broker.session.timeout.ms` is fenced (it leads nothing and leaves every
//! ISR; `engine::metadata::fence_broker`).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use engine::metadata::{
    fence_broker, register_broker, unfence_broker, BrokerRegistration, BrokerSessions,
};
use engine::protocol::{self as codes, ErrorCode};
use tracing::{info, warn};

use super::Controller;
use crate::clock::steady_ms;
use crate::stop::StopFlag;

/// What the leading controller remembers of brokers (not in the image: a
/// new leader starts over, renewing every session).
#[derive(Debug, Default)]
pub struct BrokerRegistry {
    sessions: BrokerSessions,
    /// The applied index a broker must reach before it is unfenced: its
    /// registration's, as this controller saw it committed.
    registered_at: BTreeMap<i32, u64>,
    /// The quorum term these sessions belong to.
    term: u64,
}

impl Controller {
    /// Registers a broker (starting fenced); returns its broker epoch.
    pub(super) async fn register_broker(
        &self,
        registration: BrokerRegistration,
    ) -> Result<i64, ErrorCode> {
        let _permit = self.busy.acquire_permit(1).await;
        self.current().await?;
        let node_id = registration.node_id;
        let records = register_broker(&self.backend.image(), &registration);
        self.commit_metadata(&records).await?;
        let epoch = self
            .backend
            .image()
            .broker(node_id)
            .map(|b| b.broker_epoch)
            .ok_or(codes::UNKNOWN_SERVER_ERROR)?;
        let mut brokers = self.brokers.borrow_mut();
        brokers.sessions.heartbeat(node_id, epoch, steady_ms());
        brokers
            .registered_at
            .insert(node_id, self.quorum.applied_index());
        if !records.is_empty() {
            info!(
                node_id,
                broker_epoch = epoch,
                "broker registered (fenced until it catches up)"
            );
        }
        Ok(epoch)
    }

    /// A broker's heartbeat: renews its session and, once it has applied
    /// the metadata up to its registration, unfences it. Ok(still fenced).
    pub(super) async fn broker_heartbeat(
        &self,
        node_id: i32,
        broker_epoch: i64,
        applied_index: u64,
    ) -> Result<bool, ErrorCode> {
        if !self.quorum.view().is_leader {
            return Err(codes::NOT_CONTROLLER);
        }
        let fenced = {
            let image = self.backend.image();
            match image.broker(node_id) {
                Some(b) if b.broker_epoch == broker_epoch => b.fenced,
                _ => return Err(codes::STALE_BROKER_EPOCH),
            }
        };
        let required = {
            let mut brokers = self.brokers.borrow_mut();
            brokers
                .sessions
                .heartbeat(node_id, broker_epoch, steady_ms());
            *brokers
                .registered_at
                .entry(node_id)
                .or_insert(self.quorum.applied_index())
        };
        if !fenced || applied_index < required {
            return Ok(fenced);
        }
        let _permit = self.busy.acquire_permit(1).await;
        self.current().await?;
        let records = {
            let image = self.backend.image();
            match image.broker(node_id) {
                Some(b) if b.broker_epoch == broker_epoch && b.fenced => {
                    unfence_broker(&image, node_id)
                }
                Some(b) if b.broker_epoch == broker_epoch => return Ok(false),
                _ => return Err(codes::STALE_BROKER_EPOCH),
            }
        };
        self.commit_metadata(&records).await?;
        info!(node_id, broker_epoch, "broker unfenced");
        Ok(false)
    }

    /// While this node leads: fences brokers whose sessions expired. A new
    /// leader first renews every session (it has heard nobody yet).
    pub async fn fence_expired_brokers(
        self: Rc<Self>,
        heartbeat_interval_ms: u64,
        session_timeout_ms: u64,
        stop: StopFlag,
    ) {
        let period = Duration::from_millis((heartbeat_interval_ms / 2).max(10));
        while !stop.is_raised() {
            glommio::timer::sleep(period).await;
            let view = self.quorum.view();
            if !view.is_leader {
                continue;
            }
            let expired = {
                let image = self.backend.image();
                let mut brokers = self.brokers.borrow_mut();
                if brokers.term != view.term {
                    brokers.term = view.term;
                    brokers.sessions.renew_all(&image, steady_ms());
                    brokers.registered_at.clear();
                }
                brokers
                    .sessions
                    .expired(&image, steady_ms(), session_timeout_ms as i64)
            };
            for node_id in expired {
                if let Err(error) = self.fence(node_id).await {
                    warn!(
                        node_id,
                        error, "could not fence a broker whose session expired"
                    );
                }
            }
        }
    }

    async fn fence(&self, node_id: i32) -> Result<(), ErrorCode> {
        let _permit = self.busy.acquire_permit(1).await;
        self.current().await?;
        let records = fence_broker(&self.backend.image(), node_id);
        self.commit_metadata(&records).await?;
        if !records.is_empty() {
            let partitions = records.len() - 1;
            info!(node_id, partitions, "broker fenced: its session expired");
        }
        Ok(())
    }
}
