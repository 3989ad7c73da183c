//! Integration tests of the secrets engine, run against both store backends (SQLite in a temp
//! dir and a fresh PostgreSQL database per test; see `engine/harness.rs`).
//!
//! Layout: `kv` (versions, cas, delete/destroy, pruning, rollback, listing), `refs`
//! (references and templates), `access` (policies and tokens), `audit` (one entry per
//! operation, no leaks, tamper detection), `at_rest` (encryption at rest, ciphertext swaps, key
//! rotation), `seal` (Shamir and key unsealing) and `concurrency`.

#[path = "engine/access.rs"]
mod access;
#[path = "engine/at_rest.rs"]
mod at_rest;
#[path = "engine/audit.rs"]
mod audit;
#[path = "engine/concurrency.rs"]
mod concurrency;
#[path = "engine/harness.rs"]
mod harness;
#[path = "engine/kv.rs"]
mod kv;
#[path = "engine/refs.rs"]
mod refs;
#[path = "engine/seal.rs"]
mod seal;
