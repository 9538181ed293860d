//! The sockets of TFTP transfers: one per transfer, on the listening address and an
//! ephemeral port, as RFC 1350's transfer IDs ask (TFTP.md §3.1). The endpoint decides
//! when one opens and closes ([`crate::engine::tftp::PortRequest`]); this only holds
//! them, so that the server loop can poll, read and send on them.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::engine::tftp::TransferId;

/// The open transfer sockets, by transfer.
pub struct TftpPorts {
    ip: IpAddr,
    socks: HashMap<TransferId, (UdpSocket, SocketAddr)>,
}

impl TftpPorts {
    /// Sockets will be bound to `ip` (the listening address: a specific one, or the
    /// wildcard, in which case the kernel picks the source address by route).
    pub fn new(ip: IpAddr) -> TftpPorts {
        TftpPorts {
            ip,
            socks: HashMap::new(),
        }
    }

    /// Opens transfer `id`'s socket on an ephemeral port.
    pub fn open(&mut self, id: TransferId) -> io::Result<()> {
        let sock = UdpSocket::bind(SocketAddr::new(self.ip, 0))?;
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        self.socks.insert(id, (sock, local));
        Ok(())
    }

    /// Closes transfer `id`'s socket (a no-op if it has none).
    pub fn close(&mut self, id: TransferId) {
        self.socks.remove(&id);
    }

    /// Transfer `id`'s socket and its local address.
    pub fn get(&self, id: TransferId) -> Option<&(UdpSocket, SocketAddr)> {
        self.socks.get(&id)
    }

    /// Every open socket, with its transfer.
    pub fn iter(&self) -> impl Iterator<Item = (TransferId, &UdpSocket, SocketAddr)> {
        self.socks.iter().map(|(id, (s, a))| (*id, s, *a))
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_distinct_ephemeral_ports_and_closes_them() {
        let mut p = TftpPorts::new("127.0.0.1".parse().unwrap());
        p.open(1).unwrap();
        p.open(2).unwrap();
        let a = p.get(1).unwrap().1;
        let b = p.get(2).unwrap().1;
        assert_ne!(a.port(), b.port());
        assert!(a.ip().is_loopback());
        p.close(1);
        p.close(7);
        assert_eq!(p.len(), 1);
        assert!(p.get(1).is_none());
    }
}
