//! The async ask: a future that resolves to an entity's reply.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use percore_shards::{AskError, Entity};

use super::client::{decode_reply, Client};
use crate::error::ClientAskError;

pub(super) enum AskState<M> {
    Waiting { shard: usize, token: u64 },
    Failed(ClientAskError<M>),
    Done,
}

/// The reply to [`Client::ask_async`] for an entity of kind `E`. Dropping it
/// before it resolves abandons the ask (its reply is discarded on arrival).
#[must_use = "the reply is lost unless the future is awaited"]
pub struct AskFuture<'c, E: Entity> {
    client: &'c Client,
    state: AskState<E::Msg>,
    _entity: PhantomData<fn() -> E>,
}

impl<'c, E: Entity> AskFuture<'c, E> {
    pub(super) fn new(client: &'c Client, state: AskState<E::Msg>) -> Self {
        AskFuture {
            client,
            state,
            _entity: PhantomData,
        }
    }
}

// The future is never pinned structurally: its state moves freely.
impl<E: Entity> Unpin for AskFuture<'_, E> {}

impl<E: Entity> Future for AskFuture<'_, E> {
    type Output = Result<E::Reply, ClientAskError<E::Msg>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let client = self.client;
        let (shard, token) = match std::mem::replace(&mut self.state, AskState::Done) {
            AskState::Waiting { shard, token } => (shard, token),
            AskState::Failed(e) => return Poll::Ready(Err(e)),
            AskState::Done => panic!("AskFuture polled after completion"),
        };
        if let Some(env) = client.poll_reply(shard, token) {
            return Poll::Ready(decode_reply(env).map_err(ClientAskError::Failed));
        }
        if client.shared.terminated.load(Ordering::Acquire) {
            client.abandon(token);
            return Poll::Ready(Err(ClientAskError::Failed(AskError::ShuttingDown)));
        }
        client.signals.parker.prepare_sleep(cx.waker());
        if let Some(env) = client.poll_reply(shard, token) {
            client.signals.parker.cancel_sleep();
            return Poll::Ready(decode_reply(env).map_err(ClientAskError::Failed));
        }
        self.state = AskState::Waiting { shard, token };
        Poll::Pending
    }
}

impl<E: Entity> Drop for AskFuture<'_, E> {
    fn drop(&mut self) {
        if let AskState::Waiting { token, .. } = self.state {
            self.client.abandon(token);
        }
    }
}
