//! Async locks by key (a blob digest, a chain ID): concurrent pulls that
//! need the same blob wait for the one download instead of starting their
//! own. Entries live as long as someone holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

type Lock = tokio::sync::Mutex<()>;

#[derive(Default)]
pub struct KeyLocks {
    map: Mutex<HashMap<String, Weak<Lock>>>,
}

impl KeyLocks {
    pub fn get(&self, key: &str) -> Arc<Lock> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(Lock::new(()));
        map.insert(key.to_string(), Arc::downgrade(&lock));
        lock
    }
}
