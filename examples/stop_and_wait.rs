//! What this teaches: stop-and-wait, one step at a time. A `Sender` and a `Receiver`
//! (udpft's sans-IO state machines) are driven by hand on a virtual clock: we carry each
//! datagram from one to the other ourselves, and we decide which ones get lost. One
//! DATA packet is lost (the sender's timer fires and it resends it) and one ACK is lost
//! (the sender resends on timeout; the receiver sees a duplicate and acknowledges it
//! again, without writing it twice). At the end the received bytes equal the sent ones.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example stop_and_wait
//! ```

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use udpft::engine::{Config, Receiver, Sender, Status};
use udpft::rto::RtoEstimator;
use udpft::sim::Capture;
use udpft::wire::{Datagram, Message};

/// One-way latency of our imaginary wire.
const LATENCY: Duration = Duration::from_micros(300);

/// The two state machines and the virtual clock.
struct World {
    start: Instant,
    now: Instant,
    sender: Sender,
    receiver: Receiver,
}

impl World {
    fn t(&self) -> String {
        format!("{:>8.3} ms", (self.now - self.start).as_secs_f64() * 1e3)
    }

    /// Prints what each side recorded since the last call.
    fn events(&mut self) {
        let t = self.t();
        while let Some(e) = self.sender.poll_event() {
            println!("{t}    sender:   {e}");
        }
        while let Some(e) = self.receiver.poll_event() {
            println!("{t}    receiver: {e}");
        }
    }

    /// What the sender wants to send now (at most one packet: it is stop-and-wait).
    fn sender_sends(&mut self) -> Vec<Vec<u8>> {
        let now = self.now;
        let mut out = Vec::new();
        while let Some(b) = self.sender.poll_transmit(now) {
            out.push(b.to_vec());
        }
        self.events();
        out
    }

    /// What the receiver wants to send now (an acknowledgement, if anything).
    fn receiver_sends(&mut self) -> Vec<Vec<u8>> {
        let now = self.now;
        let mut out = Vec::new();
        while let Some(b) = self.receiver.poll_transmit(now) {
            out.push(b.to_vec());
        }
        self.events();
        out
    }

    /// Lets a datagram travel for [`LATENCY`].
    fn travel(&mut self) {
        self.now += LATENCY;
    }

    fn deliver_to_receiver(&mut self, bytes: &[u8]) {
        self.travel();
        self.receiver.handle_datagram(self.now, bytes);
        // A verified DONE: store the data (here, at once) before it is acknowledged.
        if let Some(mut sink) = self.receiver.poll_commit() {
            let stored = sink.flush().and_then(|_| sink.commit());
            self.receiver.commit_done(self.now, stored);
        }
        self.events();
    }

    fn deliver_to_sender(&mut self, bytes: &[u8]) {
        self.travel();
        self.sender.handle_datagram(self.now, bytes);
        self.events();
    }

    /// Jumps the clock to the sender's retransmission deadline and lets the timer fire.
    fn wait_for_sender_timer(&mut self) {
        let deadline = self.sender.poll_timeout().expect("a packet is outstanding");
        println!(
            "{}  (nothing comes back; the sender's timer fires at {:.3} ms)",
            self.t(),
            (deadline - self.start).as_secs_f64() * 1e3
        );
        self.now = deadline;
        self.sender.handle_timeout(self.now);
    }

    /// One full exchange: the sender's packet goes over, the ack comes back.
    fn exchange(&mut self) {
        for d in self.sender_sends() {
            self.deliver_to_receiver(&d);
        }
        for a in self.receiver_sends() {
            self.deliver_to_sender(&a);
        }
    }
}

fn describe(bytes: &[u8]) -> String {
    match Datagram::parse(bytes) {
        Ok(d) => match d.message {
            Message::Data(p) => format!("DATA #{} {:?}", d.seq, String::from_utf8_lossy(p)),
            Message::Ack => format!("ACK #{}", d.seq),
            Message::Done { length, crc } => {
                format!("DONE #{} (length {length}, CRC32 {crc:08x})", d.seq)
            }
            _ => format!("{:?} #{}", d.kind(), d.seq),
        },
        Err(e) => format!("unreadable ({e})"),
    }
}

fn main() {
    let text = b"Stop and wait: one packet at a time, every packet acknowledged.";
    let cfg = Config {
        block_size: 16,
        trace: true,
        ..Config::default()
    };
    let session = 0x2a;
    let sender_addr: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let receiver_addr: SocketAddr = "192.0.2.2:6969".parse().unwrap();
    let received = Capture::default();
    let start = Instant::now();
    let mut w = World {
        start,
        now: start,
        sender: Sender::new(
            session,
            receiver_addr,
            Box::new(Cursor::new(text.to_vec())),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
        ),
        receiver: Receiver::new(
            session,
            sender_addr,
            Box::new(received.clone()),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
            start,
        ),
    };
    println!(
        "Sending {} bytes in blocks of {} with a one-way latency of {} us.\n",
        text.len(),
        cfg.block_size,
        LATENCY.as_micros()
    );
    // A new receiver first acknowledges packet 0, the handshake (in a real session,
    // the server's ACCEPT). There is no handshake here, so we set that ack aside.
    let ack0 = w.receiver_sends();
    println!(
        "(the receiver's first datagram, {}, answers the handshake; this example has none)\n",
        describe(&ack0[0])
    );

    println!("Step 1: DATA #1 goes over, ACK #1 comes back. Nothing is lost.");
    w.exchange();

    println!("\nStep 2: DATA #2 is LOST on the way.");
    let lost = w.sender_sends();
    println!("{}  ✗ {} vanishes", w.t(), describe(&lost[0]));
    w.wait_for_sender_timer();
    println!("         The timer fired: the sender resends the same packet.");
    w.exchange();

    println!("\nStep 3: DATA #3 arrives, but its ACK is LOST.");
    for d in w.sender_sends() {
        w.deliver_to_receiver(&d);
    }
    let lost = w.receiver_sends();
    println!("{}  ✗ {} vanishes", w.t(), describe(&lost[0]));
    w.wait_for_sender_timer();
    println!("         The sender cannot know whether DATA #3 or its ACK was lost, so it resends.");
    println!("         The receiver has it already: it acknowledges it again and writes nothing.");
    w.exchange();

    println!("\nStep 4: the rest goes through; DONE carries the length and CRC32 of everything.");
    while *w.sender.status() == Status::Running {
        w.exchange();
    }
    println!(
        "\nThe sender is {:?}; the receiver is {:?} (it lingers a while to acknowledge a resent DONE).",
        w.sender.status(),
        w.receiver.status()
    );
    if let Some(until) = w.receiver.poll_timeout() {
        w.now = until;
        w.receiver.handle_timeout(w.now);
    }
    println!(
        "{}  receiver done lingering: {:?}",
        w.t(),
        w.receiver.status()
    );

    let s = w.sender.stats();
    let r = w.receiver.stats();
    println!(
        "\nsender:   {} datagrams sent, {} of them resent after a timeout",
        s.sent, s.resent
    );
    println!(
        "receiver: {} datagrams received, {} duplicates acknowledged again, {} bytes written",
        r.received, r.duplicates, r.bytes
    );
    let got = received.contents();
    println!("received: {:?}", String::from_utf8_lossy(&got));
    assert_eq!(got, text, "the bytes must arrive exactly once, in order");
    assert!(received.is_committed());
    println!("received bytes == sent bytes: true");
}
