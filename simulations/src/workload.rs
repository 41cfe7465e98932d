//! What nodes write: incidents (`service_unhealthy` then `service_recovered`), deployments
//! (`deployment_started` then `deployment_completed`) and metric samples, at Poisson rates.

use rand::Rng;
use serde_json::{Map, Value, json};
use sync::{NewEvent, Severity};

use crate::scenario::Rates;
use crate::sim::Ms;

const SERVICES: [&str; 6] = [
    "nginx", "postgres", "grafana", "jellyfin", "gitea", "ollama",
];

/// One workload action due at some time on some node.
#[derive(Debug, Clone)]
pub enum Work {
    /// Start an incident (its recovery is scheduled `incident_s` later).
    Incident,
    Recover {
        service: String,
        correlation: String,
    },
    Deploy,
    DeployDone {
        service: String,
        correlation: String,
    },
    Metric,
}

/// Exponential wait for a rate per hour; `None` when the rate is zero.
pub fn next_wait(rng: &mut impl Rng, per_hour: f64) -> Option<Ms> {
    if per_hour <= 0.0 {
        return None;
    }
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let hours = -u.ln() / per_hour;
    Some((hours * 3_600_000.0).max(1.0) as Ms)
}

fn payload(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The event for `work`, and a follow-up `(after, work)` to schedule.
pub fn make(
    rng: &mut impl Rng,
    work: &Work,
    rates: &Rates,
    seq: u64,
) -> (NewEvent, Option<(Ms, Work)>) {
    let pick = |rng: &mut dyn rand::RngCore| SERVICES[rng.random_range(0..SERVICES.len())];
    match work {
        Work::Incident => {
            let service = pick(rng);
            let correlation = format!("inc-{seq}");
            let e = NewEvent::new("service_unhealthy", Severity::Error, "healthcheck")
                .service(service)
                .correlation_id(&correlation)
                .payload(payload(json!({"check": "http", "status": 503})));
            let follow = Work::Recover {
                service: service.to_owned(),
                correlation,
            };
            (e, Some((rates.incident_s * 1000, follow)))
        }
        Work::Recover {
            service,
            correlation,
        } => (
            NewEvent::new("service_recovered", Severity::Info, "healthcheck")
                .service(service)
                .correlation_id(correlation),
            None,
        ),
        Work::Deploy => {
            let service = pick(rng);
            let correlation = format!("dep-{seq}");
            let e = NewEvent::new("deployment_started", Severity::Info, "deploy.sh")
                .service(service)
                .correlation_id(&correlation)
                .payload(payload(json!({"version": format!("1.{seq}.0")})));
            let follow = Work::DeployDone {
                service: service.to_owned(),
                correlation,
            };
            (e, Some((rng.random_range(10_000..120_000), follow)))
        }
        Work::DeployDone {
            service,
            correlation,
        } => (
            NewEvent::new("deployment_completed", Severity::Info, "deploy.sh")
                .service(service)
                .correlation_id(correlation),
            None,
        ),
        Work::Metric => {
            let value: f64 = rng.random_range(0.0..100.0);
            (
                NewEvent::new("metric_sample", Severity::Info, "collector").payload(payload(
                    json!({"metric": "cpu_percent", "value": (value * 10.0).round() / 10.0}),
                )),
                None,
            )
        }
    }
}
