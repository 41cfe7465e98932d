//! `labmesh certs init|issue|list|renew|revoke`.

use std::collections::BTreeMap;
use std::io::Write;

use certs::{JoinBundle, MeshCa};
use serde_json::{Value, json};
use sync::{EventStore, EventWriter, Query};

use crate::cli::exit;
use crate::cli::{CertsCommand, CertsImportArgs, CertsIssueArgs, CertsRevokeArgs};
use labmesh::config::Settings;
use labmesh::error::UsageError;

fn load_ca(settings: &Settings) -> anyhow::Result<MeshCa> {
    let dir = settings.certs_dir();
    MeshCa::load(&dir)?.ok_or_else(|| {
        UsageError(format!(
            "this node does not hold the mesh CA key ({}); run this on the node that created the mesh (its first `labmesh agent` or `labmesh certs init`)",
            dir.join(certs::CA_KEY_FILE).display()
        ))
        .into()
    })
}

fn print(json_out: bool, value: Value, text: String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json_out {
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

pub fn run(settings: &Settings, cmd: &CertsCommand) -> anyhow::Result<u8> {
    match cmd {
        CertsCommand::Init(args) => {
            let dir = settings.certs_dir();
            if MeshCa::load(&dir)?.is_some() {
                return Err(UsageError(format!(
                    "a mesh CA already exists in {}; a second one would split the mesh (remove the folder first if you really mean to start over)",
                    dir.display()
                ))
                .into());
            }
            certs::validate_mesh_name(&args.mesh).map_err(|e| UsageError(e.to_string()))?;
            let ca = MeshCa::generate(&args.mesh, certs::DEFAULT_CA_VALIDITY_DAYS)?;
            ca.save(&dir)?;
            let fp = certs::fingerprint_hex(&ca.fingerprint());
            print(
                args.json,
                json!({"mesh": ca.mesh_name(), "ca_cert": dir.join(certs::CA_CERT_FILE), "ca_key": dir.join(certs::CA_KEY_FILE), "fingerprint": fp, "not_after": ca.not_after().to_rfc3339()}),
                format!(
                    "created mesh CA {:?} in {} (key {} is 0600; keep it on this node only)\nfingerprint {fp}",
                    ca.mesh_name(),
                    dir.display(),
                    dir.join(certs::CA_KEY_FILE).display()
                ),
            )?;
            Ok(exit::OK)
        }
        CertsCommand::Issue(args) => issue(settings, args, false),
        CertsCommand::Renew(args) => issue(settings, args, true),
        CertsCommand::List(args) => list(settings, args.json),
        CertsCommand::Revoke(args) => revoke(settings, args),
        CertsCommand::Import(args) => import(settings, args),
    }
}

fn import(settings: &Settings, args: &CertsImportArgs) -> anyhow::Result<u8> {
    let explicit = settings.name_is_explicit.then_some(settings.name.as_str());
    let identity = labmesh::agent::identity::install_bundle(settings, &args.bundle, explicit)
        .map_err(|e| match e {
            labmesh::agent::identity::IdentityError::Usage(u) => anyhow::Error::from(u),
            other => anyhow::Error::from(other),
        })?;
    let dir = settings.certs_dir();
    print(
        args.json,
        json!({"node": identity.node.node(), "mesh": identity.mesh_name, "mesh_id": identity.mesh_id, "certs_dir": dir}),
        format!(
            "installed the join bundle for node {:?} of mesh {:?} into {}\nnext: start the agent (`labmesh agent --seed HOST:7370`, or `systemctl restart labmesh`)",
            identity.node.node(),
            identity.mesh_name,
            dir.display()
        ),
    )?;
    Ok(exit::OK)
}

fn issue(settings: &Settings, args: &CertsIssueArgs, renew: bool) -> anyhow::Result<u8> {
    let ca = load_ca(settings)?;
    certs::validate_node_name(&args.node).map_err(|e| UsageError(e.to_string()))?;
    if args.days == 0 || args.days > 3650 {
        return Err(UsageError(format!("--days {}: use 1 to 3650", args.days)).into());
    }
    // The CA node may claim any priority: it holds the key that grants them.
    let grant = if args.node == settings.name {
        certs::CA_NODE_ALERTER_PRIORITY
    } else {
        args.alerter_priority
    };
    let identity = ca.issue_granting(&args.node, &args.ips, args.days, grant)?;
    let not_after = identity.not_after().to_rfc3339();
    match &args.out {
        Some(out) => {
            JoinBundle::new(ca.mesh_name(), &identity)
                .write(out, args.force)
                .map_err(|e| match e {
                    certs::CertError::AlreadyExists { .. } => {
                        UsageError(format!("{e} (pass --force to replace it)")).into()
                    }
                    other => anyhow::Error::from(other),
                })?;
            print(
                args.json,
                json!({"node": args.node, "bundle": out, "not_after": not_after, "serial": identity.serial_hex(), "alerter_priority": identity.alerter_priority_cap()}),
                format!(
                    "wrote the join bundle for {} to {} (0600, holds a private key: move it over a trusted channel and delete it after use)\non {}: labmesh join {} --seed {}",
                    args.node,
                    out.display(),
                    args.node,
                    out.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    seed_hint(settings)
                ),
            )?;
        }
        None if renew && args.node == settings.name => {
            identity.save(&settings.certs_dir())?;
            print(
                args.json,
                json!({"node": args.node, "installed": settings.certs_dir(), "not_after": not_after}),
                format!(
                    "renewed this node's certificate (valid until {not_after}); restart the agent to use it"
                ),
            )?;
        }
        None => {
            return Err(UsageError(format!(
                "say where to write {}'s join bundle with --out FILE",
                args.node
            ))
            .into());
        }
    }
    Ok(exit::OK)
}

/// Where the new node should seed: the running local agent's advertised gossip address, else
/// this host's name on the default port.
fn seed_hint(settings: &Settings) -> String {
    let from_agent = labmesh::client::request(settings.api_addr, "GET", "/v1/status", None, None)
        .ok()
        .and_then(|r| r.json().ok())
        .and_then(|status| {
            status["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["self"] == Value::Bool(true))?["gossip_addr"]
                .as_str()
                .map(str::to_owned)
        });
    from_agent.unwrap_or_else(|| {
        format!(
            "{}:{}",
            labmesh::config::host_name(),
            settings.mesh.gossip_addr.port()
        )
    })
}

/// Fingerprints (hex) revoked so far, from the `cert_revoked` events in the store.
fn revoked_fingerprints(settings: &Settings) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut cfg = settings.store_config();
    cfg.read_only = true;
    let (store, _) = EventStore::open(cfg)?;
    let q = Query {
        types: vec!["cert_revoked".into()],
        ..Query::default()
    };
    Ok(store
        .query(&q)
        .iter()
        .filter_map(|e| store.read_bytes(e).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter_map(|doc| {
            let record = doc["payload"]["record"].clone();
            Some((record["fingerprint"].as_str()?.to_owned(), record))
        })
        .collect())
}

fn list(settings: &Settings, json_out: bool) -> anyhow::Result<u8> {
    let dir = settings.certs_dir();
    let issued = MeshCa::list_issued(&dir)?;
    let revoked = revoked_fingerprints(settings)?;
    let now = chrono::Utc::now();
    let rows: Vec<Value> = issued
        .iter()
        .map(|c| {
            let expires = chrono::DateTime::parse_from_rfc3339(&c.not_after)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or(now);
            let state = if revoked.contains_key(&c.fingerprint_hex) {
                "revoked"
            } else if expires < now {
                "expired"
            } else if expires - now < chrono::Duration::days(30) {
                "expiring"
            } else {
                "valid"
            };
            json!({"node": c.node, "serial": c.serial_hex, "fingerprint": c.fingerprint_hex, "not_after": c.not_after, "state": state})
        })
        .collect();
    if json_out {
        print(true, Value::Array(rows), String::new())?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        writeln!(out, "no certificates issued from {}", dir.display())?;
    } else {
        writeln!(
            out,
            "{:<24} {:<9} {:<26} SERIAL",
            "NODE", "STATE", "NOT AFTER"
        )?;
        for r in &rows {
            writeln!(
                out,
                "{:<24} {:<9} {:<26} {}",
                r["node"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["not_after"].as_str().unwrap_or(""),
                r["serial"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(exit::OK)
}

fn revoke(settings: &Settings, args: &CertsRevokeArgs) -> anyhow::Result<u8> {
    let ca = load_ca(settings)?;
    let dir = settings.certs_dir();
    let already = revoked_fingerprints(settings)?;
    let targets: Vec<_> = MeshCa::list_issued(&dir)?
        .into_iter()
        .filter(|c| c.node == args.node)
        .collect();
    if targets.is_empty() {
        return Err(UsageError(format!(
            "this CA has issued no certificate for {:?} (see `labmesh certs list`)",
            args.node
        ))
        .into());
    }
    let writer = EventWriter::new(&settings.data_dir, settings.max_event_bytes);
    let clock = settings.store_config().clock;
    let mut revoked = Vec::new();
    for cert in targets
        .iter()
        .filter(|c| !already.contains_key(&c.fingerprint_hex))
    {
        let pem = std::fs::read_to_string(&cert.path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.path.display()))?;
        let record = ca.sign_revocation(&pem, &args.reason, chrono::Utc::now())?;
        let event = labmesh::drivers::mesh::revocation_event(&record)
            .into_event(&settings.name, clock.now())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        writer.write(&event)?;
        revoked.push(json!({"serial": record.serial, "fingerprint": record.fingerprint}));
    }
    let n = revoked.len();
    print(
        args.json,
        json!({"node": args.node, "revoked": revoked, "already_revoked": targets.len() - n}),
        if n == 0 {
            format!("every certificate of {} was already revoked", args.node)
        } else {
            format!(
                "revoked {n} certificate(s) of {}; the running agent spreads the record to every peer, which then refuse it",
                args.node
            )
        },
    )?;
    Ok(exit::OK)
}
