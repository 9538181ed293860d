//! What this teaches: the three stop-and-wait experiments of every networking textbook
//! (Kurose & Ross, "rdt3.0"), run on udpft's real state machines over the simulated
//! link (a virtual clock: nothing waits), each drawn as a time-sequence diagram with
//! the retransmission timer's arithmetic:
//!
//! 1. the first DATA packet is lost: the sender's timer fires and it resends;
//! 2. the first ACK is lost: the sender resends, the receiver sees a duplicate and
//!    acknowledges it again without writing it twice;
//! 3. an ACK is delayed past the timeout: a premature timeout and resend, then the
//!    late ACK arrives and is ignored as stale (only a timer ever causes a resend).
//!
//! The losses are scripted faults (`DIRECTION:KIND:N:ACTION`), the same ones
//! `udpft-lossy --fault` takes. The client uploads (put), so the sender is on the left
//! as in the textbook. Run it with:
//!
//! ```text
//! cargo run --example sequence_diagrams
//! ```

use std::io::Cursor;
use std::time::Duration;

use udpft::diagram::Diagram;
use udpft::engine::{Config, Job, Status};
use udpft::link::{Fault, Impairments, LinkConfig};
use udpft::net::parse_duration;
use udpft::sim::{self, Capture, ServerPlan, SimConfig};

/// Runs a put of two blocks through a link with 0.4 ms latency each way and `fault`.
fn run(title: &str, fault: &str, expect: &[&str]) -> Diagram {
    let engine = Config {
        block_size: 1000,
        trace: true,
        ..Config::default()
    };
    let link = LinkConfig::symmetric(Impairments {
        delay: Duration::from_micros(400),
        ..Impairments::none()
    })
    .with_faults(&[Fault::parse(fault, parse_duration).unwrap()])
    .unwrap();
    let cfg = SimConfig {
        link,
        client: engine,
        server: engine,
        ..SimConfig::default()
    };
    let file: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    let stored = Capture::default();
    let out = sim::run(
        cfg,
        "notes.txt",
        Job::Put(Box::new(Cursor::new(file.clone())), file.len() as u64),
        ServerPlan::Store(Box::new(stored.clone())),
    );
    assert_eq!(out.client, Status::Closed, "{}", out.trace.join("\n"));
    assert_eq!(stored.contents(), file);
    for e in expect {
        assert!(
            out.trace.iter().any(|l| l.contains(e)),
            "{title}: no {e:?} in\n{}",
            out.trace.join("\n")
        );
    }
    let d = Diagram::from_sim(&out, engine.rto, engine.rto);
    assert_eq!(
        d.unexplained_timeouts, 0,
        "the arithmetic shown is the engine's"
    );
    println!("== {title}   (--fault {fault})\n");
    print!("{}", d.terminal());
    println!(
        "\nresends by the client: {}; duplicates acknowledged again by the server: {}; \
         stale acks ignored by the client: {}; file stored intact: {}\n",
        out.client_stats.resent,
        out.server_stats.duplicates,
        out.client_stats.stale,
        stored.contents() == file
    );
    d
}

fn main() {
    println!(
        "A put of 1500 bytes in blocks of 1000 over a link with 0.4 ms latency each way.\n\
         The first two round trips (REQUEST -> RETRY, the address check, and REQUEST ->\n\
         ACCEPT) measure 0.8 ms each, so RFC 6298 gives SRTT 0.8 and RTTVAR 0.3\n\
         (0.4, then 3/4 of it), and RTO = SRTT + 4 x RTTVAR = 0.8 + 4 x 0.3 = 2.0 ms for DATA 1.\n"
    );
    run(
        "1. The first DATA packet is lost",
        "to-server:data:1:drop",
        &["timeout after 2.00 ms, data #1 resent"],
    );
    run(
        "2. The first ACK is lost",
        "to-client:ack:1:drop",
        &[
            "timeout after 2.00 ms, data #1 resent",
            "server: duplicate data #1 acknowledged again (not written twice)",
        ],
    );
    let d = run(
        "3. An ACK is delayed past the timeout",
        "to-client:ack:1:delay=3ms",
        &[
            "timeout after 2.00 ms, data #1 resent",
            "server: duplicate data #1 acknowledged again",
            "client: stale ack #1 ignored (only a timeout causes a resend)",
        ],
    );
    println!("The same diagram as Mermaid (paste into a Markdown document):\n");
    println!("```mermaid\n{}```", d.mermaid());
}
