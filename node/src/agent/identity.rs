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
                let fresh = ca.issue(wanted, &[], SELF_CERT_DAYS)?;
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
    let node = ca.issue(&settings.name, &[], SELF_CERT_DAYS)?;
    node.save(&dir)?;
    Ok(Identity {
        mesh_id: mesh_id(ca.mesh_name(), &node),
        mesh_name: ca.mesh_name().to_owned(),
        node,
    })
}
