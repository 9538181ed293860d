//! `udpft`: the udpft client. See README.md.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use udpft::net::client::{self, ClientError, ClientOptions, exit_code};
use udpft::net::{addr, parse_timeout, shell};
use udpft::wire;

/// Move files to and from a udpftd server over UDP.
#[derive(Parser, Debug)]
#[command(name = "udpft", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Block size asked for, in bytes (the server may grant less).
    #[arg(long, global = true, default_value_t = wire::DEFAULT_BLOCK_SIZE,
          value_parser = clap::value_parser!(u32).range(wire::MIN_BLOCK_SIZE as i64..=wire::MAX_BLOCK_SIZE as i64))]
    block_size: u32,
    /// Ceiling of the retransmission timeout (e.g. 500ms, 2s, or plain seconds).
    #[arg(long, global = true, default_value = "1s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Give up after this long without progress (no new block acknowledged or
    /// received, however often packets were resent meanwhile).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_timeout)]
    idle: Duration,
    /// Print nothing on success (errors still go to stderr).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// One line per packet event on stderr.
    #[arg(long, global = true)]
    trace: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Download REMOTE into LOCAL (default: REMOTE's file name here; a directory: inside it).
    Get {
        server: String,
        remote: String,
        local: Option<PathBuf>,
    },
    /// Upload LOCAL as REMOTE (default: LOCAL's file name).
    Put {
        server: String,
        local: PathBuf,
        remote: Option<String>,
    },
    /// List a directory on the server (default: its root) on stdout.
    #[command(alias = "ls")]
    List { server: String, dir: Option<String> },
    /// Delete REMOTE on the server.
    #[command(alias = "rm")]
    Delete { server: String, remote: String },
    /// Ask the server to exit.
    Exit { server: String },
    /// An interactive ftp> shell (reads commands from stdin when it is not a terminal).
    Shell { server: String },
}

fn server_addr(s: &str) -> Result<SocketAddr, ClientError> {
    addr::resolve(s).map_err(|e| ClientError::local(format!("server '{s}': {e}")))
}

fn main() -> ExitCode {
    let a = Args::parse();
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            // A second Ctrl-C while the first is being handled: leave now.
            std::process::exit(exit_code::INTERRUPTED as i32);
        }
    });
    let opts = ClientOptions {
        block_size: a.block_size,
        timeout: a.timeout,
        idle: a.idle,
        quiet: a.quiet,
        trace: a.trace,
        progress: true,
        interrupt: Some(interrupt),
    };
    let summary = |r: client::Report| {
        if !opts.quiet {
            eprintln!("{r}");
        }
    };
    let result = match &a.cmd {
        Cmd::Get {
            server,
            remote,
            local,
        } => server_addr(server)
            .and_then(|s| client::get(s, remote, local.as_deref(), &opts))
            .map(summary),
        Cmd::Put {
            server,
            local,
            remote,
        } => server_addr(server)
            .and_then(|s| client::put(s, local, remote.as_deref(), &opts))
            .map(summary),
        Cmd::List { server, dir } => server_addr(server)
            .and_then(|s| client::list(s, dir.as_deref(), &opts))
            .map(|(text, _)| {
                // A closed stdout (`udpft list | head -1`) is not an error worth a panic.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
            }),
        Cmd::Delete { server, remote } => server_addr(server)
            .and_then(|s| client::delete(s, remote, &opts))
            .map(summary),
        Cmd::Exit { server } => server_addr(server)
            .and_then(|s| client::exit(s, &opts))
            .map(summary),
        Cmd::Shell { server } => match server_addr(server) {
            Ok(s) => return ExitCode::from(shell::run(s, server, &opts)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udpft: {e}");
            ExitCode::from(e.code)
        }
    }
}
