//! Steward's shared vocabulary: validated names and paths, the configuration model, and the
//! injectable clock. This crate does no IO (the config loader takes text, not a path it opens).
#![forbid(unsafe_code)]

pub mod alerting;
pub mod backup;
pub mod clock;
pub mod config;
pub mod monitoring;
pub mod names;
pub mod settings;
pub mod text;

pub use clock::{Clock, ManualClock, SystemClock};
pub use names::{EnvName, NameError, SecretPath};
