//! Client slots: a dropped client's slot can be taken again at once. With
//! `max_clients(1)`, `drop(client); engine.client()` succeeds every time:
//! freeing a slot is either done when `drop` returns or `client()` waits
//! (boundedly) for a slot being freed.

mod common;

use percore::Error;

use common::{guarded, test_engine, Echo};

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
