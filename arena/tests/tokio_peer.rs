//! The tokio peer servers under the bot swarm, and a browser-style WebSocket client.

mod common;

use common::{assert_clean, small_swarm, temp_dir, Server};
use futures_util::{SinkExt, StreamExt};
use percore_arena::bots;
use percore_arena::ledger::STARTING_GOLD;
use percore_arena::proto::{ClientMsg, ServerMsg, TradeStatus};
use tokio_tungstenite::tungstenite::Message;

const PLAYERS: usize = 40;

fn bots_play_without_errors(design: &str) {
    let dir = temp_dir(design);
    let server = Server::start(design, &dir);
    assert_eq!(server.gold_total, 0);
    let report = bots::run(small_swarm(server.addr, PLAYERS)).unwrap();
    assert_clean(&report, PLAYERS);
    let lines = server.interrupt();
    let expected = format!("shutdown gold_total {}\n", PLAYERS as u64 * STARTING_GOLD);
    assert!(lines.contains(&expected), "{lines:?}");
    assert!(
        lines.contains(&"protocol_errors 0\n".to_string()),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bots_play_the_tasks_design_without_errors() {
    bots_play_without_errors("tasks");
}

#[test]
fn bots_play_the_rooms_rt_design_without_errors() {
    bots_play_without_errors("rooms_rt");
}

#[test]
fn a_websocket_client_joins_moves_and_trades() {
    let dir = temp_dir("ws");
    let server = Server::start("tasks", &dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let url = format!("ws://{}/", server.addr);
        let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        let send = |msg: ClientMsg<'_>| {
            let mut body = Vec::new();
            msg.encode(&mut body);
            Message::binary(body)
        };
        ws.send(send(ClientMsg::Join {
            player: 900,
            room: 9,
        }))
        .await
        .unwrap();
        // Joining the room one is in again keeps one entry for the player.
        ws.send(send(ClientMsg::Join {
            player: 900,
            room: 9,
        }))
        .await
        .unwrap();
        ws.send(send(ClientMsg::Input {
            seq: 1,
            dx: 2,
            dy: -1,
        }))
        .await
        .unwrap();
        ws.send(send(ClientMsg::Trade {
            trade_id: 5,
            to: 12345,
            gold: 1,
            items: 0,
        }))
        .await
        .unwrap();
        let (mut welcomed, mut moved, mut acked) = (false, false, false);
        // Bounded: the room ticks 20 times a second, so this ends after a few reads.
        for _ in 0..1000 {
            let Some(Ok(Message::Binary(body))) = ws.next().await else {
                panic!("connection ended")
            };
            match ServerMsg::decode(&body).unwrap() {
                ServerMsg::Welcome {
                    player, room, gold, ..
                } => {
                    assert_eq!((player, room, gold), (900, 9, STARTING_GOLD));
                    welcomed = true;
                }
                ServerMsg::State(view) => {
                    assert_eq!(view.entries().filter(|e| e.player == 900).count(), 1);
                    let me = view.entries().find(|e| e.player == 900).unwrap();
                    moved |= me.last_seq == 1;
                }
                ServerMsg::TradeAck {
                    trade_id, status, ..
                } => {
                    assert_eq!((trade_id, status), (5, TradeStatus::UnknownPeer));
                    acked = true;
                }
                other => panic!("unexpected {other:?}"),
            }
            if welcomed && moved && acked {
                break;
            }
        }
        assert!(welcomed && moved && acked);
        // A text message is not part of the protocol: the server closes.
        ws.send(Message::text("hello")).await.unwrap();
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(_))) => continue,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(other)) => panic!("unexpected {other:?}"),
            }
        }
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
