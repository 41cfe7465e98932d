//! Who sends the notifications: a deterministic choice from the membership view.
//!
//! Every node runs the same pure function over the same gossiped facts (name, liveness,
//! `transient`, `alerter_priority`), so nodes that see the same membership agree on the alerter
//! without exchanging a single extra message. Among live, non-transient members the highest
//! `alerter_priority` wins, then the smallest name.
//!
//! Two guards make the answer safe to act on:
//! - **settle**: a node may notify only after the part of its view the election depends on
//!   (the live eligible members and their priorities) has gained no member for `settle`. A node
//!   that has just started sees only itself and would otherwise elect itself and page at once.
//!   Losing a member does not restart it, so a failover costs detection, not detection + settle.
//! - **isolated transient**: a transient node (a laptop) that sees no eligible peer is on a
//!   train, not witnessing an outage. It records its own alerts locally and never pages, and it
//!   raises nothing about the others being down.
//!
//! A change of alerter is recorded once, by the new alerter, as an `alerter_changed` event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use sync::{Event, NewEvent, Severity};

use crate::util::after;
use crate::{EVENT_SERVICE, EVENT_SOURCE};

/// Event type written by a node when it becomes the alerter.
pub const ALERTER_CHANGED: &str = "alerter_changed";

/// One member of the mesh as this node sees it. The driver maps its liveness view onto this:
/// `live` is alive or suspect; members that left gracefully are omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub live: bool,
    pub transient: bool,
    pub alerter_priority: i64,
}

/// The alerter of a membership view: among live, non-transient members, the highest
/// `alerter_priority`, then the smallest name. `None` when nobody is eligible.
pub fn elect(members: &[Member]) -> Option<&Member> {
    members
        .iter()
        .filter(|m| m.live && !m.transient)
        .max_by(|a, b| {
            a.alerter_priority
                .cmp(&b.alerter_priority)
                .then_with(|| b.name.cmp(&a.name))
        })
}

/// Election knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// How long the eligible part of the view must gain no member before this node may
    /// notify. Longer avoids a fresh node (or a healed partition) paging before it has met its
    /// peers (a duplicate page); shorter lets an alerter resume sooner after a heal. A loss does
    /// not restart it, so it does not delay a failover. Default 10 s: a few gossip rounds at
    /// 300 ms plus a margin for a QUIC handshake to a slow peer.
    pub settle: Duration,
    /// `[alerting] alerters`: the nodes that may be alerter, most preferred first, from this
    /// node's own config. When set, it replaces what members gossip about themselves
    /// (`transient`, `alerter_priority`): a member that claims `alerter_priority = i64::MAX`
    /// cannot take the role. It should be the same list on every node (otherwise two nodes may
    /// each see another alerter). `None`: every live non-transient member, ranked by its
    /// gossiped priority (which the mesh holds to what the member's certificate grants, see
    /// `mesh::gossip_trust`), then name.
    pub alerters: Option<Vec<String>>,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            settle: Duration::from_secs(10),
            alerters: None,
        }
    }
}

impl ElectionConfig {
    /// A member as the election ranks it: with `alerters`, only listed members are eligible,
    /// ranked by their place in the list, whatever they claim.
    fn rank(&self, mut m: Member) -> Member {
        if let Some(list) = &self.alerters {
            match list.iter().position(|n| *n == m.name) {
                Some(i) => {
                    m.transient = false;
                    m.alerter_priority = i64::try_from(list.len() - i).unwrap_or(i64::MAX);
                }
                None => {
                    m.transient = true;
                    m.alerter_priority = 0;
                }
            }
        }
        m
    }
}

/// What this node may do right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// The view changed less than `settle` ago: evaluate, record nothing, send nothing.
    Settling { until: DateTime<Utc> },
    /// This node records alerts and sends notifications for the mesh.
    Alerter,
    /// Another node is the alerter: evaluate in the shadow (to take over warm), send nothing.
    Follower { alerter: String },
    /// A transient node that sees no eligible peer: records its own alerts, never pages.
    Isolated,
}

