//! This broker's side of liveness: register with the quorum leader's
//! controller (as a new incarnation at every start), then heartbeat with the
//! metadata index every shard applied; register again if the controller no
//! longer knows the registration. Start-up waits until the image shows this
//! incarnation unfenced, so a broker serves clients only once the cluster
//! counts it live (Kafka's brokers wait for that too).

use std::rc::Rc;
use std::time::Duration;

use engine::metadata::BrokerRegistration;
use engine::protocol as codes;
use tracing::{debug, info};

use super::Controller;
use crate::cluster::wire::{ControllerReply, ControllerRequest};
use crate::stop::StopFlag;

/// Pause before retrying a registration or heartbeat the leader refused or
/// did not answer (an election, a leader still starting).
const RETRY_PAUSE_MS: u64 = 50;
/// How often a fenced broker asks again (it waits to be unfenced).
const FENCED_HEARTBEAT_MS: u64 = 20;
/// The least time a registration or heartbeat waits for the leader's
/// answer; at most one heartbeat interval otherwise, so a leader that died
/// mid-call costs one heartbeat, not the session.
const CALL_TIMEOUT_MS_MIN: u64 = 500;

pub struct BrokerLifecycle {
    controller: Rc<Controller>,
    registration: BrokerRegistration,
}

impl BrokerLifecycle {
    pub fn start(
        controller: Rc<Controller>,
        registration: BrokerRegistration,
        heartbeat_interval_ms: u64,
        task_queue: glommio::TaskQueueHandle,
        stop: StopFlag,
    ) -> Result<Rc<BrokerLifecycle>, String> {
        let lifecycle = Rc::new(BrokerLifecycle {
            controller,
            registration,
        });
        glommio::spawn_local_into(
            lifecycle.clone().run(heartbeat_interval_ms, stop),
            task_queue,
        )
        .map_err(|e| e.to_string())?
        .detach();
        Ok(lifecycle)
    }

    /// Whether this broker's image shows this incarnation unfenced.
    pub fn is_unfenced(&self) -> bool {
        let image = self.controller.backend.image();
        image.broker(self.registration.node_id).is_some_and(|b| {
            b.registration.incarnation_id == self.registration.incarnation_id && !b.fenced
        })
    }

    /// Waits until this incarnation is unfenced (or the broker stops).
    pub async fn wait_unfenced(&self, stop: &StopFlag) {
        while !self.is_unfenced() && !stop.is_raised() {
            glommio::timer::sleep(Duration::from_millis(FENCED_HEARTBEAT_MS)).await;
        }
    }

    async fn run(self: Rc<Self>, heartbeat_interval_ms: u64, stop: StopFlag) {
        let node_id = self.registration.node_id;
        let timeout_ms = heartbeat_interval_ms.max(CALL_TIMEOUT_MS_MIN);
        while !stop.is_raised() {
            let request = ControllerRequest::RegisterBroker(self.registration.clone());
            let broker_epoch = match self.controller.ask_leader(request, timeout_ms).await {
                ControllerReply::Registered(Ok(epoch)) => epoch,
                reply => {
                    debug!(?reply, "broker registration refused; retrying");
                    glommio::timer::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                    continue;
                }
            };
            info!(node_id, broker_epoch, "registered with the metadata quorum");
            while !stop.is_raised() {
                let request = ControllerRequest::BrokerHeartbeat {
                    node_id,
                    broker_epoch,
                    applied_index: self.controller.quorum.applied_index(),
                };
                let pause_ms = match self.controller.ask_leader(request, timeout_ms).await {
                    ControllerReply::Heartbeat(Ok(true)) => FENCED_HEARTBEAT_MS,
                    ControllerReply::Heartbeat(Ok(false)) => heartbeat_interval_ms,
                    ControllerReply::Heartbeat(Err(codes::STALE_BROKER_EPOCH)) => {
                        info!(
                            node_id,
                            broker_epoch,
                            "the controller no longer knows this registration; registering again"
                        );
                        break;
                    }
                    reply => {
                        debug!(?reply, "broker heartbeat not answered; retrying");
                        RETRY_PAUSE_MS
                    }
                };
                glommio::timer::sleep(Duration::from_millis(pause_ms)).await;
            }
        }
    }
}
