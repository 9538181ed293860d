//! `udpft`: the udpft client. See README.md.

mod exit;
mod progress;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use udpft::cli::Generate;
use udpft::net::client::{Client, ClientError, ClientOptions};
use udpft::net::{addr, parse_timeout};
use udpft::wire;

const SERVER_HELP: &str = "SERVER is host[:port]: a name (example.org), an IPv4 address \
(192.0.2.7:7000) or an IPv6 address in brackets ([::1]:7000; [::1] or ::1 alone for the \
default port). The default port is 6969. A name is tried at each of its addresses, \
IPv6 and IPv4, until one answers. Written tftp://HOST[:PORT] (default port 69), SERVER \
is a TFTP server: get, put and the shell speak TFTP (see TFTP.md), and a get may name \
its REMOTE in the URL (udpft get tftp://10.0.0.5/pxelinux.0).";

const EXIT_HELP: &str = "\
Exit codes: 0 success; 1 local or other error; 2 usage error; 3 the server refused \
(not found, access denied, exists, not allowed, busy, bad request); 4 nothing \
listening, no answer, no progress, or the server abandoned the transfer (it gave up \
or is shutting down); 5 integrity check failed (or more data than announced, or a \
listing over 64 MiB); 130 interrupted.";

/// Move files to and from a udpftd server over UDP.
///
/// Paths follow scp's rules: a REMOTE or LOCAL ending in '/' names a directory, which
/// must exist, and the file goes inside it; so does a destination that is an existing
/// directory. Local destinations are checked before anything is sent.
#[derive(Parser, Debug)]
#[command(name = "udpft", version, after_help = format!("{SERVER_HELP}\n\n{EXIT_HELP}"))]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Block size asked for, in bytes, from 8 to 65481 (the server may grant less).
    #[arg(long, global = true, value_name = "BYTES", default_value_t = wire::DEFAULT_BLOCK_SIZE,
          value_parser = clap::value_parser!(u32).range(wire::MIN_BLOCK_SIZE as i64..=wire::MAX_BLOCK_SIZE as i64))]
    block_size: u32,
    /// Send window asked for, in blocks, from 1 to 1024: up to this many blocks in
    /// flight before an acknowledgement (1 is stop-and-wait; the server may grant less,
    /// udpftd 64 at most by default). A server that predates windows does not answer
    /// a request for more than 1.
    #[arg(long, global = true, value_name = "BLOCKS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=udpft::engine::frame::MAX_WINDOW as i64))]
    window: u16,
    /// Ceiling of the retransmission timeout: 500ms, 2s, 1m, or plain seconds.
    #[arg(long, global = true, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Give up after this long without progress (no new block acknowledged or
    /// received; duplicates do not count; resends go on until then, backing off to
    /// --timeout).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    idle: Duration,
    /// Print nothing on success (errors still go to stderr).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// One line per packet event on stderr, with the time since the request (as in
    /// PROTOCOL.md §9).
    #[arg(long, global = true)]
    trace: bool,
    /// Write every datagram this client sends and receives to FILE as a pcapng capture
    /// (real addresses and ports, a comment per packet: sent, resent, received again,
    /// dropped: bad checksum, ...), for Wireshark or tshark with
    /// contrib/wireshark/udpft.lua. Replaces FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Print each transfer as a time-sequence diagram on stdout when it ends, as this
    /// client saw it: what it sent and received, a cross on what it had to resend,
    /// its timeouts with the timer's arithmetic. FORMAT: terminal (the default) or
    /// mermaid (a Mermaid sequenceDiagram, for documents).
    #[arg(long, global = true, value_name = "FORMAT", num_args = 0..=1,
          require_equals = true, default_missing_value = "terminal", value_enum)]
    diagram: Option<progress::DiagramFormat>,
    /// With a tftp:// SERVER, the transfer mode: octet (bytes as they are) or netascii
    /// (text: line ends converted to CR LF on the wire and back).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "MODE",
        default_value = "octet"
    )]
    tftp_mode: TftpMode,
    /// Write udpft's man page (man) or its completions for a shell (bash, zsh, fish,
    /// elvish, powershell) to stdout, and exit. Given alone, without a command (the
    /// other options go before or after the command).
    #[arg(long, value_enum, value_name = "WHAT", exclusive = true)]
    generate: Option<Generate>,
}

