//! `udpft-lossy`: a UDP relay that drops, duplicates, reorders, corrupts and delays
//! datagrams, for watching udpft (or any UDP protocol) cope with a bad network.
//!
//! The decisions are made by the library's link model (`udpft::link`), the same one the
//! simulator uses; this binary only parses settings and prints counters.

use std::fs::File;
use std::io::BufWriter;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use udpft::link::{
    DEFAULT_QUEUE, Fault, Faults, Gilbert, Impairments, LinkConfig, Rate, parse_rate,
};
use udpft::net::parse_duration;
use udpft::net::relay::{DEFAULT_IDLE, Relay, RelayConfig, report_json};

/// Relay UDP datagrams between clients and a server through a lossy link.
///
/// Clients send to the --listen address instead of the server's. Every datagram is
/// dropped, duplicated, held back (reordered), corrupted (1 to 3 bits flipped) and
/// delayed at random, each with its own probability. Every setting applies to both
/// directions; its -to-server and -to-client forms override it for one direction.
/// Durations are written like 2ms, 500us, 1s. On Ctrl-C (or SIGTERM) the relay prints
/// what it did, per direction, and exits.
#[derive(Parser, Debug)]
#[command(name = "udpft-lossy", version, allow_negative_numbers = true)]
struct Cli {
    /// The address clients send to (port 0: let the OS choose; the line printed on
    /// start says which).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: String,
    /// The real server's address.
    #[arg(long, value_name = "ADDR:PORT")]
    server: String,

    /// Probability of losing a datagram.
    #[arg(long, value_name = "P")]
    drop: Option<f64>,
    /// --drop, towards the server only (overrides --drop).
    #[arg(long, value_name = "P")]
    drop_to_server: Option<f64>,
    /// --drop, towards the client only (overrides --drop).
    #[arg(long, value_name = "P")]
    drop_to_client: Option<f64>,

    /// Probability of delivering a datagram twice.
    #[arg(long, value_name = "P")]
    duplicate: Option<f64>,
    /// --duplicate, towards the server only (overrides --duplicate).
    #[arg(long, value_name = "P")]
    duplicate_to_server: Option<f64>,
    /// --duplicate, towards the client only (overrides --duplicate).
    #[arg(long, value_name = "P")]
    duplicate_to_client: Option<f64>,

    /// Probability of holding a datagram back by --reorder-by, so later ones overtake it.
    #[arg(long, value_name = "P")]
    reorder: Option<f64>,
    /// --reorder, towards the server only (overrides --reorder).
    #[arg(long, value_name = "P")]
    reorder_to_server: Option<f64>,
    /// --reorder, towards the client only (overrides --reorder).
    #[arg(long, value_name = "P")]
    reorder_to_client: Option<f64>,

    /// Probability of flipping 1 to 3 bits of a datagram.
    #[arg(long, value_name = "P")]
    corrupt: Option<f64>,
    /// --corrupt, towards the server only (overrides --corrupt).
    #[arg(long, value_name = "P")]
    corrupt_to_server: Option<f64>,
    /// --corrupt, towards the client only (overrides --corrupt).
    #[arg(long, value_name = "P")]
    corrupt_to_client: Option<f64>,

    /// One-way latency added to every datagram.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    delay: Option<Duration>,
    /// --delay, towards the server only (overrides --delay).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    delay_to_server: Option<Duration>,
    /// --delay, towards the client only (overrides --delay).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    delay_to_client: Option<Duration>,

    /// Up to this much extra latency, uniformly at random.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    jitter: Option<Duration>,
    /// --jitter, towards the server only (overrides --jitter).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    jitter_to_server: Option<Duration>,
    /// --jitter, towards the client only (overrides --jitter).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    jitter_to_client: Option<Duration>,

    /// How long a reordered datagram is held back [default: 2ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    reorder_by: Option<Duration>,
    /// --reorder-by, towards the server only (overrides --reorder-by).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    reorder_by_to_server: Option<Duration>,
    /// --reorder-by, towards the client only (overrides --reorder-by).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    reorder_by_to_client: Option<Duration>,