impl Role {
    pub fn is_alerter(&self) -> bool {
        matches!(self, Role::Alerter)
    }
}

/// This node's election state.
#[derive(Debug, Clone)]
pub struct Election {
    me: String,
    transient: bool,
    priority: i64,
    cfg: ElectionConfig,
    /// The eligible members (name, priority), sorted: the part of the view the result depends on.
    eligible: Vec<(String, i64)>,
    members: Vec<Member>,
    changed_at: DateTime<Utc>,
    /// The latest `alerter_changed` seen in the events: (timestamp, alerter).
    recorded: Option<(DateTime<Utc>, String)>,
    /// Whether this term as alerter has been accounted for (recorded, or found recorded).
    announced: bool,
}

impl Election {
    /// A node that starts at `now`; it is settling until it has seen a stable view.
    pub fn new(
        me: &str,
        transient: bool,
        alerter_priority: i64,
        cfg: ElectionConfig,
        now: DateTime<Utc>,
    ) -> Self {
        let mut e = Election {
            me: me.to_owned(),
            transient,
            priority: alerter_priority,
            cfg,
            eligible: Vec::new(),
            members: Vec::new(),
            changed_at: now,
            recorded: None,
            announced: false,
        };
        e.set_members(Vec::new());
        e.changed_at = now;
        e
    }

    fn set_members(&mut self, mut members: Vec<Member>) -> bool {
        // This node is always live to itself, with its own settings.
        members.retain(|m| m.name != self.me);
        members.push(Member {
            name: self.me.clone(),
            live: true,
            transient: self.transient,
            alerter_priority: self.priority,
        });
        let mut members: Vec<Member> = members.into_iter().map(|m| self.cfg.rank(m)).collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let eligible: Vec<(String, i64)> = members
            .iter()
            .filter(|m| m.live && !m.transient)
            .map(|m| (m.name.clone(), m.alerter_priority))
            .collect();
        self.members = members;
        // A priority change shows as a new (name, priority) pair, so it counts as a newcomer.
        let newcomer = eligible.iter().any(|m| !self.eligible.contains(m));
        self.eligible = eligible;
        newcomer
    }

    /// A new membership snapshot. The settle clock restarts only when an eligible member
    /// appeared (or changed its priority): that member may outrank this node's answer, and a
    /// node still meeting its peers must not page. A member that only went away cannot change
    /// the answer for anyone but itself, and the failure detector has already waited for it:
    /// settling again would add `settle` to every failover for nothing. A false death costs at
    /// most a duplicate page, which we prefer to a late one.
    pub fn on_membership(&mut self, members: Vec<Member>, now: DateTime<Utc>) {
        if self.set_members(members) {
            self.changed_at = now;
        }
    }

    /// Notes `alerter_changed` events (from any node, including this one's own echo).
    pub fn on_event(&mut self, event: &Event) {
        if event.event_type != ALERTER_CHANGED {
            return;
        }
        let Some(alerter) = event.payload.get("alerter").and_then(|v| v.as_str()) else {
            return;
        };
        if self
            .recorded
            .as_ref()
            .is_none_or(|(t, _)| event.timestamp >= *t)
        {
            self.recorded = Some((event.timestamp, alerter.to_owned()));
        }
    }

