//! The arena wire protocol: messages, their binary encoding, and the framing.
//!
//! Every message is a *body*: one tag byte and fixed little-endian fields (a chat's
//! text is the rest of the body). Over raw TCP each body travels in a *frame*, a
//! `u32` little-endian length followed by that many body bytes; over WebSocket each
//! body is one binary message, with no length prefix (WebSocket frames already carry
//! one). No body is longer than [`MAX_FRAME_BYTES`]; a reader rejects a longer length
//! before buffering it, so a peer cannot make the other side allocate without bound.
//!
//! Decoding borrows from the input buffer and never allocates: a [`StateView`]
//! iterates its entries in place. Encoding appends to a caller's `Vec<u8>`, which a
//! hot loop reuses. `docs/ARENA.md` describes the messages in prose.

use std::fmt;

/// Bytes of the length prefix of a TCP frame (`u32` little-endian).
pub const LEN_PREFIX_BYTES: usize = 4;
/// Largest body a frame may carry; a length above it is a protocol error.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest chat text, in bytes (UTF-8 is expected but not checked by the codec).
pub const MAX_CHAT_BYTES: usize = 200;
/// Bytes of one [`Entry`] in a state broadcast.
pub const STATE_ENTRY_BYTES: usize = 16;
/// Bytes of a state broadcast before its entries: tag, room, tick, count.
pub const STATE_HEADER_BYTES: usize = 1 + 4 + 4 + 2;
/// Most players a room holds, so that its state broadcast fits in one frame.
pub const MAX_ROOM_PLAYERS: usize = 4000;
/// Side of the square world; positions are in `0..WORLD_SIZE`.
pub const WORLD_SIZE: u16 = 1000;

const _: () = assert!(STATE_HEADER_BYTES + MAX_ROOM_PLAYERS * STATE_ENTRY_BYTES <= MAX_FRAME_BYTES);
const _: () = assert!(MAX_ROOM_PLAYERS <= u16::MAX as usize);
const _: () = assert!(1 + 4 + MAX_CHAT_BYTES <= MAX_FRAME_BYTES);

mod tag {
    pub const JOIN: u8 = 0x01;
    pub const INPUT: u8 = 0x02;
    pub const CHAT: u8 = 0x03;
    pub const TRADE: u8 = 0x04;
    pub const WELCOME: u8 = 0x81;
    pub const STATE: u8 = 0x82;
    pub const CHAT_FROM: u8 = 0x83;
    pub const TRADE_ACK: u8 = 0x84;
    pub const ERROR: u8 = 0x85;
}

/// A message from a client to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMsg<'a> {
    /// Enter `room` as `player` (leaving the current room, if any). The first message
    /// of every connection; the server answers [`ServerMsg::Welcome`].
    Join {
        /// The player's durable account id (created with starting gold if new).
        player: u32,
        /// The room to enter.
        room: u32,
    },
    /// A movement input, applied by the room at once and reported back in the room's
    /// next broadcast as the player's `last_seq`.
    Input {
        /// Increasing per connection; the bots use it to match broadcasts to inputs.
        seq: u32,
        /// Step along x (the world clamps positions to `0..WORLD_SIZE`).
        dx: i8,
        /// Step along y.
        dy: i8,
    },
    /// A chat line, relayed to the room's members (the sender included).
    Chat {
        /// At most [`MAX_CHAT_BYTES`].
        text: &'a [u8],
    },
    /// Move gold and items from the sender's account to `to`'s. Answered by one
    /// [`ServerMsg::TradeAck`], sent only once the outcome is durable.
    Trade {
        /// Unique per trade; resending the same id never applies it twice.
        trade_id: u64,
        /// The receiving player.
        to: u32,
        /// Gold to move.
        gold: u32,
        /// Items to move.
        items: u32,
    },
}

/// One player's line in a state broadcast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The player.
    pub player: u32,
    /// Position, `0..WORLD_SIZE`.
    pub x: u16,
    /// Position, `0..WORLD_SIZE`.
    pub y: u16,
    /// Sequence number of the last input of this player the room applied (0: none).
    pub last_seq: u32,
    /// Microseconds between the room applying `last_seq` and building this
    /// broadcast (saturating): the wait for the tick, which the server chose, so a
    /// client can tell it apart from queueing and network delay.
    pub hold_us: u32,
}

