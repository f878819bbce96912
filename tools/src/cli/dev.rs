//! `gregor dev --brokers N`: a local cluster for trying Gregor out (N is the
//! global `--brokers` flag read as a count, 3 when not given). Starts N
//! brokers as child processes of this one (node ids 1..N, every one a voter
//! of the metadata quorum), data under one directory, ports 100 apart from
//! `--port` (Kafka port P, controller P+1, metrics P+552), and stops them all
//! on Ctrl-C or SIGTERM. A broker that exits on its own stops the others.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Kafka port of broker 1; broker i listens on this + 100 * (i - 1).
    #[arg(long, default_value_t = 9092)]
    port: u16,
    /// Directory holding each broker's data dir (node-1, ...) and log.
    #[arg(long, default_value = "./gregor-dev")]
    dir: PathBuf,
    /// Shards per broker.
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

/// How far apart the brokers' ports are.
const PORT_STRIDE: u16 = 100;

/// Brokers when `--brokers` is not given.
const BROKERS_DEFAULT: u16 = 3;

/// `brokers_flag`: the global `--brokers`, here a count of brokers.
pub fn run(args: DevArgs, brokers_flag: Option<&str>) -> anyhow::Result<()> {
    let brokers = match brokers_flag {
        None => BROKERS_DEFAULT,
        Some(text) => match text.parse::<u16>() {
            Ok(count) if count > 0 => count,
            _ => {
                bail!("gregor dev --brokers takes how many brokers to start (e.g. 3), not {text:?}")
            }
        },
    };
    let last_port = u32::from(args.port) + u32::from(PORT_STRIDE) * u32::from(brokers - 1) + 552;
    if last_port > u32::from(u16::MAX) {
        bail!(
            "--port {} leaves no room for {} brokers 100 ports apart",
            args.port,
            brokers
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create --dir {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the gregor binary")?;
    let port = |node: u16| args.port + PORT_STRIDE * (node - 1);
    let voters: Vec<String> = (1..=brokers)
        .map(|node| format!("{node}@127.0.0.1:{}", port(node) + 1))
        .collect();
    let voters = voters.join(",");
    // Stop signals wait here (sigtimedwait); children inherit the blocked
    // mask, which `gregor serve` expects anyway.
    let stop_signals = block_stop_signals();
    let mut children: Vec<(u16, Child)> = Vec::new();
    for node in 1..=brokers {
        let log_path = args.dir.join(format!("node-{node}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let listen = format!("127.0.0.1:{}", port(node));
        let child = Command::new(&exe)
            .arg("serve")
            .args(["--node-id", &node.to_string()])
            .arg("--data-dir")
            .arg(args.dir.join(format!("node-{node}")))
            .args(["--listen", &listen, "--advertise", &listen])
            .args([
                "--controller-listen",
                &format!("127.0.0.1:{}", port(node) + 1),
            ])
            .args(["--controller-quorum-voters", &voters])
            .args(["--shards", &args.shards.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start broker {node}"))?;
        eprintln!("broker {node}: {listen} (log {})", log_path.display());
        children.push((node, child));
    }
    let bootstrap: Vec<String> = (1..=brokers)
        .map(|node| format!("127.0.0.1:{}", port(node)))
        .collect();
    eprintln!(
        "bootstrap.servers={} — Ctrl-C stops every broker",
        bootstrap.join(",")
    );
    let mut failed = None;
    loop {
        if let Some(signal) = wait_signal(&stop_signals, Duration::from_millis(200)) {
            eprintln!("signal {signal}: stopping the brokers");
            break;
        }
        if let Some((node, status)) = children
            .iter_mut()
            .find_map(|(node, child)| Some((*node, child.try_wait().ok()??)))
        {
            eprintln!("broker {node} exited ({status}); stopping the others");
            failed = Some(node);
            break;
        }
    }
    for (_, child) in &children {
        // SAFETY: kill on our own children's pids.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for (node, child) in &mut children {
        let status = child.wait()?;
        eprintln!("broker {node} stopped ({status})");
    }
    match failed {
        Some(node) => bail!(
            "broker {node} exited on its own; see its log in {}",
            args.dir.display()
        ),
        None => Ok(()),
    }
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a set this function owns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid set and timeout; a null siginfo pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
    (signal > 0).then_some(signal)
}
