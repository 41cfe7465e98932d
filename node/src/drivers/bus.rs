//! The agent's event bus: the store's one listener, fanning every stored event (bytes and
//! parsed form, read once) out to each consumer.
//!
//! Consumers that must see every event (sync, world, alerting, the mesh driver's revocations)
//! [`EventBus::subscribe`] to an unbounded queue of their own; the web page's live stream
//! [`EventBus::watch`]es a bounded broadcast, where a page that falls behind skips events
//! rather than holding memory for them.

use std::sync::{Arc, Mutex};

use sync::{EventStore, StoredEvent};
use tokio::sync::{broadcast, mpsc};

use crate::util::lock;

/// Events a lossless subscriber receives.
pub type EventRx = mpsc::UnboundedReceiver<Arc<StoredEvent>>;

/// Events kept for a slow watcher; one that falls further behind skips events (the web page
/// is told with a `lagged` SSE event).
const WATCH_CAPACITY: usize = 256;

pub struct EventBus {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<StoredEvent>>>>,
    watchers: broadcast::Sender<Arc<StoredEvent>>,
}

impl EventBus {
    /// A bus installed as `store`'s listener: from now on every event stored reaches it.
    pub fn attach(store: &EventStore) -> Arc<EventBus> {
        let bus = Arc::new(EventBus {
            subscribers: Mutex::new(Vec::new()),
            watchers: broadcast::channel(WATCH_CAPACITY).0,
        });
        let publisher = bus.clone();
        store.set_listener(Box::new(move |stored| publisher.publish(stored)));
        bus
    }

    /// Every event stored from now on, none dropped.
    pub fn subscribe(&self) -> EventRx {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.subscribers).push(tx);
        rx
    }

    /// Events stored from now on, for a watcher that may fall behind (it then skips).
    pub fn watch(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.watchers.subscribe()
    }

    fn publish(&self, stored: &Arc<StoredEvent>) {
        // A subscriber that went away (its driver stopped) is dropped.
        lock(&self.subscribers).retain(|tx| tx.send(stored.clone()).is_ok());
        // No watcher means no receiver: that send fails, harmlessly.
        let _ = self.watchers.send(stored.clone());
    }
}
