//! Integration tests of the HTTP API: the whole router (`steward_api::app`) over a fresh,
//! initialized SQLite store, driven without a socket (see `api/harness.rs`).
//!
//! Layout: `errors` (the one error shape from every producer, request ids), `kv` (Vault KV v2
//! shapes, listing, cas, versions, mounts), `auth` (tokens and policies), `sys` (sealing, the
//! audit fallback, metrics, the OpenAPI document) and `fuzz` (proptest over request decoding,
//! plus the hand-picked corpus in `tests/corpus/`).

#[path = "api/auth.rs"]
mod auth;
#[path = "api/errors.rs"]
mod errors;
#[path = "api/fuzz.rs"]
mod fuzz;
#[path = "api/harness.rs"]
mod harness;
#[path = "api/kv.rs"]
mod kv;
#[path = "api/sys.rs"]
mod sys;
