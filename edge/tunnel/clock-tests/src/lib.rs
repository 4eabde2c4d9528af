//! No library: the tests under `tests/` are this crate (see Cargo.toml for why it stands alone).
