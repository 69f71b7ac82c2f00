//! apid's own events ("config applied"), kept for the Events call: the most
//! recent ones in memory, and a broadcast of new ones. A watcher takes the
//! kept ones and subscribes under one lock, so it misses none and sees none
//! twice. Service state changes come from PID 1 (see `server.rs`).

use std::collections::VecDeque;
use std::sync::Mutex;

use kiln_api_proto::v1::Event;
use tokio::sync::broadcast;

/// Events kept for streams that start later.
const KEPT: usize = 32;

pub struct Journal {
    inner: Mutex<(VecDeque<Event>, broadcast::Sender<Event>)>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            inner: Mutex::new((VecDeque::new(), broadcast::channel(256).0)),
        }
    }
}

impl Journal {
    pub fn record(&self, event: Event) {
        let mut inner = self.lock();
        if inner.0.len() == KEPT {
            inner.0.pop_front();
        }
        inner.0.push_back(event.clone());
        // No receiver is fine: nobody is watching.
        let _ = inner.1.send(event);
    }

    /// The kept events, and the ones after them.
    pub fn watch(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let inner = self.lock();
        (inner.0.iter().cloned().collect(), inner.1.subscribe())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Event>, broadcast::Sender<Event>)> {
        // The data is a plain queue: still consistent after a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api_proto::v1::{event, ConfigApplied};

    fn applied(n: i64) -> Event {
        Event {
            event: Some(event::Event::ConfigApplied(ConfigApplied {
                at_unix_ms: n,
                ..Default::default()
            })),
        }
    }

    #[tokio::test]
    async fn keeps_the_latest_and_streams_the_rest() {
        let j = Journal::default();
        for n in 0..40 {
            j.record(applied(n));
        }
        let (kept, mut rx) = j.watch();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0], applied(8));
        j.record(applied(40));
        assert_eq!(rx.recv().await.unwrap(), applied(40));
    }
}
