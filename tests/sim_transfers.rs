//! Whole transfers through the simulated lossy link, on a virtual clock.

use std::io::Cursor;
use std::time::Duration;

use udpft::engine::{Config, Job, Status, TransferError};
use udpft::link::{Impairments, LinkConfig};
use udpft::sim::{self, Capture, ServerPlan, SimConfig, SimOutcome};
use udpft::wire::ErrorCode;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut p = sim::Pattern::new(len as u64, seed);
    std::io::Read::read_exact(&mut p, &mut v).unwrap();
    v
}

fn lossy(loss: f64) -> LinkConfig {
    LinkConfig::symmetric(Impairments {
        drop: loss,
        duplicate: loss / 3.0,
        reorder: loss / 3.0,
        corrupt: loss / 3.0,
        delay: Duration::from_micros(50),
        jitter: Duration::from_micros(30),
        reorder_by: Duration::from_micros(700),
    })
}

fn cfg(block: u32, link: LinkConfig, seed: u64) -> SimConfig {
    let engine = Config {
        block_size: block,
        max_retries: 30,
        ..Config::default()
    };
    SimConfig {
        link,
        seed,
        client: engine,
        server: engine,
        ..SimConfig::default()
    }
}

fn get(c: SimConfig, bytes: &[u8]) -> (SimOutcome, Capture) {
    let cap = Capture::default();
    let out = sim::run(
        c,
        "f",
        Job::Get(Box::new(cap.clone())),
        ServerPlan::Serve(Box::new(Cursor::new(bytes.to_vec())), bytes.len() as u64),
    );
    (out, cap)
}

fn put(c: SimConfig, bytes: &[u8]) -> (SimOutcome, Capture) {
    let cap = Capture::default();
    let out = sim::run(
        c,
        "f",
        Job::Put(Box::new(Cursor::new(bytes.to_vec())), bytes.len() as u64),
        ServerPlan::Store(Box::new(cap.clone())),
    );
    (out, cap)
}

#[test]
fn lossless_get_and_put_of_edge_sizes() {
    let block = 512;
    for len in [0, 1, block - 1, block, block + 1, 5 * block + 7] {
        let bytes = data(len, len as u64);
        let (o, cap) = get(cfg(block as u32, LinkConfig::default(), 1), &bytes);
        assert_eq!(o.client, Status::Closed, "get {len}: {o:?}");
        assert_eq!(o.server, Some(Status::Closed), "get {len}");
        assert_eq!(cap.contents(), bytes, "get {len}");
        assert!(cap.is_committed());
        assert_eq!(o.client_stats.resent + o.server_stats.resent, 0);
        let (o, cap) = put(cfg(block as u32, LinkConfig::default(), 1), &bytes);
        assert_eq!(o.client, Status::Closed, "put {len}: {o:?}");
        assert_eq!(cap.contents(), bytes, "put {len}");
    }
}

#[test]
fn trace_of_a_small_get() {
    let mut c = cfg(512, LinkConfig::default(), 1);
    c.client.trace = true;
    c.server.trace = true;
    let (o, _) = get(c, &data(1000, 3));
    for l in &o.trace {
        println!("{l}");
    }
    assert!(
        o.trace
            .iter()
            .any(|l| l.contains("done received, length 1000"))
    );
}

#[test]
fn lossy_smoke() {
    let bytes = data(20_000, 9);
    let (o, cap) = get(cfg(512, lossy(0.2), 5), &bytes);
    assert_eq!(o.client, Status::Closed, "{o:?}");
    assert_eq!(cap.contents(), bytes);
    let _ = (ErrorCode::NotFound, TransferError::Aborted(String::new()));
}