/// A state broadcast as received: entries are decoded lazily from the buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StateView<'a> {
    /// The room.
    pub room: u32,
    /// The room's tick counter.
    pub tick: u32,
    raw: &'a [u8],
}

impl<'a> StateView<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.raw.len() / STATE_ENTRY_BYTES
    }

    /// Whether the broadcast has no entries.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The entries, decoded in place.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Entry> + 'a {
        self.raw.chunks_exact(STATE_ENTRY_BYTES).map(|c| Entry {
            player: u32_at(c, 0),
            x: u16_at(c, 4),
            y: u16_at(c, 6),
            last_seq: u32_at(c, 8),
            hold_us: u32_at(c, 12),
        })
    }
}

impl fmt::Debug for StateView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateView")
            .field("room", &self.room)
            .field("tick", &self.tick)
            .field("entries", &self.entries().collect::<Vec<_>>())
            .finish()
    }
}

/// Outcome of a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TradeStatus {
    /// Applied, and durable.
    Ok = 0,
    /// Applied earlier under the same id (durable); not applied again.
    Duplicate = 1,
    /// The sender lacks the gold or items; nothing changed.
    Insufficient = 2,
    /// The receiver has no account; nothing changed.
    UnknownPeer = 3,
    /// A trade with oneself or of nothing; nothing changed.
    Invalid = 4,
    /// The server could not make it durable; nothing is promised either way
    /// (resend the same id to learn the outcome).
    Unavailable = 5,
}

impl TradeStatus {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            1 => Self::Duplicate,
            2 => Self::Insufficient,
            3 => Self::UnknownPeer,
            4 => Self::Invalid,
            5 => Self::Unavailable,
            _ => return None,
        })
    }

    /// Whether the trade is applied and durable (`Ok` or `Duplicate`).
    pub fn is_applied(self) -> bool {
        matches!(self, Self::Ok | Self::Duplicate)
    }
}

/// Why the server is about to close a connection (or refused a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// A message other than `Join` came first.
    NotJoined = 1,
    /// The room holds [`MAX_ROOM_PLAYERS`] already; the player stays where it was.
    RoomFull = 2,
    /// A body did not decode; the server closes the connection.
    Malformed = 3,
    /// A frame's length exceeded [`MAX_FRAME_BYTES`]; the server closes the connection.
    FrameTooLarge = 4,
    /// The player is connected on another connection already.
    PlayerBusy = 5,
}

impl ErrorCode {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::NotJoined,
            2 => Self::RoomFull,
            3 => Self::Malformed,
            4 => Self::FrameTooLarge,
            5 => Self::PlayerBusy,
            _ => return None,
        })
    }
}

/// A message from the server to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMsg<'a> {
    /// The answer to a join: the player's durable balance and the room's tick rate.
    Welcome {
        /// The player.
        player: u32,
        /// The room joined.
        room: u32,
        /// Durable gold.
        gold: u64,
        /// Durable items.
        items: u32,
        /// Broadcasts per second.
        tick_hz: u16,
    },
    /// The room's positions on its tick.
    State(StateView<'a>),
    /// A chat line from a member of the room.
    Chat {
        /// The speaker.
        from: u32,
        /// At most [`MAX_CHAT_BYTES`].
        text: &'a [u8],
    },
    /// The durable outcome of a trade, with the sender's balance after it.
    TradeAck {
        /// The trade's id.
        trade_id: u64,
        /// Outcome.
        status: TradeStatus,
        /// Sender's gold after the trade.
        gold: u64,
        /// Sender's items after the trade.
        items: u32,
    },
    /// An error; `Malformed` and `FrameTooLarge` are followed by the server closing.
    Error {
        /// What went wrong.
        code: ErrorCode,
    },
}

