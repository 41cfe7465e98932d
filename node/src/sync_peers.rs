//! Which peers' sync sessions to drop. A session opened with a process that restarted or left
//! the live set is never answered; until `session_timeout` (60 s) expires it, it counts
//! against `max_sessions` and stops a new session with that peer from starting, so a restarted
//! peer would wait a minute to be reconciled from this side.

use std::collections::BTreeMap;

/// Why a peer's sessions were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// Its mesh generation changed: a new process, which knows nothing of the old sessions.
    Restarted,
    /// It is no longer live (offline, dead or left).
    Gone,
}

impl Departure {
    pub fn as_str(self) -> &'static str {
        match self {
            Departure::Restarted => "restarted",
            Departure::Gone => "not live",
        }
    }
}

/// Peers whose sessions belong to a process that is gone, given the live peers (name to mesh
/// generation) seen last time and now. A peer seen for the first time has no sessions yet.
pub fn peers_to_abandon(
    previous: &BTreeMap<String, u64>,
    current: &BTreeMap<String, u64>,
) -> Vec<(String, Departure)> {
    previous
        .iter()
        .filter_map(|(name, generation)| match current.get(name) {
            None => Some((name.clone(), Departure::Gone)),
            Some(now) if now != generation => Some((name.clone(), Departure::Restarted)),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(peers: &[(&str, u64)]) -> BTreeMap<String, u64> {
        peers.iter().map(|(n, g)| ((*n).to_owned(), *g)).collect()
    }

    #[test]
    fn a_new_generation_is_a_restart() {
        let before = live(&[("bravo", 100), ("charlie", 200)]);
        let after = live(&[("bravo", 150), ("charlie", 200)]);
        assert_eq!(
            peers_to_abandon(&before, &after),
            vec![("bravo".to_owned(), Departure::Restarted)]
        );
    }

    #[test]
    fn a_peer_that_leaves_the_live_set_is_gone() {
        let before = live(&[("bravo", 100), ("charlie", 200)]);
        let after = live(&[("bravo", 100)]);
        assert_eq!(
            peers_to_abandon(&before, &after),
            vec![("charlie".to_owned(), Departure::Gone)]
        );
    }

    #[test]
    fn steady_and_new_peers_keep_their_sessions() {
        let before = live(&[("bravo", 100)]);
        let after = live(&[("bravo", 100), ("delta", 5)]);
        assert!(peers_to_abandon(&before, &after).is_empty());
        assert!(peers_to_abandon(&BTreeMap::new(), &after).is_empty());
    }

    #[test]
    fn the_first_sight_of_a_peer_after_it_left_drops_nothing_more() {
        // Gone once (sessions dropped then); back with a new process: nothing left to drop.
        let before = live(&[("bravo", 100)]);
        let gone = live(&[]);
        let back = live(&[("bravo", 300)]);
        assert_eq!(peers_to_abandon(&before, &gone).len(), 1);
        assert!(peers_to_abandon(&gone, &back).is_empty());
    }
}
