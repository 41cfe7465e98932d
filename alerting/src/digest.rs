//! Digest (TODO)
