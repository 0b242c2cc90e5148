//! How a client waits for replies: the doorbell's protocol with wakers.

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread::Thread;

use super::padded::CachePadded;
use super::wake::SleepFlag;

/// Unparks a thread; a [`Waker`] for blocking waits.
struct ThreadWake(Thread);

impl Wake for ThreadWake {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks `thread`.
pub(crate) fn thread_waker(thread: Thread) -> Waker {
    Waker::from(Arc::new(ThreadWake(thread)))
}

/// How a client sleeps while it waits for replies: the same protocol as the
/// doorbell, with [`Waker`]s (a thread unparker for blocking asks, executors'
/// wakers for async ones; several async asks of one client may wait in
/// different tasks, so all registered wakers are woken).
#[derive(Default)]
pub(crate) struct Parker {
    sleeping: CachePadded<SleepFlag>,
    wakers: Mutex<Vec<Waker>>,
}

impl Parker {
    /// After publishing replies for this client: wake it if it sleeps.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.sleeping.wake_needed() {
            self.wake_all();
        }
    }

    /// Wakes the client if it sleeps (shutdown: replies will not come).
    pub(crate) fn wake(&self) {
        self.notify();
    }

    #[cold]
    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }

    /// Registers `waker` and announces sleep; re-check for replies after this.
    pub(crate) fn prepare_sleep(&self, waker: &Waker) {
        {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if !wakers.iter().any(|w| w.will_wake(waker)) {
                wakers.push(waker.clone());
            }
        }
        self.sleeping.announce();
    }

    /// Did not sleep after all.
    pub(crate) fn cancel_sleep(&self) {
        self.sleeping.cancel();
    }
}
