//! Node and mesh names. A node name becomes a certificate's DNS name and part of a file name
//! under `issued/`, so it must be a plain host name; checking it here, once, keeps odd bytes out
//! of certificates, paths and logs.

use std::net::IpAddr;

use crate::error::{CertError, Result};

/// Checks that `name` is a host name we accept as a node name: lower-case ASCII letters, digits
/// and '-', dot-separated labels of 1 to 63 characters not starting or ending with '-', at most
/// 253 characters, and not an IP address.
pub fn validate_node_name(name: &str) -> Result<()> {
    let bad = |problem: &str| CertError::InvalidNodeName {
        name: name.to_string(),
        problem: problem.to_string(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 253 {
        return Err(bad("it is longer than 253 characters"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(bad(
            "it is an IP address (addresses go in the certificate's IP list, not its name)",
        ));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad("it has upper-case letters (use lower case)"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad(
                "it has an empty label (leading, trailing or doubled '.')",
            ));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(bad(&format!("it contains {c:?}")));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Checks a mesh name: 1 to 64 ASCII letters, digits, '-', '_' or '.'.
pub fn validate_mesh_name(name: &str) -> Result<()> {
    let bad = |problem: &str| CertError::InvalidMeshName {
        name: name.to_string(),
        problem: problem.to_string(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 64 {
        return Err(bad("it is longer than 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(bad(&format!("it contains {c:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["nas", "gpu-box-1", "pi4.lan", "a", "0x"] {
            assert!(validate_node_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "NAS", "nas_1", "-nas", "nas-", "a..b", "nas.", "10.0.0.1", "::1", "näs", "a b",
            "x/y",
        ] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
        let long_label = "a".repeat(64);
        assert!(validate_node_name(&long_label).is_err());
        let msg = validate_node_name("Nas_1").unwrap_err().to_string();
        assert!(
            msg.contains("\"Nas_1\"") && msg.contains("lower case"),
            "{msg}"
        );
    }

    #[test]
    fn mesh_names() {
        assert!(validate_mesh_name("home-lab_2.x").is_ok());
        assert!(validate_mesh_name("").is_err());
        assert!(validate_mesh_name("home lab").is_err());
        assert!(validate_mesh_name(&"m".repeat(65)).is_err());
    }
}
