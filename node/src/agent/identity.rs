//! This node's certificate: created on a first start (zero configuration: a new mesh CA and a
//! certificate from it), installed from a join bundle, or loaded from `<data>/certs`.

use std::path::{Path, PathBuf};

use certs::{CertError, JoinBundle, MeshCa, NodeIdentity};

use crate::config::Settings;
use crate::error::UsageError;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("installing the join bundle into {}: {source}", dir.display())]
    Install {
        dir: PathBuf,
        #[source]
        source: CertError,
    },
    #[error(transparent)]
    Certs(#[from] CertError),
}

/// Validity of the certificate a node issues to itself when it creates a mesh.
const SELF_CERT_DAYS: u32 = certs::DEFAULT_NODE_VALIDITY_DAYS;

pub struct Identity {
    pub node: NodeIdentity,
    pub mesh_name: String,
    /// A short stable id of the mesh: its name and the start of the CA fingerprint.
    pub mesh_id: String,
}

fn mesh_id(mesh_name: &str, node: &NodeIdentity) -> String {
    let ca = certs::fingerprint(node.ca_der().as_ref());
    format!("{mesh_name}-{}", &certs::fingerprint_hex(&ca)[..12])
}

/// Installs `bundle` into the certs dir; refuses a bundle for another node name than an
/// explicitly configured one.
pub fn install_bundle(
    settings: &Settings,
    bundle: &Path,
    explicit_name: Option<&str>,
) -> Result<Identity, IdentityError> {
    let (bundle, warnings) = JoinBundle::read(bundle).map_err(|e| UsageError(e.to_string()))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    if let Some(name) = explicit_name
        && name != bundle.node
    {
        return Err(UsageError(format!(
            "the join bundle is for node {:?} but this node is named {name:?}; drop --name/LABMESH_NAME or issue a bundle for {name:?}",
            bundle.node
        ))
        .into());
    }
    let node = bundle
        .install(&settings.certs_dir())
        .map_err(|source| IdentityError::Install {
            dir: settings.certs_dir(),
            source,
        })?;
    tracing::info!(node = node.node(), mesh = %bundle.mesh, "installed the join bundle");
    Ok(Identity {
        mesh_id: mesh_id(&bundle.mesh, &node),
        mesh_name: bundle.mesh.clone(),
        node,
    })
}

/// A certificate the CA node issues itself: it may claim any alerter priority.
fn issue_own(ca: &MeshCa, node: &str) -> Result<NodeIdentity, CertError> {
    ca.issue_granting(node, &[], SELF_CERT_DAYS, certs::CA_NODE_ALERTER_PRIORITY)
}

/// The `alerter_priority` this node publishes and ranks itself by: what it is configured with,
/// held to what its certificate grants, since every peer holds it to that grant too (a node
/// that ranked itself higher than its peers rank it would see itself alerter while they see
/// another: two alerters).
pub fn granted_priority(configured: i64, node: &NodeIdentity) -> i64 {
    let cap = node.alerter_priority_cap();
    if configured > cap {
        tracing::warn!(
            node = node.node(),
            configured,
            granted = cap,
            "alerter_priority {configured} is above the {cap} this node's certificate grants; using {cap}. To raise it, on the CA node run `labmesh certs renew {} --alerter-priority {configured} --out FILE` and restart this node with `--join FILE`",
            node.node()
        );
        return cap;
    }
    configured
}

