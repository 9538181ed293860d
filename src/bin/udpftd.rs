//! `udpftd`: the udpft server. See README.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;
use udpft::net::server::{Server, ServerOptions, Verbosity};
use udpft::net::{addr, parse_timeout};
use udpft::wire;

/// Serve files over UDP with stop-and-wait acknowledgements.
///
/// Prints "udpftd listening on ADDR:PORT, serving DIR" as its first line on stdout,
/// then logs on stderr. Stops on SIGINT/SIGTERM (after --grace) or, with
/// --allow-exit, when a client asks. Durations are written 500ms, 2s, 1.5s, 1m, or
/// plain seconds.
#[derive(Parser, Debug)]
#[command(
    name = "udpftd",
    version,
    after_help = "Exit codes: 0 stopped by a signal or a client's exit; 1 cannot start \
                  (bad root, address in use); 2 usage error."
)]
struct Args {
    /// Directory to serve; every path is confined to it.
    #[arg(long, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    /// Address and port to listen on: ADDR[:PORT], IPv6 in brackets ([::]:6969);
    /// port 0 lets the system choose (the first line says which).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:6969")]
    listen: String,
    /// Most sessions at once; more clients are answered "busy".
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions: u64,
    /// Most transfers at once from one IP address (a few clients cannot take every slot).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    max_per_address: u64,
    /// After binding, become this user (a name in /etc/passwd, or UID[:GID]) for good:
    /// bind port 69 as root, never move data as root.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// IO worker threads: every file operation runs on one, off the network thread.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    io_workers: u64,
    /// Let put replace existing files.
    #[arg(long)]
    overwrite: bool,
    /// Refuse put and delete (contradicts --overwrite and --allow-delete).
    #[arg(long, conflicts_with_all = ["overwrite", "allow_delete"])]
    read_only: bool,
    /// Allow delete.
    #[arg(long)]
    allow_delete: bool,
    /// Allow a client to stop the server with exit.
    #[arg(long)]
    allow_exit: bool,
    /// Serve every TFTP transfer from the listening port instead of a new port each
    /// (RFC 1350's transfer IDs): for NAT and containers, where only that port is
    /// forwarded. See TFTP.md.
    #[arg(long, conflicts_with = "no_tftp")]
    tftp_single_port: bool,
    /// Do not answer TFTP. By default udpftd answers TFTP read and write requests on
    /// its --listen port too (told apart from udpft by their first bytes).
    #[arg(long)]
    no_tftp: bool,
    /// Largest block size granted to a client, in bytes (TFTP's blksize too, at most
    /// 65464).
    #[arg(long, value_name = "BYTES", default_value_t = wire::MAX_BLOCK_SIZE,
          value_parser = clap::value_parser!(u32).range(wire::MIN_BLOCK_SIZE as i64..=wire::MAX_BLOCK_SIZE as i64))]
    max_block_size: u32,
    /// Largest send window granted to a client that asks for one, in blocks, from 1
    /// (stop-and-wait only) to 1024; never more than the client asked for, and less
    /// for very large blocks (a window holds at most 8 MiB).
    #[arg(long, value_name = "BLOCKS", default_value_t = udpft::net::server::DEFAULT_MAX_WINDOW,
          value_parser = clap::value_parser!(u16).range(1..=udpft::engine::frame::MAX_WINDOW as i64))]
    max_window: u16,
    /// Ceiling of the retransmission timeout (e.g. 500ms, 2s, or plain seconds).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    timeout: Duration,
    /// A session without progress for this long (no new block acknowledged or
    /// received, whatever the client sends) is dropped; an upload's data is discarded.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    idle: Duration,
    /// On SIGINT/SIGTERM, how long transfers in flight may still run.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    grace: Duration,
    /// No log lines (only errors of the server itself).
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// More log lines: session starts, rtt, dropped datagrams.
    #[arg(short, long)]
    verbose: bool,
    /// One line per packet event on stderr, with the time since the session's
    /// request (as in PROTOCOL.md §9), the peer and the session id.
    #[arg(long)]
    trace: bool,
    /// Write every datagram the server sends and receives to FILE as a pcapng capture
    /// (real addresses and ports, a comment per packet: received, resent, dropped: bad
    /// checksum, ...), for Wireshark or tshark with contrib/wireshark/udpft.lua.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Write udpftd's man page (man) or its completions for a shell (bash, zsh, fish,
    /// elvish, powershell) to stdout, and exit.
    #[arg(long, value_enum, value_name = "WHAT", exclusive = true)]
    generate: Option<udpft::cli::Generate>,
}

/// Prints each event of the server's `tracing` output as `udpftd: MESSAGE`, one line
/// (the server already chose what to say by --quiet, --verbose and --trace).
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        w.write_str("udpftd: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

fn main() -> ExitCode {
    // Each event is formatted whole, then written with one call: lines never mix.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .event_format(Plain)
        .init();
    let a = Args::parse();
    if let Some(what) = a.generate {
        return match udpft::cli::generate(what, Args::command(), &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("udpftd: {e}");
                ExitCode::from(1)
            }
        };
    }
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
        max_per_address: a.max_per_address as usize,
        io_workers: a.io_workers as usize,
        overwrite: a.overwrite,
        read_only: a.read_only,
        allow_delete: a.allow_delete,
        allow_exit: a.allow_exit,
        max_block_size: a.max_block_size,
        max_window: a.max_window,
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
        tftp: !a.no_tftp,
        tftp_single_port: a.tftp_single_port,
    };
    let quiet = a.quiet;
    let policy = format!(
        "overwrite {}, {}, delete {}, exit {}, at most {} sessions, TFTP {}",
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
        opts.max_sessions,
        match (opts.tftp, opts.tftp_single_port) {
            (false, _) => "off",
            (true, false) => "on (a port per transfer)",
            (true, true) => "on (single port)",
        }
    );
    let mut server = match Server::bind(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udpftd: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(path) = &a.pcap {
        let name = format!("udpftd {}", server.local_addr());
        match udpft::net::tap::Tap::create(path, &name) {
            Ok(t) => server.capture(t),
            Err(e) => {
                eprintln!("udpftd: {e}");
                return ExitCode::from(1);
            }
        }
    }
    // Bound (and the capture file opened): now leave root, before any thread starts.
    if let Some(user) = &a.user {
        match udpft::net::privileges::become_user(user) {
            Ok(u) if !quiet => eprintln!("udpftd: running as uid {} gid {}", u.uid, u.gid),
            Ok(_) => {}
            Err(e) => {
                eprintln!("udpftd: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let stopper = server.stopper();
    if let Err(e) = ctrlc::set_handler(move || stopper.stop()) {
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
    match server.run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udpftd: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }
}