    /// Burst loss (Gilbert model): P the chance per datagram to enter the losing state,
    /// R the chance to leave it (mean burst 1/R datagrams, loss rate P/(P+R)).
    #[arg(long, value_name = "P,R", value_parser = Gilbert::parse)]
    burst: Option<Gilbert>,
    /// --burst towards the server only (overrides --burst in that direction).
    #[arg(long, value_name = "P,R", value_parser = Gilbert::parse)]
    burst_to_server: Option<Gilbert>,
    /// --burst towards the client only (overrides --burst in that direction).
    #[arg(long, value_name = "P,R", value_parser = Gilbert::parse)]
    burst_to_client: Option<Gilbert>,

    /// Rate limit, e.g. 100mbit, 1.5gbit, 64kbit (datagrams queue behind each other).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    rate: Option<u64>,
    /// --rate towards the server only (overrides --rate in that direction).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    rate_to_server: Option<u64>,
    /// --rate towards the client only (overrides --rate in that direction).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    rate_to_client: Option<u64>,
    /// With a rate limit, at most this many datagrams wait (more are lost) [default: 1000].
    #[arg(long, value_name = "N")]
    queue: Option<usize>,

    /// A scripted fault, DIRECTION:KIND:N:ACTION (repeatable): to-server or to-client;
    /// request, retry, accept, data, ack, wait, done, error or any; the N-th of them (from 1); drop,
    /// duplicate, corrupt or delay=DURATION. E.g. --fault to-client:data:1:drop
    #[arg(long, value_name = "DIRECTION:KIND:N:ACTION", value_parser = parse_fault)]
    fault: Vec<Fault>,

    /// Record every datagram received and sent, both directions, into this pcapng
    /// file, each with a comment saying what the relay did to it (open it with
    /// Wireshark or tshark; contrib/wireshark/udpft.lua decodes udpft).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// At exit, write a JSON summary here: the seed, the settings and, per direction,
    /// how many datagrams got each action.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Seeds the random decisions, so a run can be repeated [default: random, printed].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Print the counters this often, as well as on exit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Option<Duration>,
    /// Close a client's upstream socket after this long without traffic.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    idle_timeout: Duration,
    /// Write udpft-lossy's man page (man) or its completions for a shell (bash, zsh,
    /// fish, elvish, powershell) to stdout, and exit.
    #[arg(long, value_enum, value_name = "WHAT", exclusive = true)]
    generate: Option<udpft::cli::Generate>,
}

impl Cli {
    /// The impairments of one direction: `pick` chooses the per-direction override.
    fn impairments(&self, to_server: bool) -> Impairments {
        let p = |both: Option<f64>, ts: Option<f64>, tc: Option<f64>| {
            if to_server { ts } else { tc }.or(both).unwrap_or(0.0)
        };
        let d = |both: Option<Duration>, ts: Option<Duration>, tc: Option<Duration>| {
            if to_server { ts } else { tc }.or(both)
        };
        Impairments {
            drop: p(self.drop, self.drop_to_server, self.drop_to_client),
            duplicate: p(
                self.duplicate,
                self.duplicate_to_server,
                self.duplicate_to_client,
            ),
            reorder: p(self.reorder, self.reorder_to_server, self.reorder_to_client),
            corrupt: p(self.corrupt, self.corrupt_to_server, self.corrupt_to_client),
            delay: d(self.delay, self.delay_to_server, self.delay_to_client).unwrap_or_default(),
            jitter: d(self.jitter, self.jitter_to_server, self.jitter_to_client)
                .unwrap_or_default(),
            reorder_by: d(
                self.reorder_by,
                self.reorder_by_to_server,
                self.reorder_by_to_client,
            )
            .unwrap_or(Duration::from_millis(2)),
            burst: if to_server {
                self.burst_to_server
            } else {
                self.burst_to_client
            }
            .or(self.burst),
            rate: if to_server {
                self.rate_to_server
            } else {
                self.rate_to_client
            }
            .or(self.rate)
            .map(|bits_per_sec| Rate {
                bits_per_sec,
                queue: self.queue.unwrap_or(DEFAULT_QUEUE),
            }),
            faults: Faults::default(),
        }
    }
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    Fault::parse(s, parse_duration)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("udpft-lossy: {msg}");
    ExitCode::from(2)
}

