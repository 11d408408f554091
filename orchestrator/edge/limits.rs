//! How many connections the port holds, and whose: a cap on all of them
//! below the process's open-file limit, a cap per peer address, and a
//! reserve that only operators' connections may take, so `status` and
//! `agents` still get in when agents (or a flood) fill the port. A
//! connection holds its `Slot` for as long as it is open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use testfleet::config::defaults;

/// The listener's limits (`orchestrator serve` flags; defaults in
/// `testfleet::config::defaults`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open connections at most, the reserve included.
    pub max_connections: usize,
    /// Open connections from one address at most.
    pub max_per_peer: usize,
    /// Of `max_connections`, kept for operators.
    pub operator_reserve: usize,
    /// For the TLS handshake, or on plaintext the first bytes.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: defaults::MAX_CONNECTIONS,
            max_per_peer: defaults::MAX_CONNECTIONS_PER_PEER,
            operator_reserve: defaults::OPERATOR_RESERVE,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
        }
    }
}

impl Limits {
    /// These limits with the connection cap fitted under `open_files` (the
    /// process's open-file limit), less the descriptors kept for files, and
    /// the reserve at most half the cap.
    pub fn fitted(mut self, open_files: u64) -> Limits {
        let headroom = (open_files / defaults::FD_HEADROOM_SHARE).max(defaults::FD_HEADROOM_MIN);
        let room = usize::try_from(open_files.saturating_sub(headroom)).unwrap_or(usize::MAX);
        self.max_connections = self.max_connections.min(room).max(1);
        self.operator_reserve = self.operator_reserve.min(self.max_connections / 2);
        self.max_per_peer = self.max_per_peer.max(1);
        self
    }
}

/// Raises this process's soft open-file limit to its hard limit (as Go's
/// runtime does: the soft limit of 1,024 many systems start a service with
/// is a compatibility default, not a budget) and returns the limit now in
/// force.
pub fn raise_open_file_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| anyhow::anyhow!("reading the open-file limit: {e}"))?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Ok(hard),
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit"),
        }
    }
    Ok(soft)
}

/// Who a new connection may be, as far as the reserve is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// May take the reserve: on plaintext an operator's address; under
    /// TLS one that still has to show an admin certificate.
    Operator,
    /// Plaintext from any other address: never the reserve.
    Other,
    /// TLS from any other address, before its handshake: one reserved slot
    /// per address at a time, while it shows who it is.
    Unverified,
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address has `max_per_peer` open already.
    PeerFull,
    /// Every slot it may take is taken.
    PortFull,
}

/// The plaintext operator's addresses: a CLI on the orchestrator's own host
/// (agents on other hosts never come from them).
pub fn is_operator_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == std::net::Ipv6Addr::LOCALHOST
                || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
    }
}

/// The count of open connections, by pool and by address.
pub struct Gate {
    limits: Limits,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    general: usize,
    reserved: usize,
    peers: HashMap<IpAddr, Peer>,
}

#[derive(Default)]
struct Peer {
    open: usize,
    /// Reserved slots held by unverified TLS connections.
    unverified: usize,
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            open: Mutex::new(Open::default()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // The counts stay consistent whatever panicked while holding them.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, caller: Caller) -> Result<Slot, Refused> {
        let general_max = self.limits.max_connections - self.limits.operator_reserve;
        let mut open = self.lock();
        let open = &mut *open;
        let peer = open.peers.get(&ip);
        if peer.is_some_and(|p| p.open >= self.limits.max_per_peer) {
            return Err(Refused::PeerFull);
        }
        let reserved = if open.general < general_max {
            open.general += 1;
            false
        } else {
            let may = match caller {
                Caller::Operator => true,
                Caller::Other => false,
                Caller::Unverified => peer.is_none_or(|p| p.unverified == 0),
            };
            if !may || open.reserved >= self.limits.operator_reserve {
                return Err(Refused::PortFull);
            }
            open.reserved += 1;
            true
        };
        let unverified = reserved && caller == Caller::Unverified;
        let peer = open.peers.entry(ip).or_default();
        peer.open += 1;
        peer.unverified += usize::from(unverified);
        Ok(Slot {
            gate: self.clone(),
            ip,
            reserved,
            unverified,
        })
    }

