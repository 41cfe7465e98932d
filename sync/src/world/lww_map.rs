//! Two small join-semilattices the `crdts` crate lacks in a serde-friendly form: a map of
//! last-writer-wins registers, and a max register.
//!
//! `crdts::Map` wants CmRDT values (no `LWWReg` inside) and its deferred-remove bookkeeping
//! does not serialise to JSON; a `BTreeMap` of `LWWReg`s is all the world state needs, since it
//! never removes a key (a node that left is a value, not an absent key).

use std::collections::BTreeMap;
use std::convert::Infallible;

use crdts::{CvRDT, LWWReg};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::order::OrderKey;

/// A map whose every key holds a last-writer-wins register marked by an [`OrderKey`].
///
/// Merge is per key: the register with the larger marker wins, and on equal markers (only one
/// event can carry a marker, so this is two different contents under one event id, a conflict
/// sync reports) the larger value wins, so merge stays commutative and deterministic where
/// `LWWReg::merge` would keep whichever side it was called on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwwMap<K: Ord, V> {
    entries: BTreeMap<K, LWWReg<V, OrderKey>>,
}

impl<K: Ord, V> Default for LwwMap<K, V> {
    fn default() -> Self {
        LwwMap {
            entries: BTreeMap::new(),
        }
    }
}

impl<K: Ord, V: Ord> LwwMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `val` at `key` if `marker` beats the register there. `make` builds the value only
    /// when it is needed, so an older event costs a lookup and no allocation.
    pub fn update_with(&mut self, key: K, marker: OrderKey, make: impl FnOnce() -> V) {
        match self.entries.get_mut(&key) {
            Some(reg) => offer(reg, marker, make),
            None => {
                self.entries.insert(
                    key,
                    LWWReg {
                        val: make(),
                        marker,
                    },
                );
            }
        }
    }

    /// Like [`LwwMap::update_with`] for a key held by reference: the key is cloned only when a
    /// new entry is created.
    pub fn update_ref<Q>(&mut self, key: &Q, marker: OrderKey, make: impl FnOnce() -> V)
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        match self.entries.get_mut(key) {
            Some(reg) => offer(reg, marker, make),
            None => {
                self.entries.insert(
                    key.to_owned(),
                    LWWReg {
                        val: make(),
                        marker,
                    },
                );
            }
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&LWWReg<V, OrderKey>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.get(key)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &LWWReg<V, OrderKey>)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The register join: larger marker wins; on a tie the larger value (see [`LwwMap`]).
fn offer<V: Ord>(reg: &mut LWWReg<V, OrderKey>, marker: OrderKey, make: impl FnOnce() -> V) {
    if marker < reg.marker {
        return;
    }
    let val = make();
    if marker > reg.marker || val > reg.val {
        *reg = LWWReg { val, marker };
    }
}

impl<K: Ord, V: Ord> CvRDT for LwwMap<K, V> {
    type Validation = Infallible;

    fn validate_merge(&self, _other: &Self) -> Result<(), Infallible> {
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        for (key, LWWReg { val, marker }) in other.entries {
            self.update_with(key, marker, || val);
        }
    }
}

// JSON object keys must be strings and some of our keys are tuples, so the map travels as a
// list of `[key, register]` pairs, in key order (canonical: the world hash depends on it).
impl<K: Ord + Serialize, V: Serialize> Serialize for LwwMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.entries.iter())
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Ord + Deserialize<'de>> Deserialize<'de> for LwwMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(K, LWWReg<V, OrderKey>)>::deserialize(deserializer)?;
        let mut map = LwwMap::new();
        // Merging, not inserting: a hand-edited file with a key twice still loads to a lattice value.
        for (key, LWWReg { val, marker }) in pairs {
            map.update_with(key, marker, || val);
        }
        Ok(map)
    }
}

/// A register that keeps the largest value it has seen: the join of a total order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxReg<T>(Option<T>);

impl<T> Default for MaxReg<T> {
    fn default() -> Self {
        MaxReg(None)
    }
}

impl<T: Ord> MaxReg<T> {
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }

    pub fn observe(&mut self, value: T) {
        if self.0.as_ref().is_none_or(|cur| value > *cur) {
            self.0 = Some(value);
        }
    }
}

impl<T: Ord> CvRDT for MaxReg<T> {
    type Validation = Infallible;

    fn validate_merge(&self, _other: &Self) -> Result<(), Infallible> {
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        if let Some(v) = other.0 {
            self.observe(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn key(time: u64) -> OrderKey {
        OrderKey {
            time,
            id: Uuid::from_u128(1),
        }
    }

    #[test]
    fn later_marker_wins_and_ties_pick_the_larger_value() {
        let mut a = LwwMap::<String, u8>::new();
        a.update_with("x".into(), key(2), || 1);
        a.update_with("x".into(), key(1), || 9);
        assert_eq!(a.get("x").unwrap().val, 1);
        let mut b = LwwMap::<String, u8>::new();
        b.update_with("x".into(), key(2), || 5);
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(b);
        ba.merge(a);
        assert_eq!(ab, ba);
        assert_eq!(ab.get("x").unwrap().val, 5);
    }

    #[test]
    fn serialises_tuple_keys_to_json() {
        let mut m = LwwMap::<(String, String), u8>::new();
        m.update_with(("saturn".into(), "mosquitto".into()), key(3), || 1);
        let text = serde_json::to_string(&m).unwrap();
        let back: LwwMap<(String, String), u8> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }
}
