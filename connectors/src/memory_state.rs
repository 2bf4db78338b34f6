//! [`MemoryState`]: a [`SourceState`] kept in memory, for one process (tests, and anything that
//! runs sources without a store). Replicas in other processes do not see it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::{SourceState, StateError};

/// Claims and key/value state in memory; share one `Arc<MemoryState>` between "replicas" in a process.
#[derive(Debug, Default)]
pub struct MemoryState {
    claims: Mutex<HashSet<(String, String)>>,
    values: Mutex<HashMap<(String, String), String>>,
}

fn key(source: &str, key: &str) -> (String, String) {
    (source.to_owned(), key.to_owned())
}

#[async_trait::async_trait]
impl SourceState for MemoryState {
    async fn claim(&self, source: &str, k: &str) -> Result<bool, StateError> {
        Ok(self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key(source, k)))
    }

    async fn get(&self, source: &str, k: &str) -> Result<Option<String>, StateError> {
        Ok(self.values.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key(source, k)).cloned())
    }

    async fn put(&self, source: &str, k: &str, value: &str) -> Result<(), StateError> {
        self.values.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key(source, k), value.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claims_once_and_keeps_values() {
        let s = MemoryState::default();
        assert!(s.claim("a", "t1").await.unwrap());
        assert!(!s.claim("a", "t1").await.unwrap());
        assert!(s.claim("b", "t1").await.unwrap());
        s.put("a", "k", "v").await.unwrap();
        assert_eq!(s.get("a", "k").await.unwrap().as_deref(), Some("v"));
        assert_eq!(s.get("b", "k").await.unwrap(), None);
    }
}
