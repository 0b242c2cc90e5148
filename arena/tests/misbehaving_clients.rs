//! Garbage, oversize frames, protocol misuse and abrupt disconnects from a few
//! connections while bots play: the offenders are answered or dropped, the other
//! players see nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{assert_clean, small_swarm, temp_dir, Server};
use percore_arena::bots;
use percore_arena::proto::{self, ClientMsg, ErrorCode, ServerMsg, MAX_FRAME_BYTES};

/// Reads frames until the server closes; returns the error codes it sent.
/// Bounded by a read timeout, so a server that never closes fails the test.
fn errors_until_closed(mut s: TcpStream) -> Vec<ErrorCode> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .expect("the server closes the connection");
    let mut codes = Vec::new();
    let mut at = 0;
    while let Ok(Some((body, used))) = proto::split_frame(&buf[at..]) {
        at += used;
        if let Ok(ServerMsg::Error { code }) = ServerMsg::decode(body) {
            codes.push(code);
        }
    }
    codes
}

/// Reads until an `Error` frame arrives (other frames skipped) and returns its code.
fn next_error(s: &mut TcpStream) -> ErrorCode {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("a reply before the timeout");
        assert!(n > 0, "closed before an error frame");
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Ok(Some((body, used))) = proto::split_frame(&buf[at..]) {
            at += used;
            if let Ok(ServerMsg::Error { code }) = ServerMsg::decode(body) {
                return code;
            }
        }
        buf.drain(..at);
    }
}

fn frame(msg: ClientMsg<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode_frame(&mut out);
    out
}

#[test]
fn garbage_and_abrupt_disconnects_leave_other_players_unaffected() {
    let dir = temp_dir("misbehave");
    let server = Server::start("tasks", &dir);
    let addr = server.addr;
    let swarm = std::thread::spawn(move || bots::run(small_swarm(addr, 30)).unwrap());
    std::thread::sleep(Duration::from_millis(700));

    // Random bytes (a length prefix of garbage is too large or decodes to nonsense).
    let mut rng = 0x1234_5678_9abc_def0u64;
    let garbage: Vec<u8> = (0..2000)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 24) as u8
        })
        .collect();
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(&garbage);
    assert!(!errors_until_closed(s).is_empty());

    // A length over the maximum is refused from the prefix alone.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&((MAX_FRAME_BYTES as u32 + 1).to_le_bytes()))
        .unwrap();
    assert_eq!(errors_until_closed(s), vec![ErrorCode::FrameTooLarge]);

    // A well-framed body with an unknown tag, after a valid join.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&frame(ClientMsg::Join {
        player: 5001,
        room: 1,
    }))
    .unwrap();
    s.write_all(&[1, 0, 0, 0, 0x7f]).unwrap();
    assert_eq!(errors_until_closed(s), vec![ErrorCode::Malformed]);

    // Input before joining is answered, and the connection stays usable.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&frame(ClientMsg::Input {
        seq: 1,
        dx: 0,
        dy: 0,
    }))
    .unwrap();
    assert_eq!(next_error(&mut s), ErrorCode::NotJoined);
    // A player already connected (bot 1) cannot be taken over.
    s.write_all(&frame(ClientMsg::Join { player: 1, room: 1 }))
        .unwrap();
    assert_eq!(next_error(&mut s), ErrorCode::PlayerBusy);
    drop(s);

    // Players who join the bots' room and vanish mid-frame, mid-trade, mid-chat.
    for player in 6000..6005u32 {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut bytes = frame(ClientMsg::Join { player, room: 1 });
        bytes.extend(frame(ClientMsg::Input {
            seq: 1,
            dx: 1,
            dy: 1,
        }));
        bytes.extend(frame(ClientMsg::Trade {
            trade_id: player as u64,
            to: 1,
            gold: 3,
            items: 0,
        }));
        bytes.extend(frame(ClientMsg::Chat { text: b"bye" }));
        let cut = bytes.len() - 2;
        s.write_all(&bytes[..cut]).unwrap();
        drop(s);
    }
    // And connections that close before sending anything.
    for _ in 0..5 {
        drop(TcpStream::connect(addr).unwrap());
    }

    let report = swarm.join().unwrap();
    assert_clean(&report, 30);

    // The server still serves newcomers.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&frame(ClientMsg::Join {
        player: 7000,
        room: 2,
    }))
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 4 + 23];
    s.read_exact(&mut head).unwrap();
    let (body, _) = proto::split_frame(&head).unwrap().unwrap();
    assert!(matches!(
        ServerMsg::decode(body).unwrap(),
        ServerMsg::Welcome { player: 7000, .. }
    ));
    let lines = server.interrupt();
    assert!(lines
        .iter()
        .any(|l| l.starts_with("protocol_errors ") && l != "protocol_errors 0\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