/// TFTP's transfer modes (RFC 1350).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TftpMode {
    Octet,
    Netascii,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Download REMOTE into LOCAL.
    Get {
        /// The server: host[:port] (default port 6969; IPv6 in brackets: [::1]:6969).
        #[arg(value_name = "SERVER", value_parser = server_arg)]
        server: String,
        /// The file on the server, relative to its root (a name ending in '/' names a
        /// directory and is refused). Required, unless a tftp:// SERVER names it.
        #[arg(value_name = "REMOTE")]
        remote: Option<String>,
        /// Where to store it [default: REMOTE's file name, in the current directory].
        /// An existing directory, or a name ending in '/' (which must be an existing
        /// directory), gets the file inside it. Replaced only once the download is
        /// verified.
        #[arg(value_name = "LOCAL")]
        local: Option<PathBuf>,
    },
    /// Upload LOCAL as REMOTE.
    Put {
        /// The server: host[:port] (default port 6969; IPv6 in brackets: [::1]:6969).
        #[arg(value_name = "SERVER", value_parser = server_arg)]
        server: String,
        /// The local file to upload.
        #[arg(value_name = "LOCAL")]
        local: PathBuf,
        /// The name on the server, relative to its root [default: LOCAL's file name,
        /// in the root]. A directory on the server, or a name ending in '/' (which
        /// must be a directory there), gets the file inside it.
        #[arg(value_name = "REMOTE")]
        remote: Option<String>,
    },
    /// Print the listing of a directory on the server on stdout: "SIZE<tab>NAME" per
    /// file, "-<tab>NAME/" per directory.
    #[command(alias = "ls")]
    List {
        /// The server: host[:port] (default port 6969; IPv6 in brackets: [::1]:6969).
        #[arg(value_name = "SERVER", value_parser = server_arg)]
        server: String,
        /// The directory on the server [default: its root].
        #[arg(value_name = "DIR")]
        dir: Option<String>,
    },
    /// Delete REMOTE on the server (needs udpftd --allow-delete).
    #[command(alias = "rm")]
    Delete {
        /// The server: host[:port] (default port 6969; IPv6 in brackets: [::1]:6969).
        #[arg(value_name = "SERVER", value_parser = server_arg)]
        server: String,
        /// The file to delete, relative to the server's root.
        #[arg(value_name = "REMOTE")]
        remote: String,
    },
    /// Ask the server to stop (needs udpftd --allow-exit).
    Exit {
        /// The server: host[:port] (default port 6969; IPv6 in brackets: [::1]:6969).
        #[arg(value_name = "SERVER", value_parser = server_arg)]
        server: String,
    },
    /// An ftp> shell: line editing, history and tab completion at a terminal; type
    /// 'help' for its commands. Without a terminal it reads commands from stdin, and
    /// like a batch file stops at the first failing command and exits with its code.
    Shell {
        /// Read commands from FILE ('-': stdin), stop at the first that fails and exit
        /// with its code (as sftp -b does). A command written with a leading '-'
        /// (-get x) may fail.
        #[arg(short = 'b', long = "batch", value_name = "FILE")]
        batch: Option<PathBuf>,
        /// The server: host[:port] (default port 6969; IPv6 in brackets: [::1]:6969).
        #[arg(value_name = "SERVER", value_parser = server_arg)]
        server: String,
    },
}

/// SERVER checked on the command line, so a malformed one is a usage error (exit 2).
fn server_arg(s: &str) -> Result<String, String> {
    match addr::parse_tftp_url(s) {
        Some(url) => url.map(|_| s.to_string()),
        None => addr::parse_server(s).map(|_| s.to_string()),
    }
}

/// A get's REMOTE and LOCAL: as given, or, when a tftp:// SERVER carries a path, that
/// path and the one argument given as LOCAL.
fn get_paths(
    server: &str,
    remote: Option<&str>,
    local: Option<&std::path::Path>,
) -> Result<(String, Option<PathBuf>), String> {
    let in_url = addr::parse_tftp_url(server)
        .and_then(|u| u.ok())
        .and_then(|u| u.path);
    match (in_url, remote, local) {
        (Some(p), None, None) => Ok((p, None)),
        (Some(p), Some(l), None) => Ok((p, Some(PathBuf::from(l)))),
        (Some(_), Some(_), Some(_)) => Err(
            "the tftp:// SERVER names the remote file already: give at most LOCAL after it".into(),
        ),
        (None, Some(r), l) => Ok((r.to_string(), l.map(PathBuf::from))),
        (_, None, _) => Err("get needs REMOTE, the file on the server".into()),
    }
}

