//! Integration tests of the rotators against real servers on this machine: a throwaway
//! PostgreSQL cluster per test (`common::PgCluster`), MariaDB on 127.0.0.1:3306 (root without
//! password), Redis on 127.0.0.1:6379 (no auth for `default`), a local HTTP endpoint for the
//! webhook and shell scripts for the command rotator. Each test makes its own users with random
//! names and removes them afterwards.

#[path = "rotators/command.rs"]
mod command;
#[path = "common/mod.rs"]
mod common;
#[path = "rotators/maria.rs"]
mod maria;
#[path = "rotators/pg.rs"]
mod pg;
#[path = "rotators/redis_acl.rs"]
mod redis_acl;
#[path = "rotators/webhook.rs"]
mod webhook;
