//! Score card (TODO)