impl Cmd {
    fn server(&self) -> &str {
        match self {
            Cmd::Get { server, .. }
            | Cmd::Put { server, .. }
            | Cmd::List { server, .. }
            | Cmd::Delete { server, .. }
            | Cmd::Exit { server }
            | Cmd::Shell { server, .. } => server,
        }
    }
}

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("udpft: {e}");
    ExitCode::from(exit::code(e))
}

fn main() -> ExitCode {
    let a = Args::parse();
    if let Some(what) = a.generate {
        return match udpft::cli::generate(what, Args::command(), &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("udpft: {e}");
                ExitCode::from(exit::OTHER)
            }
        };
    }
    let Some(cmd) = a.cmd else {
        Args::command()
            .error(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is required: get, put, list, delete, exit or shell",
            )
            .exit();
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            // A second Ctrl-C while the first is being handled: leave now.
            std::process::exit(exit::INTERRUPTED as i32);
        }
    });
    let opts = ClientOptions {
        tftp_netascii: a.tftp_mode == TftpMode::Netascii,
        block_size: a.block_size,
        window: a.window,
        timeout: a.timeout,
        idle: a.idle,
        // The diagram is drawn from the trace.
        trace: a.trace || a.diagram.is_some(),
        stall: None,
        interrupt: Some(interrupt.clone()),
        ..ClientOptions::default()
    };
    let mut client = match Client::new(cmd.server(), opts) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    client.set_observer(Box::new(progress::Terminal::new(
        a.quiet,
        a.trace,
        a.diagram.map(|f| {
            (
                f,
                udpft::engine::RtoConfig {
                    max: a.timeout,
                    ..Default::default()
                },
            )
        }),
    )));
    if let Some(path) = &a.pcap {
        match udpft::net::tap::Tap::create(path, "udpft") {
            Ok(t) => client.set_capture(t),
            Err(e) => {
                eprintln!("udpft: {e}");
                return ExitCode::from(exit::OTHER);
            }
        }
    }
    let summary = |r: udpft::net::client::Report| {
        if !a.quiet {
            eprintln!("{r}");
        }
    };
    let result = match &cmd {
        Cmd::Get {
            server,
            remote,
            local,
        } => match get_paths(server, remote.as_deref(), local.as_deref()) {
            Ok((remote, local)) => client.get(&remote, local.as_deref()).map(summary),
            Err(why) => Args::command()
                .error(clap::error::ErrorKind::MissingRequiredArgument, why)
                .exit(),
        },
        Cmd::Put {
            server,
            local,
            remote,
        } => {
            let in_url = addr::parse_tftp_url(server)
                .and_then(|u| u.ok())
                .and_then(|u| u.path);
            match (in_url, remote) {
                (Some(_), Some(_)) => Args::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "the tftp:// SERVER names the remote file already: drop REMOTE",
                    )
                    .exit(),
                (Some(p), None) => client.put(local, Some(&p)).map(summary),
                (None, r) => client.put(local, r.as_deref()).map(summary),
            }
        }
        Cmd::List { dir, .. } => client
            .list(dir.as_deref())
            .map(|(listing, _)| progress::print_listing(&listing)),
        Cmd::Delete { remote, .. } => client.delete(remote).map(summary),
        Cmd::Exit { .. } => client.exit().map(summary),
        Cmd::Shell { batch, server } => {
            let code = shell::run(
                client,
                server,
                shell::ShellOptions {
                    quiet: a.quiet,
                    batch: batch.clone(),
                    interrupt: Some(interrupt),
                },
            );
            return ExitCode::from(code);
        }
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    };
    match client.take_capture().map(|t| t.finish()) {
        Some(Err(e)) => {
            eprintln!("udpft: writing the capture failed: {e}");
            ExitCode::from(exit::OTHER)
        }
        _ => code,
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