/// Why a body or frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A body of zero bytes (no tag).
    Empty,
    /// A tag this side does not know (client tags are `0x01..=0x04`, server tags
    /// `0x81..=0x85`).
    UnknownTag(u8),
    /// The body is shorter than its message's fixed fields.
    Truncated {
        /// The message's tag.
        tag: u8,
        /// Bytes the message needs.
        need: usize,
        /// Bytes the body has.
        got: usize,
    },
    /// The body is longer than its message.
    TrailingBytes {
        /// The message's tag.
        tag: u8,
        /// Bytes past the message's end.
        extra: usize,
    },
    /// A chat text longer than [`MAX_CHAT_BYTES`].
    ChatTooLong {
        /// Its length.
        len: usize,
    },
    /// A field holds a value outside its range (a status or error code).
    BadValue {
        /// Which field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// A frame's length prefix exceeds [`MAX_FRAME_BYTES`].
    FrameTooLarge {
        /// The announced length.
        len: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => write!(f, "empty body: a message needs at least its tag byte"),
            Self::UnknownTag(t) => write!(f, "unknown message tag {t:#04x}"),
            Self::Truncated { tag, need, got } => {
                write!(
                    f,
                    "message {tag:#04x} truncated: needs {need} bytes, body has {got}"
                )
            }
            Self::TrailingBytes { tag, extra } => {
                write!(f, "message {tag:#04x} followed by {extra} unexpected bytes")
            }
            Self::ChatTooLong { len } => {
                write!(
                    f,
                    "chat text of {len} bytes exceeds MAX_CHAT_BYTES ({MAX_CHAT_BYTES})"
                )
            }
            Self::BadValue { field, value } => write!(f, "field {field} has invalid value {value}"),
            Self::FrameTooLarge { len } => {
                write!(
                    f,
                    "frame length {len} exceeds MAX_FRAME_BYTES ({MAX_FRAME_BYTES})"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks that `body` (tag included) is exactly `len` bytes.
fn exact(body: &[u8], len: usize) -> Result<(), DecodeError> {
    let tag = body[0];
    if body.len() < len {
        return Err(DecodeError::Truncated {
            tag,
            need: len,
            got: body.len(),
        });
    }
    if body.len() > len {
        return Err(DecodeError::TrailingBytes {
            tag,
            extra: body.len() - len,
        });
    }
    Ok(())
}

impl<'a> ClientMsg<'a> {
    /// Decodes one body.
    ///
    /// # Errors
    /// [`DecodeError`] for an empty body, an unknown tag, a wrong length or a chat
    /// over [`MAX_CHAT_BYTES`].
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let Some(&t) = body.first() else {
            return Err(DecodeError::Empty);
        };
        match t {
            tag::JOIN => {
                exact(body, 9)?;
                Ok(Self::Join {
                    player: u32_at(body, 1),
                    room: u32_at(body, 5),
                })
            }
            tag::INPUT => {
                exact(body, 7)?;
                Ok(Self::Input {
                    seq: u32_at(body, 1),
                    dx: body[5] as i8,
                    dy: body[6] as i8,
                })
            }
            tag::CHAT => {
                let text = &body[1..];
                if text.len() > MAX_CHAT_BYTES {
                    return Err(DecodeError::ChatTooLong { len: text.len() });
                }
                Ok(Self::Chat { text })
            }
            tag::TRADE => {
                exact(body, 21)?;
                Ok(Self::Trade {
                    trade_id: u64_at(body, 1),
                    to: u32_at(body, 9),
                    gold: u32_at(body, 13),
                    items: u32_at(body, 17),
                })
            }
            other => Err(DecodeError::UnknownTag(other)),
        }
    }

    /// Appends this message's body to `out`.
    ///
    /// # Panics
    /// If a chat text exceeds [`MAX_CHAT_BYTES`] (a bug in the caller).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Join { player, room } => {
                out.push(tag::JOIN);
                out.extend_from_slice(&player.to_le_bytes());
                out.extend_from_slice(&room.to_le_bytes());
            }
            Self::Input { seq, dx, dy } => {
                out.push(tag::INPUT);
                out.extend_from_slice(&seq.to_le_bytes());
                out.push(dx as u8);
                out.push(dy as u8);
            }
            Self::Chat { text } => {
                assert!(
                    text.len() <= MAX_CHAT_BYTES,
                    "chat text over MAX_CHAT_BYTES"
                );
                out.push(tag::CHAT);
                out.extend_from_slice(text);
            }
            Self::Trade {
                trade_id,
                to,
                gold,
                items,
            } => {
                out.push(tag::TRADE);
                out.extend_from_slice(&trade_id.to_le_bytes());
                out.extend_from_slice(&to.to_le_bytes());
                out.extend_from_slice(&gold.to_le_bytes());
                out.extend_from_slice(&items.to_le_bytes());
            }
        }
    }

    /// Appends this message as a length-prefixed TCP frame to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        framed(out, |out| self.encode(out));
    }
}

