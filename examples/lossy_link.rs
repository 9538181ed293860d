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

use udpft::diagram::packet_label;
use udpft::engine::{Config, Job, Status};
use udpft::link::{Impairments, LinkConfig, way_word};
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
        give_up: Duration::from_secs(30),
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

    // What the protocol did and what the link did, interleaved by virtual time: the
    // link's line comes right after the send it judged.
    let mut lines: Vec<(Duration, u8, String)> = out
        .events
        .iter()
        .map(|(t, side, e)| (*t, 0, format!("{side}: {e}")))
        .collect();
    for l in &out.link_log {
        let what = l
            .fate
            .packet
            .map_or("datagram".to_string(), |(k, s)| packet_label(k.into(), s));
        lines.push((
            l.at,
            1,
            format!("link:   {} {what}: {}", way_word(l.way), l.fate),
        ));
    }
    lines.sort_by_key(|(t, order, _)| (*t, *order));
    let lines: Vec<String> = lines
        .into_iter()
        .map(|(t, _, l)| format!("{:>9.3} ms  {l}", t.as_secs_f64() * 1e3))
        .collect();
    const HEAD: usize = 70;
    const TAIL: usize = 10;
    println!("virtual time  who     what");
    for l in lines.iter().take(HEAD) {
        println!("{l}");
    }
    if lines.len() > HEAD + TAIL {
        println!("   ... {} more lines ...", lines.len() - HEAD - TAIL);
    }
    for l in lines
        .iter()
        .skip(HEAD.max(lines.len().saturating_sub(TAIL)))
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
