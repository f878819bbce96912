//! CPU time and resident memory of a process, read from /proc, and the pid of
//! the process listening on a local TCP port (to find the broker by its
//! bootstrap address when no --broker-pid is given).

use std::fs;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime of all threads, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    Some(ProcSample {
        at: Instant::now(),
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
        rss_bytes: parse_statm_resident_pages(&statm)? * page_size(),
    })
}

/// utime + stime from /proc/PID/stat. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after the last ')'.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn parse_statm_resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// CPU use between two samples in percent of one core (200% = two cores busy).
pub fn cpu_percent(a: &ProcSample, b: &ProcSample, ticks_per_sec: u64) -> Option<f64> {
    let dt = b.at.checked_duration_since(a.at)?.as_secs_f64();
    if dt <= 0.0 || b.cpu_ticks < a.cpu_ticks {
        return None;
    }
    Some((b.cpu_ticks - a.cpu_ticks) as f64 / ticks_per_sec as f64 / dt * 100.0)
}

/// Socket inodes listening on `port` in a /proc/net/tcp(6) table.
pub fn parse_listen_inodes(table: &str, port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue; // 0A = TCP_LISTEN
        }
        let local_port = f[1]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        if local_port == Some(port) {
            if let Ok(inode) = f[9].parse() {
                out.push(inode);
            }
        }
    }
    out
}

/// The pid of a process that has a socket listening on local `port`, if one
/// can be seen (needs permission to read other processes' fds).
pub fn find_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = fs::read_to_string(table) {
            inodes.extend(parse_listen_inodes(&t, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let stat = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000000 300 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn statm() {
        assert_eq!(
            parse_statm_resident_pages("1000 250 30 1 0 400 0\n"),
            Some(250)
        );
        assert_eq!(parse_statm_resident_pages(""), None);
    }

    #[test]
    fn net_tcp_listeners() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_listen_inodes(table, 8080), vec![4242]);
        assert_eq!(parse_listen_inodes(table, 22), vec![77]);
        assert!(parse_listen_inodes(table, 9092).is_empty());
    }

    #[test]
    fn own_process_is_readable() {
        let a = sample(std::process::id()).expect("own /proc entry");
        assert!(a.rss_bytes > 0);
        let b = ProcSample {
            at: a.at + std::time::Duration::from_secs(2),
            cpu_ticks: a.cpu_ticks + clock_ticks_per_sec(),
            rss_bytes: a.rss_bytes,
        };
        let pct = cpu_percent(&a, &b, clock_ticks_per_sec()).unwrap();
        assert!((pct - 50.0).abs() < 1e-9);
    }

    #[test]
    fn finds_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(find_listener_pid(port), Some(std::process::id()));
    }
}