impl<'a> ServerMsg<'a> {
    /// Decodes one body.
    ///
    /// # Errors
    /// [`DecodeError`] for an empty body, an unknown tag, a wrong length, a chat over
    /// [`MAX_CHAT_BYTES`] or an unknown status or error code.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let Some(&t) = body.first() else {
            return Err(DecodeError::Empty);
        };
        match t {
            tag::WELCOME => {
                exact(body, 23)?;
                Ok(Self::Welcome {
                    player: u32_at(body, 1),
                    room: u32_at(body, 5),
                    gold: u64_at(body, 9),
                    items: u32_at(body, 17),
                    tick_hz: u16_at(body, 21),
                })
            }
            tag::STATE => {
                if body.len() < STATE_HEADER_BYTES {
                    return Err(DecodeError::Truncated {
                        tag: t,
                        need: STATE_HEADER_BYTES,
                        got: body.len(),
                    });
                }
                let count = u16_at(body, 9) as usize;
                exact(body, STATE_HEADER_BYTES + count * STATE_ENTRY_BYTES)?;
                Ok(Self::State(StateView {
                    room: u32_at(body, 1),
                    tick: u32_at(body, 5),
                    raw: &body[STATE_HEADER_BYTES..],
                }))
            }
            tag::CHAT_FROM => {
                if body.len() < 5 {
                    return Err(DecodeError::Truncated {
                        tag: t,
                        need: 5,
                        got: body.len(),
                    });
                }
                let text = &body[5..];
                if text.len() > MAX_CHAT_BYTES {
                    return Err(DecodeError::ChatTooLong { len: text.len() });
                }
                Ok(Self::Chat {
                    from: u32_at(body, 1),
                    text,
                })
            }
            tag::TRADE_ACK => {
                exact(body, 22)?;
                let status = TradeStatus::from_u8(body[9]).ok_or(DecodeError::BadValue {
                    field: "status",
                    value: body[9] as u64,
                })?;
                Ok(Self::TradeAck {
                    trade_id: u64_at(body, 1),
                    status,
                    gold: u64_at(body, 10),
                    items: u32_at(body, 18),
                })
            }
            tag::ERROR => {
                exact(body, 2)?;
                let code = ErrorCode::from_u8(body[1]).ok_or(DecodeError::BadValue {
                    field: "code",
                    value: body[1] as u64,
                })?;
                Ok(Self::Error { code })
            }
            other => Err(DecodeError::UnknownTag(other)),
        }
    }

    /// Appends this message's body to `out`.
    ///
    /// # Panics
    /// If a chat text exceeds [`MAX_CHAT_BYTES`] (a bug in the caller).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Welcome {
                player,
                room,
                gold,
                items,
                tick_hz,
            } => {
                out.push(tag::WELCOME);
                out.extend_from_slice(&player.to_le_bytes());
                out.extend_from_slice(&room.to_le_bytes());
                out.extend_from_slice(&gold.to_le_bytes());
                out.extend_from_slice(&items.to_le_bytes());
                out.extend_from_slice(&tick_hz.to_le_bytes());
            }
            Self::State(view) => {
                out.push(tag::STATE);
                out.extend_from_slice(&view.room.to_le_bytes());
                out.extend_from_slice(&view.tick.to_le_bytes());
                out.extend_from_slice(&(view.len() as u16).to_le_bytes());
                out.extend_from_slice(view.raw);
            }
            Self::Chat { from, text } => {
                assert!(
                    text.len() <= MAX_CHAT_BYTES,
                    "chat text over MAX_CHAT_BYTES"
                );
                out.push(tag::CHAT_FROM);
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(text);
            }
            Self::TradeAck {
                trade_id,
                status,
                gold,
                items,
            } => {
                out.push(tag::TRADE_ACK);
                out.extend_from_slice(&trade_id.to_le_bytes());
                out.push(status as u8);
                out.extend_from_slice(&gold.to_le_bytes());
                out.extend_from_slice(&items.to_le_bytes());
            }
            Self::Error { code } => {
                out.push(tag::ERROR);
                out.push(code as u8);
            }
        }
    }

    /// Appends this message as a length-prefixed TCP frame to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        framed(out, |out| self.encode(out));
    }
}

