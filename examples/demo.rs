//! A self-contained tour: starts a udpft server on loopback in a temporary directory
//! (in a thread of this process), then uploads a file, downloads it again, lists the
//! served directory and prints what happened.
//!
//! Run it with `cargo run --release --example demo`.

use std::fs;
use std::time::Duration;

use udpft::net::client::{Client, ClientOptions};
use udpft::net::server::{Server, ServerOptions, Verbosity};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let served = tempfile::tempdir()?;
    let local = tempfile::tempdir()?;

    let server = Server::bind(ServerOptions {
        root: served.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        verbosity: Verbosity::Quiet,
        ..ServerOptions::default()
    })?;
    let addr = server.local_addr();
    println!(
        "server: listening on {addr}, serving {}",
        server.root().display()
    );
    let stopper = server.stopper();
    let thread = std::thread::spawn(move || server.run());

    // 8 MiB of pseudo-random bytes to move around.
    let original = local.path().join("hello.bin");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&original, &data)?;

    let opts = ClientOptions {
        block_size: 8192,
        ..ClientOptions::default()
    };
    let mut client = Client::to(addr, opts);
    let put = client.put(&original, Some("hello.bin"))?;
    println!("client: {put}");
    let copy = local.path().join("copy.bin");
    let get = client.get("hello.bin", Some(&copy))?;
    println!("client: {get}");
    let (listing, _) = client.list(None)?;
    println!("client: list of the served directory:");
    for line in listing.lines() {
        println!("    {line}");
    }

    let same = fs::read(&copy)? == data;
    println!(
        "summary: put {} B, got {} B back, identical: {}; {} resends; round trip {}",
        put.bytes,
        get.bytes,
        if same { "yes" } else { "NO" },
        put.resent + get.resent,
        get.srtt
            .map(|r| format!("{:.3} ms", r.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "not measured".into()),
    );

    stopper.stop();
    thread.join().expect("the server thread does not panic")?;
    std::thread::sleep(Duration::from_millis(10));
    if !same {
        return Err("the downloaded copy differs from the original".into());
    }
    Ok(())
}