/// Loads this node's identity, creating a mesh CA and a certificate on a first start.
pub fn ensure(settings: &Settings, explicit_name: Option<&str>) -> Result<Identity, IdentityError> {
    if let Some(bundle) = &settings.mesh.join {
        return install_bundle(settings, bundle, explicit_name);
    }
    let dir = settings.certs_dir();
    let mesh_name = certs::read_mesh_name(&dir)?.unwrap_or_else(|| settings.mesh.mesh_name.clone());
    if let Some(node) = NodeIdentity::load(&dir)? {
        // Without an explicit name, the certificate names the node (it may have joined with a
        // bundle for a name other than the host name).
        let wanted = explicit_name.unwrap_or(node.node());
        if node.node() != wanted {
            // Renamed on purpose: a CA holder can issue itself a new certificate.
            if let Some(ca) = MeshCa::load(&dir)? {
                let fresh = issue_own(&ca, wanted)?;
                fresh.save(&dir)?;
                tracing::warn!(
                    old = node.node(),
                    new = wanted,
                    "node name changed: issued a new certificate"
                );
                return Ok(Identity {
                    mesh_id: mesh_id(&mesh_name, &fresh),
                    mesh_name,
                    node: fresh,
                });
            }
            return Err(UsageError(format!(
                "this node's certificate in {} is for {:?} but the node name is {wanted:?}; drop --name/LABMESH_NAME, or get a bundle for the new name (`labmesh certs issue {wanted}` on the CA node) and start with --join",
                dir.display(),
                node.node(),
            ))
            .into());
        }
        // A CA node whose certificate predates alerter grants (or was issued without one) would
        // hold itself to priority 0: it holds the CA key, so it grants itself what it claims.
        let node = match MeshCa::load(&dir)? {
            Some(ca) if node.alerter_priority_cap() < settings.mesh.alerter_priority => {
                let fresh = issue_own(&ca, node.node())?;
                fresh.save(&dir)?;
                tracing::info!(
                    node = fresh.node(),
                    alerter_priority = settings.mesh.alerter_priority,
                    "issued this CA node a certificate that grants its alerter priority"
                );
                fresh
            }
            _ => node,
        };
        return Ok(Identity {
            mesh_id: mesh_id(&mesh_name, &node),
            mesh_name,
            node,
        });
    }
    let ca = match MeshCa::load(&dir)? {
        Some(ca) => ca,
        None => {
            let ca = MeshCa::generate(&mesh_name, certs::DEFAULT_CA_VALIDITY_DAYS)?;
            ca.save(&dir)?;
            tracing::info!(mesh = %mesh_name, dir = %dir.display(), "created a new mesh CA (first start)");
            ca
        }
    };
    let node = issue_own(&ca, &settings.name)?;
    node.save(&dir)?;
    Ok(Identity {
        mesh_id: mesh_id(ca.mesh_name(), &node),
        mesh_name: ca.mesh_name().to_owned(),
        node,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_node_ranks_itself_as_its_peers_rank_it() {
        let ca = MeshCa::generate("home", 30).unwrap();
        let plain = ca.issue("vm1", &[], 10).unwrap();
        assert_eq!(granted_priority(10, &plain), 0);
        assert_eq!(granted_priority(-2, &plain), -2);
        let nas = ca.issue_granting("nas1", &[], 10, 10).unwrap();
        assert_eq!(granted_priority(10, &nas), 10);
        assert_eq!(granted_priority(11, &nas), 10);
        let own = issue_own(&ca, "ws").unwrap();
        assert_eq!(granted_priority(i64::MAX, &own), i64::MAX);
    }

    #[test]
    fn a_ca_node_from_before_grants_is_reissued_one_that_grants_its_priority() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::resolve(&crate::config::Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            name: Some("ws".into()),
            ..Default::default()
        })
        .unwrap();
        let first = ensure(&settings, None).unwrap();
        assert_eq!(
            first.node.alerter_priority_cap(),
            certs::CA_NODE_ALERTER_PRIORITY
        );
        // An older CA node's own certificate, issued when certificates granted nothing.
        let certs_dir = settings.certs_dir();
        let ca = MeshCa::load(&certs_dir).unwrap().unwrap();
        ca.issue("ws", &[], 10).unwrap().save(&certs_dir).unwrap();
        settings.mesh.alerter_priority = 0;
        let kept = ensure(&settings, None).unwrap();
        assert_eq!(
            kept.node.alerter_priority_cap(),
            0,
            "no claim, no new certificate"
        );
        settings.mesh.alerter_priority = 10;
        let again = ensure(&settings, None).unwrap();
        assert_eq!(
            again.node.alerter_priority_cap(),
            certs::CA_NODE_ALERTER_PRIORITY
        );
        assert_eq!(again.node.node(), "ws");
        assert_eq!(again.mesh_id, first.mesh_id);
    }
}