/// Appends a state broadcast's body to `out`, built from `entries`.
///
/// # Panics
/// If there are more than [`MAX_ROOM_PLAYERS`] entries (rooms refuse joins past it).
pub fn encode_state(room: u32, tick: u32, entries: &[Entry], out: &mut Vec<u8>) {
    assert!(
        entries.len() <= MAX_ROOM_PLAYERS,
        "more entries than MAX_ROOM_PLAYERS"
    );
    out.reserve(STATE_HEADER_BYTES + entries.len() * STATE_ENTRY_BYTES);
    out.push(tag::STATE);
    out.extend_from_slice(&room.to_le_bytes());
    out.extend_from_slice(&tick.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.player.to_le_bytes());
        out.extend_from_slice(&e.x.to_le_bytes());
        out.extend_from_slice(&e.y.to_le_bytes());
        out.extend_from_slice(&e.last_seq.to_le_bytes());
        out.extend_from_slice(&e.hold_us.to_le_bytes());
    }
}

/// Appends a length prefix and the body `body` writes to `out`.
///
/// # Panics
/// If the body exceeds [`MAX_FRAME_BYTES`] (no message of this protocol can).
pub fn framed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX_BYTES]);
    body(out);
    let len = out.len() - at - LEN_PREFIX_BYTES;
    assert!(
        len <= MAX_FRAME_BYTES,
        "body of {len} bytes over MAX_FRAME_BYTES"
    );
    out[at..at + LEN_PREFIX_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
}

