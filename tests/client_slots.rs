//! Client slots: a dropped client's slot can be taken again at once. With
//! `max_clients(1)`, `drop(client); engine.client()` succeeds every time:
//! freeing a slot is either done when `drop` returns or `client()` waits
//! (boundedly) for a slot being freed.

mod common;

use percore::{Ctx, Entity, Error};

use common::{guarded, test_engine};

struct Echo;

impl Entity for Echo {
    const KIND: &'static str = "slots.echo";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Echo
    }

    fn handle(&mut self, n: u64, _ctx: &mut Ctx<'_, Self>) -> u64 {
        n
    }
}

#[test]
fn a_dropped_clients_slot_is_free_for_the_next_client() {
    guarded("100 drop-and-reconnect cycles", || {
        let engine = test_engine(2)
            .max_clients(1)
            .register::<Echo>()
            .build()
            .unwrap();
        let mut client = engine.client().unwrap();
        for cycle in 0..100u64 {
            // Every other cycle the client has sent something first.
            if cycle % 2 == 0 {
                client.tell::<Echo>(cycle, cycle).unwrap();
                assert_eq!(client.ask::<Echo>(cycle + 1, cycle).unwrap(), cycle);
            }
            drop(client);
            client = match engine.client() {
                Ok(c) => c,
                Err(e) => panic!("cycle {cycle}: {e}"),
            };
        }
        assert!(matches!(
            engine.client(),
            Err(Error::TooManyClients { max: 1 })
        ));
        drop(client);
        engine.shutdown().unwrap();
    });
}