fn resolve(what: &str, s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("invalid {what} address '{s}': {e}"))?
        .next()
        .ok_or_else(|| format!("{what} address '{s}' resolves to nothing"))
}

fn main() -> ExitCode {
    // --generate is looked at before the required arguments are.
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        match m.get_one::<udpft::cli::Generate>("generate") {
            Some(what) => Ok(Err(*what)),
            None => Cli::from_arg_matches(&m).map(Ok),
        }
    });
    let cli = match parsed {
        Ok(Ok(c)) => c,
        Ok(Err(what)) => {
            return match udpft::cli::generate(what, Cli::command(), &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            };
        }
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's message up to the usage, without its "error: " prefix,
            // so that the missing arguments' names are part of it.
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let msg = msg.join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            return fail(format_args!("{msg} (see --help)"));
        }
    };
    let link = LinkConfig {
        to_server: cli.impairments(true),
        to_client: cli.impairments(false),
    };
    let link = match link.with_faults(&cli.fault) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if cli.queue.is_some() && link.to_server.rate.is_none() && link.to_client.rate.is_none() {
        return fail("--queue needs a --rate (the queue holds what the rate limit delays)");
    }
    let listen = match resolve("listen", &cli.listen) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let server = match resolve("server", &cli.server) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let seed = cli.seed.unwrap_or_else(rand::random);
    let cfg = RelayConfig {
        idle_timeout: if cli.idle_timeout.is_zero() {
            DEFAULT_IDLE
        } else {
            cli.idle_timeout
        },
        ..RelayConfig::new(listen, server, link, seed)
    };
    let mut relay = match Relay::bind(cfg) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if let Some(path) = &cli.pcap {
        let file = match File::create(path) {
            Ok(f) => f,
            Err(e) => return fail(format_args!("cannot create '{}': {e}", path.display())),
        };
        if let Err(e) = relay.capture(Box::new(BufWriter::new(file))) {
            return fail(format_args!("cannot write '{}': {e}", path.display()));
        }
    }
    // Created now, so a path that cannot be written fails before the run, not after.
    let mut report = match &cli.report {
        Some(path) => match File::create(path) {
            Ok(f) => Some((path.clone(), f)),
            Err(e) => return fail(format_args!("cannot create '{}': {e}", path.display())),
        },
        None => None,
    };
    let handle = match relay.spawn() {
        Ok(h) => h,
        Err(e) => return fail(format_args!("cannot start: {e}")),
    };
    let (sig_tx, sig_rx) = mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = sig_tx.send(());
    }) {
        return fail(format_args!("cannot install the signal handler: {e}"));
    }
    println!(
        "udpft-lossy relaying {} -> {server} (seed {seed})",
        handle.local_addr()
    );
    println!("to server: {}", describe(&link.to_server));
    println!("to client: {}", describe(&link.to_client));

    loop {
        let r = match cli.stats_interval {
            Some(every) if !every.is_zero() => sig_rx.recv_timeout(every),
            _ => sig_rx
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match r {
            Err(mpsc::RecvTimeoutError::Timeout) => println!("{}", handle.stats()),
            _ => break,
        }
    }
    let listen = handle.local_addr();
    let stats = handle.stop();
    println!("udpft-lossy stopped");
    println!("{stats}");
    if let Some((path, mut file)) = report.take() {
        let json = report_json(&RelayConfig { listen, ..cfg }, &stats);
        if let Err(e) = std::io::Write::write_all(&mut file, json.as_bytes()) {
            eprintln!("udpft-lossy: cannot write '{}': {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn describe(i: &Impairments) -> String {
    let mut s = format!(
        "drop {}, duplicate {}, reorder {} (by {:?}), corrupt {}, delay {:?} + jitter up to {:?}",
        i.drop, i.duplicate, i.reorder, i.reorder_by, i.corrupt, i.delay, i.jitter
    );
    if let Some(g) = i.burst {
        s += &format!(", burst P {} R {}", g.p, g.r);
    }
    if let Some(r) = i.rate {
        s += &format!(", rate {} bit/s, queue {}", r.bits_per_sec, r.queue);
    }
    for f in i.faults.iter() {
        s += &format!(", fault {f}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
