//! Mesh CA and node certificates for labmesh.
//!
//! Every labmesh mesh has its own certificate authority. This crate creates that CA (with
//! `rcgen`), issues node certificates whose subject alternative name is the node name, packs
//! them into join bundles, keeps the signed revocation list that travels through the mesh, and
//! builds the `rustls` client and server configurations (ring provider only, TLS 1.3, client
//! certificates required) that the `mesh` crate's QUIC endpoint uses. A peer is accepted only
//! when its certificate chains to this mesh's CA and is not revoked; its node name comes from the
//! certificate, never from what it says about itself.
