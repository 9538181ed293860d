//! A program that embeds the server (the library, not the `udpftd` binary) captures its
//! log with its own `tracing` subscriber: each session's lines come inside a `session`
//! span whose fields are the peer and the session id.

use std::io::Write;
use std::sync::{Arc, Mutex};

use udpft::net::client::{Client, ClientOptions};
use udpft::net::server::{Server, ServerOptions};

/// A writer into a shared buffer, for the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_embedding_program_gets_one_span_per_session_with_peer_and_id() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f.txt"), b"hello").unwrap();
    let server = Server::bind(ServerOptions {
        root: root.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerOptions::default()
    })
    .unwrap();
    let addr = server.local_addr();
    let stopper = server.stopper();
    let captured = Captured::default();
    let writer = captured.clone();
    let running = std::thread::spawn(move || {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::level_filters::LevelFilter::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, || server.run())
    });
    let mut client = Client::new(&addr.to_string(), ClientOptions::default()).unwrap();
    client
        .get("f.txt", Some(&cli.path().join("f.txt")))
        .unwrap();
    assert_eq!(std::fs::read(cli.path().join("f.txt")).unwrap(), b"hello");
    stopper.stop();
    running.join().unwrap().unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("get 'f.txt': 5 B in"))
        .unwrap_or_else(|| panic!("no session line in:\n{log}"));
    assert!(line.contains(" INFO "), "{line}");
    // The span, with its fields: session{peer=127.0.0.1:PORT id=16 hex digits}
    let open = "session{peer=127.0.0.1:";
    let at = line
        .find(open)
        .unwrap_or_else(|| panic!("no session span in {line:?}"));
    let fields = &line[at + open.len()..];
    let (port, rest) = fields.split_once(' ').unwrap();
    assert!(port.parse::<u16>().is_ok(), "{line}");
    let id = rest.strip_prefix("id=").unwrap_or_else(|| panic!("{line}"));
    assert!(id[..16].chars().all(|c| c.is_ascii_hexdigit()), "{line}");
    assert!(id[16..].starts_with('}'), "{line}");
    assert!(line.ends_with(": ok"), "{line}");
}
