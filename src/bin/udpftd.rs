//! `udpftd`: the udpft server. See README.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use udpft::net::server::{Server, ServerOptions, Verbosity};
use udpft::net::{addr, parse_timeout};
use udpft::wire;

/// Serve files over UDP with stop-and-wait acknowledgements.
#[derive(Parser, Debug)]
#[command(name = "udpftd", version)]
struct Args {
    /// Directory to serve; every path is confined to it.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Address and port to listen on, e.g. 0.0.0.0:6969 or [::]:6969.
    #[arg(long, default_value = "0.0.0.0:6969")]
    listen: String,
    /// Most sessions at once; more clients are answered "busy".
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions: u64,
    /// Let put replace existing files.
    #[arg(long)]
    overwrite: bool,
    /// Refuse put and delete.
    #[arg(long)]
    read_only: bool,
    /// Allow delete.
    #[arg(long)]
    allow_delete: bool,
    /// Allow a client to stop the server with exit.
    #[arg(long)]
    allow_exit: bool,
    /// Largest block size granted to a client, in bytes.
    #[arg(long, default_value_t = wire::MAX_BLOCK_SIZE,
          value_parser = clap::value_parser!(u32).range(wire::MIN_BLOCK_SIZE as i64..=wire::MAX_BLOCK_SIZE as i64))]
    max_block_size: u32,
    /// Ceiling of the retransmission timeout (e.g. 500ms, 2s, or plain seconds).
    #[arg(long, default_value = "1s", value_parser = parse_timeout)]
    timeout: Duration,
    /// A session without progress for this long (no new block acknowledged or
    /// received, whatever the client sends) is dropped; an upload's data is discarded.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    idle: Duration,
    /// On SIGINT/SIGTERM, how long transfers in flight may still run.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    grace: Duration,
    /// No log lines (only errors of the server itself).
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// More log lines: session starts, rtt, dropped datagrams.
    #[arg(short, long)]
    verbose: bool,
    /// One line per packet event.
    #[arg(long)]
    trace: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let listen = match addr::resolve(&a.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("udpftd: --listen {}: {e}", a.listen);
            return ExitCode::from(2);
        }
    };
    let opts = ServerOptions {
        root: a.root,
        listen,
        max_sessions: a.max_sessions as usize,
        overwrite: a.overwrite,
        read_only: a.read_only,
        allow_delete: a.allow_delete,
        allow_exit: a.allow_exit,
        max_block_size: a.max_block_size,
        timeout: a.timeout,
        idle: a.idle,
        grace: a.grace,
        verbosity: if a.quiet {
            Verbosity::Quiet
        } else if a.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        },
        trace: a.trace,
    };
    let quiet = a.quiet;
    let policy = format!(
        "overwrite {}, {}, delete {}, exit {}, at most {} sessions",
        if opts.overwrite { "on" } else { "off" },
        if opts.read_only {
            "read-only"
        } else {
            "read-write"
        },
        if opts.allow_delete {
            "allowed"
        } else {
            "disabled"
        },
        if opts.allow_exit {
            "allowed"
        } else {
            "disabled"
        },
        opts.max_sessions
    );
    let server = match Server::bind(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udpftd: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)) {
        eprintln!("udpftd: cannot handle signals: {e}");
    }
    // The first stdout line names the bound address (tests and scripts read it).
    println!(
        "udpftd listening on {}, serving {}",
        server.local_addr(),
        server.root().display()
    );
    if !quiet {
        eprintln!("udpftd: {policy}");
    }
    match server.run(&stop) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udpftd: {e}");
            ExitCode::from(1)
        }
    }
}
