//! One live stream per agent id. An agent's id is its certificate's name,
//! and a second stream for an id that is connected is refused
//! (`AlreadyExists`, naming where the first is connected from), never let
//! take the first one's tasks: two live streams for one id are a copied
//! certificate or a misconfigured host, and the operator must hear of it.
//! A stream stops counting as live as soon as either side of it ends (the
//! agent's frames, or the replies the engine let go of), so an agent that
//! lost its stream gets in again at its next try.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::Status;

use crate::observe::refusals::LogRate;

#[derive(Default)]
pub struct LiveAgents {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Live>,
    refusals: LogRate,
}

struct Live {
    conn: u64,
    peer: Option<SocketAddr>,
}

impl LiveAgents {
    /// Claims `agent_id` for stream `conn` from `peer`, or refuses it while
    /// another stream holds the id. The claim lasts until every handle of
    /// it is dropped, or one is released.
    pub fn claim(
        self: &Arc<Self>,
        agent_id: &str,
        conn: u64,
        peer: Option<SocketAddr>,
    ) -> Result<Claim, Status> {
        let mut inner = self.lock();
        if let Some(live) = inner.by_id.get(agent_id) {
            let (first, first_conn) = (live.peer, live.conn);
            let noted = inner.refusals.note(Instant::now());
            if let Some(untold) = noted.untold {
                crate::observe::refusals::warn_untold(
                    agent_id,
                    "refused {} more second streams for",
                    untold,
                );
            }
            if noted.tell {
                tracing::warn!(
                    agent_id,
                    peer = peer.map(|p| p.to_string()),
                    connected_from = first.map(|p| p.to_string()),
                    conn = first_conn,
                    "refused a second stream for an agent that is connected"
                );
            }
            return Err(Status::already_exists(format!(
                "agent {agent_id:?} is already connected from {}; one stream per agent id \
                 (is its certificate in use on two hosts?)",
                first.map_or_else(|| "an unknown address".to_string(), |p| p.to_string())
            )));
        }
        inner
            .by_id
            .insert(agent_id.to_string(), Live { conn, peer });
        Ok(Claim(Arc::new(Held {
            agents: self.clone(),
            agent_id: agent_id.to_string(),
            conn,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream's hold on its agent id. Both halves of the stream keep a
/// handle; dropping either lets the id go.
pub struct Claim(Arc<Held>);

impl Claim {
    /// A second handle to the same claim.
    pub fn handle(&self) -> Claim {
        Claim(self.0.clone())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.release();
    }
}

struct Held {
    agents: Arc<LiveAgents>,
    agent_id: String,
    conn: u64,
}

impl Held {
    fn release(&self) {
        let mut inner = self.agents.lock();
        if inner
            .by_id
            .get(&self.agent_id)
            .is_some_and(|l| l.conn == self.conn)
        {
            inner.by_id.remove(&self.agent_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_until_either_handle_goes() {
        let agents = Arc::new(LiveAgents::default());
        let first = agents
            .claim("agent_001", 1, Some("10.0.0.1:5000".parse().unwrap()))
            .unwrap();
        let other = first.handle();
        let refused = agents.claim("agent_001", 2, None).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::AlreadyExists);
        assert!(
            refused.message().contains("\"agent_001\"")
                && refused.message().contains("10.0.0.1:5000"),
            "{}",
            refused.message()
        );
        agents.claim("agent_002", 3, None).unwrap();
        drop(first);
        let again = agents.claim("agent_001", 4, None).unwrap();
        // The old stream's other half going later lets go of nothing new.
        drop(other);
        assert!(agents.claim("agent_001", 5, None).is_err());
        drop(again);
    }
}