    /// Connections open now, the reserve included.
    pub fn open(&self) -> usize {
        let open = self.lock();
        open.general + open.reserved
    }
}

/// One open connection's place; given back when dropped.
pub struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
    reserved: bool,
    unverified: bool,
}

impl Slot {
    /// Whether it is one of the operators' reserve.
    pub fn reserved(&self) -> bool {
        self.reserved
    }

    /// The connection has shown who it is: its address may try another
    /// reserved slot.
    pub fn verified(&mut self) {
        if std::mem::take(&mut self.unverified) {
            if let Some(p) = self.gate.lock().peers.get_mut(&self.ip) {
                p.unverified -= 1;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        if self.reserved {
            open.reserved -= 1;
        } else {
            open.general -= 1;
        }
        if let Some(p) = open.peers.get_mut(&self.ip) {
            p.open -= 1;
            p.unverified -= usize::from(self.unverified);
            if p.open == 0 {
                open.peers.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, per_peer: usize, reserve: usize) -> Arc<Gate> {
        Gate::new(Limits {
            max_connections: max,
            max_per_peer: per_peer,
            operator_reserve: reserve,
            ..Limits::default()
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_cap_fits_under_the_open_file_limit() {
        let fitted = Limits::default().fitted(20_000);
        assert_eq!(fitted.max_connections, 16_384, "the default, under 18,000");
        assert_eq!(Limits::default().fitted(1024).max_connections, 1024 - 128);
        let tiny = Limits::default().fitted(100);
        assert_eq!((tiny.max_connections, tiny.operator_reserve), (1, 0));
    }

    #[test]
    fn one_address_gets_at_most_its_share() {
        let gate = gate(100, 3, 10);
        let held: Vec<_> = (0..3)
            .map(|_| gate.admit(ip(1), Caller::Other).unwrap())
            .collect();
        assert_eq!(
            gate.admit(ip(1), Caller::Other).err(),
            Some(Refused::PeerFull)
        );
        assert!(
            gate.admit(ip(2), Caller::Other).is_ok(),
            "others still get in"
        );
        drop(held);
        assert!(gate.admit(ip(1), Caller::Other).is_ok(), "slots come back");
    }

    #[test]
    fn when_the_port_is_full_only_operators_get_in() {
        let gate = gate(10, 100, 3);
        let general: Vec<_> = (0..7)
            .map(|i| gate.admit(ip(i), Caller::Other).unwrap())
            .collect();
        assert_eq!(
            gate.admit(ip(50), Caller::Other).err(),
            Some(Refused::PortFull)
        );
        let operator = gate.admit(ip(60), Caller::Operator).unwrap();
        assert!(operator.reserved());
        assert_eq!(gate.open(), 8);
        drop(general);
        assert!(!gate.admit(ip(50), Caller::Other).unwrap().reserved());
    }

    #[test]
    fn an_unverified_address_holds_one_reserved_slot_until_it_is_verified() {
        let gate = gate(4, 100, 2);
        let _general: Vec<_> = (0..2)
            .map(|i| gate.admit(ip(i), Caller::Other).unwrap())
            .collect();
        let mut first = gate.admit(ip(9), Caller::Unverified).unwrap();
        assert!(first.reserved());
        assert_eq!(
            gate.admit(ip(9), Caller::Unverified).err(),
            Some(Refused::PortFull),
            "a second handshake from the same address waits"
        );
        first.verified();
        let second = gate.admit(ip(9), Caller::Unverified).unwrap();
        assert!(second.reserved());
        assert_eq!(
            gate.admit(ip(8), Caller::Operator).err(),
            Some(Refused::PortFull),
            "the reserve is full"
        );
        drop((first, second));
        assert_eq!(gate.open(), 2);
    }

    #[test]
    fn only_localhost_is_an_operator_address_on_plaintext() {
        assert!(is_operator_address("127.0.0.1".parse().unwrap()));
        assert!(is_operator_address("::1".parse().unwrap()));
        assert!(is_operator_address("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_operator_address("127.0.0.2".parse().unwrap()));
        assert!(!is_operator_address("10.0.0.5".parse().unwrap()));
    }
}
