//! A panicking durable handler never undoes an acknowledged change (contract
//! §6 with §8), on the real engine, before and after a restart.
//!
//! Began as a reproduction of a defect: `ask(Deposit 10)` → `Ok(10)`; then,
//! without waiting, `ask_async(Deposit 7)` and `ask(DepositThenPanic 5)` land
//! in one pass: the panic answered `Panicked`, the in-flight deposit answered
//! `Ok(17)` — and the balance was 10, before and after a restart, for every
//! key. The panic rewound the entity to its last *logged* state, past the
//! change of the same pass whose reply the output gate held; the pass then
//! found nothing to log and released `Ok(17)`.

mod common_durable;

use futures_lite::future::block_on;
use percore::bytemuck::{Pod, Zeroable};
use percore::{AskError, Ctx, Entity};

use common_durable::{durable_engine, guarded, DataDir};

/// Keys tried; each is one chance for the two asks to share a pass.
const KEYS: u64 = 200;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Purse {
    balance: u64,
}

enum PurseMsg {
    Deposit(u64),
    /// Changes the balance, then panics: this change must not survive, and
    /// must not take earlier ones with it.
    DepositThenPanic(u64),
    Balance,
}

impl Entity for Purse {
    const KIND: &'static str = "durable_panic.purse";
    type Msg = PurseMsg;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Purse { balance: 0 }
    }

    fn handle(&mut self, msg: PurseMsg, _ctx: &mut Ctx<'_, Self>) -> u64 {
        match msg {
            PurseMsg::Deposit(n) => self.balance += n,
            PurseMsg::DepositThenPanic(n) => {
                self.balance += n;
                panic!("told to panic after depositing {n}");
            }
            PurseMsg::Balance => {}
        }
        self.balance
    }
}

#[test]
fn a_panic_keeps_the_changes_of_its_pass_that_were_acknowledged() {
    let dir = DataDir::new("durable-panic");
    let path = dir.path().to_path_buf();
    guarded("panics beside acknowledged deposits", move || {
        // The handler's panics are expected; keep the output readable.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains("told to panic") {
                default_hook(info);
            }
        }));
        let mut acknowledged = Vec::new();
        {
            let engine = durable_engine(&path, 1, 1 << 30)
                .register_durable_pod::<Purse>()
                .build()
                .unwrap();
            let client = engine.client().unwrap();
            for key in 0..KEYS {
                assert_eq!(
                    client
                        .ask::<Purse>(key, PurseMsg::Deposit(10))
                        .map_err(AskError::from),
                    Ok(10)
                );
                // Sent now, awaited later: in the shard's next pass with the
                // panicking ask whenever the two arrive together.
                let deposit = client.ask_async::<Purse>(key, PurseMsg::Deposit(7));
                assert_eq!(
                    client
                        .ask::<Purse>(key, PurseMsg::DepositThenPanic(5))
                        .map_err(AskError::from),
                    Err(AskError::Panicked)
                );
                let reply = block_on(deposit).map_err(AskError::from);
                assert_eq!(
                    reply,
                    Ok(17),
                    "key {key}: the deposit of 7 was handled first"
                );
                let balance = client.ask::<Purse>(key, PurseMsg::Balance).unwrap();
                assert_eq!(
                    balance, 17,
                    "key {key}: Ok(17) was acknowledged, then the panic undid it"
                );
                acknowledged.push(balance);
            }
            engine.shutdown().unwrap();
        }
        let engine = durable_engine(&path, 1, 1 << 30)
            .register_durable_pod::<Purse>()
            .build()
            .unwrap();
        let client = engine.client().unwrap();
        for (key, expected) in (0..KEYS).zip(acknowledged) {
            assert_eq!(
                client
                    .ask::<Purse>(key, PurseMsg::Balance)
                    .map_err(AskError::from),
                Ok(expected),
                "key {key} after a restart"
            );
        }
        engine.shutdown().unwrap();
    });
}