    /// The members as last seen (this node included).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Is `name` live in this node's view?
    pub fn is_live(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name && m.live)
    }

    /// The alerter of the current view, ignoring settle.
    pub fn elected(&self) -> Option<String> {
        elect(&self.members).map(|m| m.name.clone())
    }

    /// When the view will count as stable.
    pub fn settled_at(&self) -> DateTime<Utc> {
        after(self.changed_at, self.cfg.settle)
    }

    pub fn role(&self, now: DateTime<Utc>) -> Role {
        if self.transient && self.eligible.is_empty() {
            return Role::Isolated;
        }
        let until = self.settled_at();
        if now < until {
            return Role::Settling { until };
        }
        match self.elected() {
            Some(a) if a == self.me => Role::Alerter,
            Some(alerter) => Role::Follower { alerter },
            None => Role::Isolated,
        }
    }

    /// The `alerter_changed` event to write, once per term, when this node has just become the
    /// alerter and the events do not already say so (a restart of the same alerter is no change).
    pub fn poll(&mut self, now: DateTime<Utc>) -> Option<NewEvent> {
        if !self.role(now).is_alerter() {
            self.announced = false;
            return None;
        }
        if self.announced {
            return None;
        }
        self.announced = true;
        let previous = self.recorded.as_ref().map(|(_, a)| a.clone());
        if previous.as_deref() == Some(self.me.as_str()) {
            return None;
        }
        let mut payload = Map::new();
        payload.insert("alerter".into(), json!(self.me));
        payload.insert("previous".into(), json!(previous));
        payload.insert(
            "eligible".into(),
            json!(
                self.eligible
                    .iter()
                    .map(|(n, p)| json!({"node": n, "alerter_priority": p}))
                    .collect::<Vec<_>>()
            ),
        );
        payload.insert(
            "settled_at".into(),
            json!(sync::event::format_timestamp(self.settled_at())),
        );
        Some(
            NewEvent::new(ALERTER_CHANGED, Severity::Info, EVENT_SOURCE)
                .service(EVENT_SERVICE)
                .payload(payload),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn m(name: &str, live: bool, transient: bool, prio: i64) -> Member {
        Member {
            name: name.into(),
            live,
            transient,
            alerter_priority: prio,
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
    }

    #[test]
    fn highest_priority_then_smallest_name_among_live_non_transient() {
        let view = vec![
            m("vm2", true, false, 0),
            m("vm1", true, false, 0),
            m("laptop", true, true, 100),
            m("nas", false, false, 50),
        ];
        assert_eq!(elect(&view).unwrap().name, "vm1");
        let view = vec![m("vm2", true, false, 5), m("vm1", true, false, 0)];
        assert_eq!(elect(&view).unwrap().name, "vm2");
        assert!(elect(&[m("laptop", true, true, 9)]).is_none());
    }

    #[test]
    fn the_answer_does_not_depend_on_order() {
        let mut view = vec![
            m("c", true, false, 1),
            m("a", true, false, 1),
            m("b", true, false, 2),
            m("d", false, false, 3),
        ];
        let first = elect(&view).unwrap().name.clone();
        view.reverse();
        assert_eq!(elect(&view).unwrap().name, first);
        assert_eq!(first, "b");
    }

    #[test]
    fn with_an_alerters_list_claims_do_not_count() {
        let cfg = ElectionConfig {
            alerters: Some(vec!["nas1".into(), "ws".into()]),
            ..ElectionConfig::default()
        };
        // mallory claims the highest priority; ws claims to be transient; neither counts.
        let view = vec![
            m("mallory", true, false, i64::MAX),
            m("ws", true, true, 0),
            m("nas1", false, false, 0),
        ];
        let mut e = Election::new("vm1", false, 0, cfg.clone(), t(0));
        e.on_membership(view, t(0));
        assert_eq!(
            e.role(t(20)),
            Role::Follower {
                alerter: "ws".into()
            }
        );
        // nas1 returns and, first in the list, takes over.
        let mut e = Election::new("vm1", false, 0, cfg, t(0));
        e.on_membership(
            vec![
                m("mallory", true, false, i64::MAX),
                m("ws", true, true, 0),
                m("nas1", true, false, -5),
            ],
            t(0),
        );
        assert_eq!(
            e.role(t(20)),
            Role::Follower {
                alerter: "nas1".into()
            }
        );
    }

    #[test]
    fn a_fresh_node_settles_before_it_may_notify() {
        let mut e = Election::new("vm1", false, 0, ElectionConfig::default(), t(0));
        assert!(matches!(e.role(t(5)), Role::Settling { .. }));
        assert!(e.poll(t(5)).is_none());
        assert_eq!(e.role(t(10)), Role::Alerter);
        // It meets vm0 (smaller name): the view changed, so settle again, then follow.
        e.on_membership(vec![m("vm0", true, false, 0)], t(11));
        assert!(matches!(e.role(t(15)), Role::Settling { .. }));
        assert_eq!(
            e.role(t(21)),
            Role::Follower {
                alerter: "vm0".into()
            }
        );
        // A transient peer coming and going does not disturb the settle clock.
        e.on_membership(
            vec![m("vm0", true, false, 0), m("laptop", true, true, 0)],
            t(22),
        );
        assert!(matches!(e.role(t(22)), Role::Follower { .. }));
    }

    #[test]
    fn alerter_changed_is_written_once_by_the_new_alerter() {
        let mut e = Election::new("vm2", false, 0, ElectionConfig::default(), t(0));
        e.on_membership(vec![m("vm1", true, false, 0)], t(0));
        assert!(e.poll(t(20)).is_none(), "a follower writes nothing");
        // vm1 dies: vm2 takes over and says so once.
        e.on_membership(vec![m("vm1", false, false, 0)], t(30));
        let ev = e.poll(t(30)).expect("alerter_changed");
        assert_eq!(ev.event_type, ALERTER_CHANGED);
        assert_eq!(ev.payload["alerter"], "vm2");
        assert!(e.poll(t(50)).is_none(), "only once per term");
    }

    #[test]
    fn a_survivor_takes_over_at_once_but_a_newcomer_is_settled_for() {
        let mut e = Election::new("vm2", false, 0, ElectionConfig::default(), t(0));
        let view = |vm1_live| vec![m("vm1", vm1_live, false, 0), m("vm3", true, false, 0)];
        e.on_membership(view(true), t(1));
        assert!(matches!(e.role(t(20)), Role::Follower { .. }));
        // The alerter's death is a loss: the detector already waited, so no settle on top.
        e.on_membership(view(false), t(30));
        assert_eq!(e.role(t(30)), Role::Alerter);
        // Its return is a newcomer that outranks vm2: hold until the view is stable again.
        e.on_membership(view(true), t(40));
        assert!(matches!(e.role(t(40)), Role::Settling { .. }));
        assert_eq!(
            e.role(t(51)),
            Role::Follower {
                alerter: "vm1".into()
            }
        );
        // A changed priority is news too.
        e.on_membership(
            vec![m("vm1", true, false, 9), m("vm3", true, false, 0)],
            t(60),
        );
        assert!(matches!(e.role(t(60)), Role::Settling { .. }));
    }

    #[test]
    fn a_restarted_alerter_that_is_already_recorded_writes_nothing() {
        let mut e = Election::new("vm1", false, 0, ElectionConfig::default(), t(0));
        let recorded = NewEvent::new(ALERTER_CHANGED, Severity::Info, "x")
            .payload(json!({"alerter": "vm1"}).as_object().unwrap().clone())
            .into_event("vm1", t(-100))
            .unwrap();
        e.on_event(&recorded);
        assert!(e.poll(t(20)).is_none());
        assert_eq!(e.role(t(20)), Role::Alerter);
    }

    #[test]
    fn an_isolated_laptop_never_pages() {
        let mut e = Election::new("laptop", true, 0, ElectionConfig::default(), t(0));
        e.on_membership(vec![m("vm1", false, false, 0)], t(1));
        assert_eq!(e.role(t(100)), Role::Isolated);
        assert!(e.poll(t(100)).is_none());
        e.on_membership(vec![m("vm1", true, false, 0)], t(101));
        assert!(matches!(e.role(t(102)), Role::Settling { .. }));
        assert_eq!(
            e.role(t(120)),
            Role::Follower {
                alerter: "vm1".into()
            }
        );
    }
}
