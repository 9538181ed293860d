//! What this teaches: what a bad network does to a transfer, and what the protocol does
//! about it. A client downloads a file through the simulated link (`udpft::sim`, a
//! virtual clock: no sockets, no waiting) which drops 20% of the datagrams each way and
//! duplicates, reorders and corrupts some more. The trace shows every decision; the
//! summary sets what the link did beside what the protocol did about it.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example lossy_link
//! ```
//!
//! The same link model runs between real sockets in the `udpft-lossy` relay.

use std::io::Cursor;
use std::time::Duration;

use udpft::engine::{Config, Job, Status};
use udpft::link::{Impairments, LinkConfig};
use udpft::sim::{self, Capture, ServerPlan, SimConfig};

fn main() {
    let file: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let link = Impairments {
        drop: 0.2,
        duplicate: 0.05,
        reorder: 0.05,
        corrupt: 0.05,
        delay: Duration::from_micros(200),
        jitter: Duration::from_micros(100),
        reorder_by: Duration::from_micros(500),
        ..Impairments::none()
    };
    let engine = Config {
        block_size: 1024,
        max_retries: 30,
        trace: true,
        ..Config::default()
    };
    let cfg = SimConfig {
        link: LinkConfig::symmetric(link),
        seed: 7,
        client: engine,
        server: engine,
        ..SimConfig::default()
    };
    println!(
        "A get of {} bytes in blocks of {} through a link that, each way, drops {:.0}%, \
         duplicates {:.0}%, reorders {:.0}% and corrupts {:.0}% of datagrams, with {} us \
         latency (+ up to {} us jitter).\n",
        file.len(),
        engine.block_size,
        link.drop * 100.0,
        link.duplicate * 100.0,
        link.reorder * 100.0,
        link.corrupt * 100.0,
        link.delay.as_micros(),
        link.jitter.as_micros()
    );

    let received = Capture::default();
    let out = sim::run(
        cfg,
        "example.bin",
        Job::Get(Box::new(received.clone())),
        ServerPlan::Serve(Box::new(Cursor::new(file.clone())), file.len() as u64),
    );

    const HEAD: usize = 60;
    const TAIL: usize = 10;
    println!("virtual time  side    event");
    for l in out.trace.iter().take(HEAD) {
        println!("{l}");
    }
    if out.trace.len() > HEAD + TAIL {
        println!("   ... {} more lines ...", out.trace.len() - HEAD - TAIL);
    }
    for l in out
        .trace
        .iter()
        .skip(HEAD.max(out.trace.len().saturating_sub(TAIL)))
    {
        println!("{l}");
    }

    println!("\nWhat the link did (seen, dropped, duplicated, reordered, corrupted, delayed):");
    println!("  towards the server: {}", out.to_server);
    println!("  towards the client: {}", out.to_client);

    let (c, s) = (out.client_stats, out.server_stats);
    println!("\nWhat the protocol did about it:");
    println!(
        "  resends after a timeout:          {} by the server (data), {} by the client",
        s.resent, c.resent
    );
    println!(
        "  duplicates acknowledged again:    {} by the client, {} by the server",
        c.duplicates, s.duplicates
    );
    println!(
        "  bad checksums dropped unread:     {} by the client, {} by the server",
        c.bad_checksum,
        s.bad_checksum + out.server_dropped
    );
    println!(
        "  stale acks ignored (no resend):   {} by the server, {} by the client",
        s.stale, c.stale
    );
    println!(
        "  finished in {:.1} ms of virtual time; client {:?}, server {:?}",
        out.elapsed.as_secs_f64() * 1e3,
        out.client,
        out.server
    );

    let got = received.contents();
    assert!(!out.hung, "the simulation hung");
    assert_eq!(out.client, Status::Closed, "{:?}", out.client);
    assert_eq!(got, file, "the file must arrive byte-exact");
    println!(
        "\nreceived {} bytes, identical to the {} sent: {}",
        got.len(),
        file.len(),
        got == file
    );
}
