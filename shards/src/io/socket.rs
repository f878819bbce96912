//! Raw socket set-up that glommio does not offer: listeners with the
//! options Gregor needs, handed to glommio.

/// Listen backlog per shard listener.
const LISTEN_BACKLOG: i32 = 1024;

/// A listening socket with SO_REUSEPORT (one per shard, the kernel spreads
/// connections) and SO_REUSEADDR (so a restart after a crash binds at once
/// although the old connections sit in TIME_WAIT, as Kafka does), handed to
/// glommio.
pub fn bind_listener(
    addr: std::net::SocketAddr,
    reuse_port: bool,
) -> std::io::Result<glommio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor this function owns; on
    // every error path it is closed before returning.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fail = |fd: i32| {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            Err(e)
        };
        let one: libc::c_int = 1;
        let options: &[libc::c_int] = if reuse_port {
            &[libc::SO_REUSEADDR, libc::SO_REUSEPORT]
        } else {
            &[libc::SO_REUSEADDR]
        };
        for &option in options {
            let set = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if set != 0 {
                return fail(fd);
            }
        }
        let bound = match addr {
            std::net::SocketAddr::V4(v4) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = v4.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                libc::bind(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            std::net::SocketAddr::V6(v6) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = v6.port().to_be();
                sa.sin6_addr.s6_addr = v6.ip().octets();
                sa.sin6_scope_id = v6.scope_id();
                libc::bind(
                    fd,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if bound != 0 || libc::listen(fd, LISTEN_BACKLOG) != 0 {
            return fail(fd);
        }
        Ok(glommio::net::TcpListener::from_raw_fd(fd))
    }
}