/// Finds the first complete frame at the start of `buf`.
///
/// Returns `Ok(Some((body, consumed)))` for a complete frame, `Ok(None)` when more
/// bytes are needed (at most `LEN_PREFIX_BYTES + MAX_FRAME_BYTES` are ever needed).
///
/// # Errors
/// [`DecodeError::FrameTooLarge`] as soon as the length prefix exceeds
/// [`MAX_FRAME_BYTES`], before its body arrives; [`DecodeError::Empty`] for a zero
/// length.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, DecodeError> {
    if buf.len() < LEN_PREFIX_BYTES {
        return Ok(None);
    }
    let len = u32_at(buf, 0) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(DecodeError::FrameTooLarge { len });
    }
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    let end = LEN_PREFIX_BYTES + len;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((&buf[LEN_PREFIX_BYTES..end], end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client_msg() -> impl Strategy<Value = (u8, u64, u32, u32, u32, Vec<u8>)> {
        (
            0u8..4,
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_CHAT_BYTES),
        )
    }

    fn build_client((k, a, b, c, d, text): &(u8, u64, u32, u32, u32, Vec<u8>)) -> ClientMsg<'_> {
        match k {
            0 => ClientMsg::Join {
                player: *b,
                room: *c,
            },
            1 => ClientMsg::Input {
                seq: *b,
                dx: *c as i8,
                dy: *d as i8,
            },
            2 => ClientMsg::Chat { text },
            _ => ClientMsg::Trade {
                trade_id: *a,
                to: *b,
                gold: *c,
                items: *d,
            },
        }
    }

    proptest! {
        #[test]
        fn client_messages_round_trip_through_frames(spec in client_msg(), split in 0usize..64) {
            let msg = build_client(&spec);
            let mut buf = Vec::new();
            msg.encode_frame(&mut buf);
            // A partial frame asks for more bytes; the whole frame decodes back.
            let cut = split.min(buf.len() - 1);
            prop_assert_eq!(split_frame(&buf[..cut]).unwrap(), None);
            let (body, used) = split_frame(&buf).unwrap().unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(ClientMsg::decode(body).unwrap(), msg);
        }

        #[test]
        fn server_messages_round_trip(
            k in 0u8..5, a in any::<u64>(), b in any::<u32>(), c in any::<u32>(),
            text in proptest::collection::vec(any::<u8>(), 0..=MAX_CHAT_BYTES),
            entries in proptest::collection::vec(
                (any::<u32>(), any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()), 0..64),
        ) {
            let entries: Vec<Entry> = entries.into_iter().map(|(player, x, y, last_seq, hold_us)|
                Entry { player, x, y, last_seq, hold_us }).collect();
            let mut state = Vec::new();
            encode_state(b, c, &entries, &mut state);
            let msg = match k {
                0 => ServerMsg::Welcome { player: b, room: c, gold: a, items: b, tick_hz: c as u16 },
                1 => ServerMsg::decode(&state).unwrap(),
                2 => ServerMsg::Chat { from: b, text: &text },
                3 => ServerMsg::TradeAck { trade_id: a, status: TradeStatus::Insufficient, gold: a, items: c },
                _ => ServerMsg::Error { code: ErrorCode::RoomFull },
            };
            let mut body = Vec::new();
            msg.encode(&mut body);
            let back = ServerMsg::decode(&body).unwrap();
            prop_assert_eq!(back, msg);
            if let ServerMsg::State(view) = back {
                prop_assert_eq!((view.room, view.tick), (b, c));
                prop_assert_eq!(view.entries().collect::<Vec<_>>(), entries);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ClientMsg::decode(&bytes);
            let _ = ServerMsg::decode(&bytes);
            let _ = split_frame(&bytes);
        }
    }

    #[test]
    fn oversize_frame_is_rejected_from_its_prefix_alone() {
        let prefix = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
        assert_eq!(
            split_frame(&prefix),
            Err(DecodeError::FrameTooLarge {
                len: MAX_FRAME_BYTES + 1
            })
        );
        // An HTTP request line read as a frame is too large, so a server can sniff
        // WebSocket upgrades on the same port without ambiguity.
        assert!(matches!(
            split_frame(b"GET / HTTP/1.1"),
            Err(DecodeError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn malformed_bodies_name_what_is_wrong() {
        assert_eq!(ClientMsg::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            ClientMsg::decode(&[0x7f]),
            Err(DecodeError::UnknownTag(0x7f))
        );
        assert_eq!(
            ClientMsg::decode(&[tag::JOIN, 1, 2]),
            Err(DecodeError::Truncated {
                tag: tag::JOIN,
                need: 9,
                got: 3
            })
        );
        assert_eq!(
            ClientMsg::decode(&[tag::INPUT, 0, 0, 0, 0, 0, 0, 9]),
            Err(DecodeError::TrailingBytes {
                tag: tag::INPUT,
                extra: 1
            })
        );
        let mut long = vec![tag::CHAT];
        long.resize(2 + MAX_CHAT_BYTES, b'a');
        assert_eq!(
            ClientMsg::decode(&long),
            Err(DecodeError::ChatTooLong {
                len: MAX_CHAT_BYTES + 1
            })
        );
        assert_eq!(split_frame(&[0, 0, 0, 0]), Err(DecodeError::Empty));
        let mut ack = Vec::new();
        ServerMsg::TradeAck {
            trade_id: 1,
            status: TradeStatus::Ok,
            gold: 2,
            items: 3,
        }
        .encode(&mut ack);
        ack[9] = 99;
        assert_eq!(
            ServerMsg::decode(&ack),
            Err(DecodeError::BadValue {
                field: "status",
                value: 99
            })
        );
        assert!(DecodeError::FrameTooLarge { len: 70000 }
            .to_string()
            .contains("MAX_FRAME_BYTES"));
    }
}
