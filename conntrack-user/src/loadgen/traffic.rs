//! Flows: UDP datagrams, TCP SYNs to closed ports, full TCP handshakes.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use super::NamespaceError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowKind {
    /// One UDP datagram per flow (the cheapest new entry).
    Udp,
    /// One TCP SYN per flow, to a closed port (answered with a reset).
    Syn,
    /// A complete TCP handshake and close per flow.
    Tcp,
}

impl FlowKind {
    pub fn name(self) -> &'static str {
        match self {
            FlowKind::Udp => "udp",
            FlowKind::Syn => "syn",
            FlowKind::Tcp => "tcp",
        }
    }
}

/// Ports used per destination address before moving to the next one.
const PORTS: u32 = 60_000;
const FIRST_PORT: u32 = 1024;

/// Hands out destinations no other thread uses: thread `i` of `n` takes
/// flow numbers i, i+n, i+2n... Flow k goes to 127.(1 + k / 60000 spread
/// over the rest of 127/8) : (1024 + k % 60000), so every flow is a new
/// tuple for about 16 billion flows.
#[derive(Clone, Debug)]
pub struct TupleCursor {
    next: u64,
    step: u64,
}

impl TupleCursor {
    pub fn new(thread: u32, threads: u32) -> Self {
        Self {
            next: u64::from(thread),
            step: u64::from(threads.max(1)),
        }
    }

    pub fn next_tuple(&mut self) -> SocketAddr {
        let k = self.next;
        self.next += self.step;
        let port = FIRST_PORT + (k % u64::from(PORTS)) as u32;
        // 127.1.0.0 onwards; host bits never all zero or all one.
        let host = (k / u64::from(PORTS)) as u32 % 0x00fe_ffff + 0x0001_0001;
        let addr = Ipv4Addr::from(0x7f00_0000 | host);
        SocketAddr::from((addr, port as u16))
    }
}

/// Keeps a thread at its share of the target rate.
#[derive(Debug)]
pub struct Pacer {
    per_sec: Option<u64>,
    ramp: Duration,
    start: Instant,
    done: u64,
}

impl Pacer {
    pub fn new(per_sec: Option<u64>, ramp: Option<Duration>) -> Self {
        Self {
            per_sec,
            ramp: ramp.unwrap_or(Duration::ZERO),
            start: Instant::now(),
            done: 0,
        }
    }

    /// Sleeps until the next flow is due (in steps of at least 1 ms, so the
    /// generator does not spin).
    pub fn wait(&mut self) {
        let Some(rate) = self.per_sec else { return };
        self.done += 1;
        let due = flow_due(self.done, rate, self.ramp);
        let now = self.start.elapsed();
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
        }
    }
}

/// When flow `k` (counting from 1) is due at `rate` flows/s, reached by a
/// linear ramp over `ramp`: during the ramp r·t²/2T flows have gone by time
/// t, so flow k is due at √(2kT/r); after it, one every 1/r.
pub fn flow_due(k: u64, rate: u64, ramp: Duration) -> Duration {
    let (k, r, t) = (k as f64, rate.max(1) as f64, ramp.as_secs_f64());
    let in_ramp = r * t / 2.0;
    let secs = if k <= in_ramp {
        (2.0 * k * t / r).sqrt()
    } else {
        t + (k - in_ramp) / r
    };
    Duration::from_secs_f64(secs)
}

/// Creates flows of one kind; lives on a thread inside the namespace.
pub struct Generator {
    kind: FlowKind,
    udp: Option<UdpSocket>,
    listener: Option<(TcpListener, u16)>,
}

impl Generator {
    pub fn new(kind: FlowKind) -> Result<Self, NamespaceError> {
        let mut g = Self {
            kind,
            udp: None,
            listener: None,
        };
        match kind {
            FlowKind::Udp => {
                g.udp =
                    Some(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(NamespaceError::Enter)?);
            }
            FlowKind::Tcp => {
                // Listening on all of 127/8 so every flow can use its own
                // destination address.
                let l =
                    TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(NamespaceError::Enter)?;
                let port = l.local_addr().map_err(NamespaceError::Enter)?.port();
                g.listener = Some((l, port));
            }
            FlowKind::Syn => {}
        }
        Ok(g)
    }

    pub fn flow(&mut self, dst: SocketAddr) -> io::Result<()> {
        match self.kind {
            FlowKind::Udp => match &self.udp {
                Some(s) => s.send_to(b"ctscope-load", dst).map(|_| ()),
                None => Err(io::ErrorKind::NotConnected.into()),
            },
            FlowKind::Syn => syn(dst),
            FlowKind::Tcp => match &self.listener {
                Some((l, port)) => {
                    let client = TcpStream::connect_timeout(
                        &SocketAddr::new(dst.ip(), *port),
                        Duration::from_secs(1),
                    )?;
                    let (server, _) = l.accept()?;
                    reset_on_close(&client);
                    drop(server);
                    drop(client);
                    Ok(())
                }
                None => Err(io::ErrorKind::NotConnected.into()),
            },
        }
    }
}

/// One SYN: a non-blocking connect, then close. The closed port answers
/// with a reset, which conntrack sees as the flow's reply.
fn syn(dst: SocketAddr) -> io::Result<()> {
    let stream = nonblocking_connect(dst)?;
    drop(stream);
    Ok(())
}

/// A non-blocking connect without extra crates: returns the owned fd.
fn nonblocking_connect(dst: SocketAddr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let SocketAddr::V4(v4) = dst else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    // SAFETY: plain socket syscalls; the fd is wrapped in OwnedFd at once.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(owned)
    }
}

/// SO_LINGER 0: close with a reset instead of lingering in TIME_WAIT, so a
/// long run does not run out of local ports.
fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a valid linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn threads_get_disjoint_fresh_tuples() {
        let mut seen = HashSet::new();
        for t in 0..3 {
            let mut c = TupleCursor::new(t, 3);
            for _ in 0..70_000 {
                let a = c.next_tuple();
                assert!(a.ip().is_loopback(), "{a}");
                assert!(a.port() >= 1024);
                assert!(seen.insert(a), "repeated {a}");
            }
        }
    }

    #[test]
    fn a_ramp_reaches_the_rate_at_its_end() {
        let secs = |k, ramp| flow_due(k, 1000, Duration::from_secs(ramp)).as_secs_f64();
        assert!((secs(500, 0) - 0.5).abs() < 1e-9, "no ramp: one every 1/r");
        // Over a 2 s ramp to 1000/s: 1000 flows by its end, a quarter of
        // them in its first half.
        assert!((secs(250, 2) - 1.0).abs() < 1e-9);
        assert!((secs(1000, 2) - 2.0).abs() < 1e-9);
        assert!((secs(2000, 2) - 3.0).abs() < 1e-9, "then at the rate");
        let gaps: Vec<f64> = (1..1000).map(|k| secs(k + 1, 2) - secs(k, 2)).collect();
        assert!(gaps.windows(2).all(|w| w[1] <= w[0]), "the rate only rises");
    }

    #[test]
    fn pacer_holds_the_rate() {
        let mut p = Pacer::new(Some(2000), None);
        let start = Instant::now();
        for _ in 0..200 {
            p.wait();
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(90), "{took:?}");
    }
}
