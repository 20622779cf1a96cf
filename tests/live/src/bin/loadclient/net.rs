//! Sockets as the load client uses them: many connections from a few loopback addresses, each
//! read with the kernel's arrival time stamp, and the CPU clocks of this process and the
//! server's.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, bail};
use io360_live_tests::{RawAnswer, take_answer};
use tokio::io::Interest;
use tokio::net::{TcpSocket, TcpStream};

/// Opens a connection from `source` to `addr`, with arrival stamps switched on.
pub async fn connect(source: IpAddr, addr: SocketAddr) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    bind_without_port(&sock);
    sock.bind(SocketAddr::new(source, 0))?;
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    stamp_arrivals(&s)?;
    Ok(s)
}

/// Lets the kernel pick the source port at `connect` instead of at `bind`: binding tens of
/// thousands of sockets to one address with port 0 otherwise scans every bound port each time.
fn bind_without_port(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    // Without it binding is only slower.
    let _ = switch_on(
        sock.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
    );
}

/// Asks the kernel to stamp what this socket receives with the time it arrived.
pub fn stamp_arrivals(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    switch_on(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)
}

/// Sets a socket option that takes an int to 1.
fn switch_on(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a socket descriptor and a c_int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One `recvmsg` into `buf`'s spare room: the bytes read and the arrival time stamp of the
/// last segment among them (ns since the Unix epoch), if the kernel gave one.
fn recv_stamped_once(fd: libc::c_int, buf: &mut Vec<u8>) -> std::io::Result<(usize, Option<u64>)> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // Room for a few control messages, aligned for `cmsghdr`.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` describes the spare room of `buf` and `control`, both valid for writes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote `n` bytes into the spare room.
    unsafe { buf.set_len(buf.len() + n as usize) };
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// Reads what has arrived on `s` into `buf`: the number of bytes (0 when the peer closed) and
/// the arrival stamp of the last of them (ns since the Unix epoch), if the kernel gave one.
pub async fn read_some(s: &TcpStream, buf: &mut Vec<u8>) -> Result<(usize, Option<u64>)> {
    use std::os::fd::AsRawFd;
    loop {
        s.readable().await?;
        match s.try_io(Interest::READABLE, || recv_stamped_once(s.as_raw_fd(), buf)) {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads the next answer from `s`, with the time its last bytes arrived in the socket (ns
/// since the Unix epoch; 0 if the kernel gave no stamp).
pub async fn read_stamped(s: &TcpStream, buf: &mut Vec<u8>) -> Result<(RawAnswer, u64)> {
    let mut arrived = 0;
    loop {
        if let Some(a) = take_answer(buf)? {
            return Ok((a, arrived));
        }
        match read_some(s, buf).await? {
            (0, _) => bail!("the connection closed before a whole answer"),
            (_, stamp) => arrived = stamp.unwrap_or(arrived),
        }
    }
}

/// Now on the kernel's clock for receive stamps (ns since the Unix epoch).
pub fn epoch_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// CPU time (user and system) this process has used, in microseconds.
pub fn own_cpu_us() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// CPU time (user and system) of the given processes, in microseconds (clock-tick grained).
pub fn procs_cpu_us(pids: &str) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    pids.split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|s| {
            // Fields after the command name, which ends at the last ')'.
            let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (ticks(11) + ticks(12)) * 1_000_000 / hz
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{epoch_ns, read_stamped, stamp_arrivals};
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn an_answer_is_stamped_with_when_its_last_bytes_arrived() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        stamp_arrivals(&client).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // The head now, the body 50 ms later: the stamp is the body's.
        server
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let before = epoch_ns();
            server.write_all(b"hello").unwrap();
            (before, server)
        });
        let mut buf = Vec::new();
        let (answer, arrived) = read_stamped(&client, &mut buf).await.unwrap();
        let read = epoch_ns();
        let (body_sent, _server) = writer.join().unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"hello");
        assert!(
            (body_sent..=read).contains(&arrived),
            "stamp {arrived} outside [{body_sent}, {read}]"
        );
    }
}
