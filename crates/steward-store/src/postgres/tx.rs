//! [`Tx`] for PostgreSQL, with the same semantics as the SQLite one. Statements are prepared
//! once per connection and cached with it (the sync client has no statement cache of its own).

use std::collections::HashMap;

use postgres::{types::ToSql, GenericClient, Row, Statement};

use crate::{
    audit::AuditRecord,
    model::{from_micros, to_micros},
    CheckResultRow, ConsumerRow, EventRow, PolicyRecord, RecordRow, RollupRow, RotationRow,
    SecretHead, StoreError, TokenRecord, Tx, VersionInfo, VersionRow,
};
use chrono::{DateTime, Utc};

/// A transaction (writes, audit) or a plain connection in autocommit mode (reads whose every
/// statement stands alone).
pub(super) struct PgTx<'c, C: GenericClient> {
    pub txn: &'c mut C,
    pub stmts: &'c mut HashMap<&'static str, Statement>,
    /// Reads (autocommit) take no row locks: `audit_head` locks the head only for writers.
    pub read_only: bool,
}

type R<T> = Result<T, StoreError>;
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

fn e(err: postgres::Error) -> StoreError {
    StoreError::pg(err)
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

/// Reads column `i`; a type mismatch means the schema or data was tampered with.
fn col<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> R<T> {
    row.try_get(i).map_err(|x| corrupt("postgres column", x))
}

/// A stored BIGINT that must be a non-negative counter.
fn unsigned(v: i64) -> R<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative counter {v}")))
}

/// A stored BIGINT that must fit a key id.
fn key_id(v: i64) -> R<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("key id {v} out of range")))
}

/// A counter as a BIGINT parameter. (SQLite refuses out-of-range values the same way.)
fn int(v: u64) -> R<i64> {
    i64::try_from(v).map_err(|_| StoreError::Unavailable(format!("value {v} out of range")))
}

fn hash32(v: Vec<u8>) -> R<[u8; 32]> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("stored hash is not 32 bytes".into()))
}

/// Columns `version, created_at, deleted_at, destroyed, key_id` starting at 0.
fn to_info(r: &Row) -> R<VersionInfo> {
    Ok(VersionInfo {
        version: unsigned(col(r, 0)?)?,
        created_at: from_micros(col(r, 1)?)?,
        deleted_at: col::<Option<i64>>(r, 2)?.map(from_micros).transpose()?,
        destroyed: col(r, 3)?,
        key_id: key_id(col(r, 4)?)?,
    })
}

/// Columns `env, path, meta, current_version, oldest_version, created_at, updated_at`.
fn head_from(r: &Row) -> R<SecretHead> {
    Ok(SecretHead {
        env: col(r, 0)?,
        path: col(r, 1)?,
        meta: serde_json::from_str(col(r, 2)?).map_err(|x| corrupt("secret metadata", x))?,
        current_version: unsigned(col(r, 3)?)?,
        oldest_version: unsigned(col(r, 4)?)?,
        created_at: from_micros(col(r, 5)?)?,
        updated_at: from_micros(col(r, 6)?)?,
    })
}

/// Columns `env, path, doc, due_at, updated_at`.
fn rotation_from(r: &Row) -> R<RotationRow> {
    Ok(RotationRow {
        env: col(r, 0)?,
        path: col(r, 1)?,
        doc: col(r, 2)?,
        due_at: col::<Option<i64>>(r, 3)?.map(from_micros).transpose()?,
        updated_at: from_micros(col(r, 4)?)?,
    })
}

/// Columns `kind, id, doc, due_at`.
fn record_from(r: &Row) -> R<RecordRow> {
    Ok(RecordRow {
        kind: col(r, 0)?,
        id: col(r, 1)?,
        doc: col(r, 2)?,
        due_at: col::<Option<i64>>(r, 3)?.map(from_micros).transpose()?,
    })
}

/// Columns `check_name, at, ok, duration_us, error`.
fn result_from(r: &Row) -> R<CheckResultRow> {
    Ok(CheckResultRow {
        check: col(r, 0)?,
        at: from_micros(col(r, 1)?)?,
        ok: col::<i64>(r, 2)? != 0,
        duration_us: unsigned(col(r, 3)?)?,
        error: col(r, 4)?,
    })
}

/// Columns `check_name, res, bucket, doc`.
fn rollup_from(r: &Row) -> R<RollupRow> {
    Ok(RollupRow {
        check: col(r, 0)?,
        res: col(r, 1)?,
        bucket: col(r, 2)?,
        doc: col(r, 3)?,
    })
}

/// Columns `hash, record`.
fn token_from(r: &Row) -> R<TokenRecord> {
    let mut rec: TokenRecord = serde_json::from_str(col(r, 1)?).map_err(|x| corrupt("token", x))?;
    rec.hash = hash32(col(r, 0)?)?;
    Ok(rec)
}

fn audit_from(r: &Row) -> R<AuditRecord> {
    Ok(AuditRecord {
        seq: unsigned(col(r, 0)?)?,
        entry: col(r, 1)?,
        hash: hash32(col(r, 2)?)?,
    })
}

impl<C: GenericClient> PgTx<'_, C> {
    /// The statement for `sql`, prepared on this connection the first time it is used.
    fn stmt(&mut self, sql: &'static str) -> R<Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.txn.prepare(sql).map_err(e)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    fn exec(&mut self, sql: &'static str, params: Params<'_>) -> R<u64> {
        let s = self.stmt(sql)?;
        self.txn.execute(&s, params).map_err(e)
    }

    fn query(&mut self, sql: &'static str, params: Params<'_>) -> R<Vec<Row>> {
        let s = self.stmt(sql)?;
        self.txn.query(&s, params).map_err(e)
    }

    fn query_opt(&mut self, sql: &'static str, params: Params<'_>) -> R<Option<Row>> {
        let s = self.stmt(sql)?;
        self.txn.query_opt(&s, params).map_err(e)
    }

    fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> R<Row> {
        let s = self.stmt(sql)?;
        self.txn.query_one(&s, params).map_err(e)
    }
}

impl<C: GenericClient> Tx for PgTx<'_, C> {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn sys_get(&mut self, key: &str) -> R<Option<Vec<u8>>> {
        self.query_opt("SELECT value FROM sys WHERE key = $1", &[&key])?
            .map(|r| col(&r, 0))
            .transpose()
    }

    fn sys_put(&mut self, key: &str, value: &[u8]) -> R<()> {
        self.exec(
            "INSERT INTO sys (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .map(drop)
    }

    fn sys_insert_new(&mut self, key: &str, value: &[u8]) -> R<bool> {
        self.exec(
            "INSERT INTO sys (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )
        .map(|n| n == 1)
    }

    fn head(&mut self, env: &str, path: &str) -> R<Option<SecretHead>> {
        let Some(r) = self.query_opt(
            "SELECT meta, current_version, oldest_version, created_at, updated_at FROM secrets WHERE env = $1 AND path = $2",
            &[&env, &path],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(SecretHead {
            env: env.into(),
            path: path.into(),
            meta: serde_json::from_str(col(&r, 0)?).map_err(|x| corrupt("secret metadata", x))?,
            current_version: unsigned(col(&r, 1)?)?,
            oldest_version: unsigned(col(&r, 2)?)?,
            created_at: from_micros(col(&r, 3)?)?,
            updated_at: from_micros(col(&r, 4)?)?,
        }))
    }

    fn head_and_version(
        &mut self,
        env: &str,
        path: &str,
        version: Option<u64>,
    ) -> R<Option<(SecretHead, Option<VersionRow>)>> {
        let v = version.map(int).transpose()?;
        let Some(r) = self.query_opt(
            "SELECT s.meta, s.current_version, s.oldest_version, s.created_at, s.updated_at,
                    v.version, v.created_at, v.deleted_at, v.destroyed, v.key_id, v.envelope
             FROM secrets s LEFT JOIN secret_versions v
               ON v.env = s.env AND v.path = s.path
              AND v.version = COALESCE($3::BIGINT, s.current_version)
             WHERE s.env = $1 AND s.path = $2",
            &[&env, &path, &v],
        )?
        else {
            return Ok(None);
        };
        let meta: String = col(&r, 0)?;
        let head = SecretHead {
            env: env.into(),
            path: path.into(),
            meta: serde_json::from_str(&meta).map_err(|x| corrupt("secret metadata", x))?,
            current_version: unsigned(col(&r, 1)?)?,
            oldest_version: unsigned(col(&r, 2)?)?,
            created_at: from_micros(col(&r, 3)?)?,
            updated_at: from_micros(col(&r, 4)?)?,
        };
        let row = match col::<Option<i64>>(&r, 5)? {
            None => None,
            Some(ver) => Some(VersionRow {
                info: VersionInfo {
                    version: unsigned(ver)?,
                    created_at: from_micros(col(&r, 6)?)?,
                    deleted_at: col::<Option<i64>>(&r, 7)?.map(from_micros).transpose()?,
                    destroyed: col(&r, 8)?,
                    key_id: key_id(col(&r, 9)?)?,
                },
                envelope: col(&r, 10)?,
            }),
        };
        Ok(Some((head, row)))
    }

    fn put_head(&mut self, h: &SecretHead) -> R<()> {
        let meta = serde_json::to_string(&h.meta).map_err(|x| corrupt("secret metadata", x))?;
        self.exec(
            "INSERT INTO secrets (env, path, meta, current_version, oldest_version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (env, path) DO UPDATE SET meta = excluded.meta,
               current_version = excluded.current_version, oldest_version = excluded.oldest_version,
               updated_at = excluded.updated_at",
            &[
                &h.env,
                &h.path,
                &meta,
                &int(h.current_version)?,
                &int(h.oldest_version)?,
                &to_micros(h.created_at),
                &to_micros(h.updated_at),
            ],
        )
        .map(drop)
    }

    fn delete_secret(&mut self, env: &str, path: &str) -> R<bool> {
        self.exec(
            "DELETE FROM secret_versions WHERE env = $1 AND path = $2",
            &[&env, &path],
        )?;
        self.exec(
            "DELETE FROM secrets WHERE env = $1 AND path = $2",
            &[&env, &path],
        )
        .map(|n| n == 1)
    }

    fn versions(&mut self, env: &str, path: &str) -> R<Vec<VersionInfo>> {
        self.query(
            "SELECT version, created_at, deleted_at, destroyed, key_id FROM secret_versions
             WHERE env = $1 AND path = $2 ORDER BY version",
            &[&env, &path],
        )?
        .iter()
        .map(to_info)
        .collect()
    }

    fn version(&mut self, env: &str, path: &str, version: u64) -> R<Option<VersionRow>> {
        let Some(r) = self.query_opt(
            "SELECT version, created_at, deleted_at, destroyed, key_id, envelope FROM secret_versions
             WHERE env = $1 AND path = $2 AND version = $3",
            &[&env, &path, &int(version)?],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(VersionRow {
            info: to_info(&r)?,
            envelope: col(&r, 5)?,
        }))
    }

    fn insert_version(&mut self, env: &str, path: &str, i: &VersionInfo, envelope: &[u8]) -> R<()> {
        self.exec(
            "INSERT INTO secret_versions (env, path, version, created_at, deleted_at, destroyed, key_id, envelope)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &env,
                &path,
                &int(i.version)?,
                &to_micros(i.created_at),
                &i.deleted_at.map(to_micros),
                &i.destroyed,
                &i64::from(i.key_id),
                &envelope,
            ],
        )
        .map(drop)
    }

    fn update_version(&mut self, env: &str, path: &str, i: &VersionInfo) -> R<()> {
        self.exec(
            "UPDATE secret_versions SET deleted_at = $4, destroyed = $5,
               envelope = CASE WHEN $5 THEN NULL ELSE envelope END
             WHERE env = $1 AND path = $2 AND version = $3",
            &[
                &env,
                &path,
                &int(i.version)?,
                &i.deleted_at.map(to_micros),
                &i.destroyed,
            ],
        )
        .map(drop)
    }

    fn prune_versions(&mut self, env: &str, path: &str, keep_from: u64) -> R<u64> {
        self.exec(
            "DELETE FROM secret_versions WHERE env = $1 AND path = $2 AND version < $3",
            &[&env, &path, &int(keep_from)?],
        )
    }

    fn list_paths(&mut self, env: &str, prefix: &str, limit: u32) -> R<Vec<String>> {
        // Paths use only [A-Za-z0-9._/-], so prefix + U+FFFF bounds the range; the columns are
        // `COLLATE "C"`, so the comparison (and the order) is bytewise, as in SQLite.
        let upper = format!("{prefix}\u{ffff}");
        self.query(
            "SELECT path FROM secrets WHERE env = $1 AND path >= $2 AND path < $3 ORDER BY path LIMIT $4",
            &[&env, &prefix, &upper, &i64::from(limit)],
        )?
        .iter()
        .map(|r| col(r, 0))
        .collect()
    }

    fn envelopes_not_under(&mut self, key_id: u32, limit: u32) -> R<Vec<crate::tx::RewrapItem>> {
        self.query(
            "SELECT env, path, version, envelope FROM secret_versions
             WHERE key_id <> $1 AND envelope IS NOT NULL LIMIT $2",
            &[&i64::from(key_id), &i64::from(limit)],
        )?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, unsigned(col(r, 2)?)?, col(r, 3)?)))
        .collect()
    }

    fn count_envelopes_not_under(&mut self, key_id: u32) -> R<u64> {
        let r = self.query_one(
            "SELECT COUNT(*) FROM secret_versions WHERE key_id <> $1 AND envelope IS NOT NULL",
            &[&i64::from(key_id)],
        )?;
        unsigned(col(&r, 0)?)
    }

    fn set_envelope(
        &mut self,
        env: &str,
        path: &str,
        version: u64,
        key_id: u32,
        envelope: &[u8],
    ) -> R<()> {
        self.exec(
            "UPDATE secret_versions SET key_id = $4, envelope = $5
             WHERE env = $1 AND path = $2 AND version = $3 AND envelope IS NOT NULL
               AND key_id <> $4",
            &[&env, &path, &int(version)?, &i64::from(key_id), &envelope],
        )
        .map(drop)
    }

    fn token_get(&mut self, hash: &[u8; 32]) -> R<Option<TokenRecord>> {
        self.query_opt(
            "SELECT hash, record FROM tokens WHERE hash = $1",
            &[&&hash[..]],
        )?
        .map(|r| token_from(&r))
        .transpose()
    }

    fn token_by_accessor(&mut self, accessor: &str) -> R<Option<TokenRecord>> {
        self.query_opt(
            "SELECT hash, record FROM tokens WHERE accessor = $1",
            &[&accessor],
        )?
        .map(|r| token_from(&r))
        .transpose()
    }

    fn token_put(&mut self, rec: &TokenRecord) -> R<()> {
        let json = serde_json::to_string(rec).map_err(|x| corrupt("token", x))?;
        self.exec(
            "INSERT INTO tokens (hash, accessor, record, parent) VALUES ($1, $2, $3, $4)
             ON CONFLICT (hash) DO UPDATE SET record = excluded.record, parent = excluded.parent",
            &[&&rec.hash[..], &rec.accessor, &json, &rec.parent],
        )
        .map(drop)
    }

    fn token_children(&mut self, parent: &str) -> R<Vec<TokenRecord>> {
        self.query(
            "SELECT hash, record FROM tokens WHERE parent = $1 ORDER BY accessor",
            &[&parent],
        )?
        .iter()
        .map(token_from)
        .collect()
    }

    fn token_list(&mut self) -> R<Vec<TokenRecord>> {
        self.query("SELECT hash, record FROM tokens ORDER BY accessor", &[])?
            .iter()
            .map(token_from)
            .collect()
    }

    fn policy_get(&mut self, name: &str) -> R<Option<PolicyRecord>> {
        let Some(r) = self.query_opt(
            "SELECT document, updated_at FROM policies WHERE name = $1",
            &[&name],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(PolicyRecord {
            name: name.into(),
            document: col(&r, 0)?,
            updated_at: from_micros(col(&r, 1)?)?,
        }))
    }

    fn policy_put(&mut self, rec: &PolicyRecord) -> R<()> {
        self.exec(
            "INSERT INTO policies (name, document, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
            &[&rec.name, &rec.document, &to_micros(rec.updated_at)],
        )
        .map(drop)
    }

    fn policy_delete(&mut self, name: &str) -> R<bool> {
        self.exec("DELETE FROM policies WHERE name = $1", &[&name])
            .map(|n| n == 1)
    }

    fn policy_list(&mut self) -> R<Vec<PolicyRecord>> {
        self.query(
            "SELECT name, document, updated_at FROM policies ORDER BY name",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(PolicyRecord {
                name: col(r, 0)?,
                document: col(r, 1)?,
                updated_at: from_micros(col(r, 2)?)?,
            })
        })
        .collect()
    }

    fn audit_head(&mut self) -> R<(u64, [u8; 32])> {
        // Several replicas may append: the row lock makes the next writer wait for this
        // transaction and then read the head it committed. A read-only snapshot needs no lock
        // (and PostgreSQL refuses one there).
        let r = if self.read_only {
            self.query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])?
        } else {
            self.query_one(
                "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )?
        };
        Ok((unsigned(col(&r, 0)?)?, hash32(col(&r, 1)?)?))
    }

    fn audit_append(&mut self, recs: &[AuditRecord]) -> R<()> {
        let Some(last) = recs.last() else {
            return Ok(());
        };
        // One round trip for the whole batch.
        let seqs = recs.iter().map(|r| int(r.seq)).collect::<R<Vec<i64>>>()?;
        let entries: Vec<&str> = recs.iter().map(|r| r.entry.as_str()).collect();
        let hashes: Vec<&[u8]> = recs.iter().map(|r| &r.hash[..]).collect();
        self.exec(
            "INSERT INTO audit_log (seq, entry, hash) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[])",
            &[&seqs, &entries, &hashes],
        )?;
        self.exec(
            "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
            &[&int(last.seq)?, &&last.hash[..]],
        )
        .map(drop)
    }

    fn audit_range(&mut self, after: u64, limit: u32) -> R<Vec<AuditRecord>> {
        self.query(
            "SELECT seq, entry, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&int(after)?, &i64::from(limit)],
        )?
        .iter()
        .map(audit_from)
        .collect()
    }

    fn heads_with_expiry(&mut self) -> R<Vec<SecretHead>> {
        self.query(
            "SELECT env, path, meta, current_version, oldest_version, created_at, updated_at FROM secrets
             WHERE meta::jsonb ->> 'expires_at' IS NOT NULL ORDER BY env, path",
            &[],
        )?
        .iter()
        .map(head_from)
        .collect()
    }

    fn rotation_get(&mut self, env: &str, path: &str) -> R<Option<RotationRow>> {
        // Writers lock the row: two replicas never run the same rotation step at once.
        let row = if self.read_only {
            self.query_opt(
                "SELECT env, path, doc, due_at, updated_at FROM rotations WHERE env = $1 AND path = $2",
                &[&env, &path],
            )?
        } else {
            self.query_opt(
                "SELECT env, path, doc, due_at, updated_at FROM rotations WHERE env = $1 AND path = $2 FOR UPDATE",
                &[&env, &path],
            )?
        };
        row.as_ref().map(rotation_from).transpose()
    }

    fn rotation_put(&mut self, row: &RotationRow) -> R<()> {
        self.exec(
            "INSERT INTO rotations (env, path, doc, due_at, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (env, path) DO UPDATE SET doc = excluded.doc, due_at = excluded.due_at, updated_at = excluded.updated_at",
            &[
                &row.env,
                &row.path,
                &row.doc,
                &row.due_at.map(to_micros),
                &to_micros(row.updated_at),
            ],
        )
        .map(drop)
    }

    fn rotation_delete(&mut self, env: &str, path: &str) -> R<bool> {
        self.exec(
            "DELETE FROM rotations WHERE env = $1 AND path = $2",
            &[&env, &path],
        )
        .map(|n| n == 1)
    }

    fn rotation_list(&mut self) -> R<Vec<RotationRow>> {
        self.query(
            "SELECT env, path, doc, due_at, updated_at FROM rotations ORDER BY env, path",
            &[],
        )?
        .iter()
        .map(rotation_from)
        .collect()
    }

    fn rotation_due(&mut self, now: DateTime<Utc>, limit: u32) -> R<Vec<RotationRow>> {
        self.query(
            "SELECT env, path, doc, due_at, updated_at FROM rotations WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
            &[&to_micros(now), &i64::from(limit)],
        )?
        .iter()
        .map(rotation_from)
        .collect()
    }

    fn event_append(&mut self, ev: &EventRow) -> R<u64> {
        // Replicas append concurrently: the audit head's row lock (every write transaction
        // takes it anyway) serializes them, so seq order is commit order and a cursor never
        // skips an event that commits later with a lower seq.
        self.query_one("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE", &[])?;
        let r = self.query_one(
            "INSERT INTO events (seq, time, kind, env, path, detail)
             VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM events), $1, $2, $3, $4, $5) RETURNING seq",
            &[&to_micros(ev.time), &ev.kind, &ev.env, &ev.path, &ev.detail],
        )?;
        unsigned(col(&r, 0)?)
    }

    fn events_after(&mut self, after: u64, limit: u32) -> R<Vec<EventRow>> {
        self.query(
            "SELECT seq, time, kind, env, path, detail FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&int(after)?, &i64::from(limit)],
        )?
        .iter()
        .map(|r| {
            Ok(EventRow {
                seq: unsigned(col(r, 0)?)?,
                time: from_micros(col(r, 1)?)?,
                kind: col(r, 2)?,
                env: col(r, 3)?,
                path: col(r, 4)?,
                detail: col(r, 5)?,
            })
        })
        .collect()
    }

    fn events_last_seq(&mut self) -> R<u64> {
        let r = self.query_one("SELECT COALESCE(MAX(seq), 0) FROM events", &[])?;
        unsigned(col(&r, 0)?)
    }

    fn consumer_put(&mut self, row: &ConsumerRow) -> R<()> {
        self.exec(
            "INSERT INTO consumers (env, path, accessor, version, seen_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (env, path, accessor) DO UPDATE SET
               version = GREATEST(consumers.version, excluded.version),
               seen_at = GREATEST(consumers.seen_at, excluded.seen_at)",
            &[
                &row.env,
                &row.path,
                &row.accessor,
                &int(row.version)?,
                &to_micros(row.seen_at),
            ],
        )
        .map(drop)
    }

    fn consumers(&mut self, env: &str, path: &str) -> R<Vec<ConsumerRow>> {
        self.query(
            "SELECT accessor, version, seen_at FROM consumers WHERE env = $1 AND path = $2 ORDER BY accessor",
            &[&env, &path],
        )?
        .iter()
        .map(|r| {
            Ok(ConsumerRow {
                env: env.into(),
                path: path.into(),
                accessor: col(r, 0)?,
                version: unsigned(col(r, 1)?)?,
                seen_at: from_micros(col(r, 2)?)?,
            })
        })
        .collect()
    }

    fn record_get(&mut self, kind: &str, id: &str) -> R<Option<RecordRow>> {
        let sql = if self.read_only {
            "SELECT kind, id, doc, due_at FROM records WHERE kind = $1 AND id = $2"
        } else {
            "SELECT kind, id, doc, due_at FROM records WHERE kind = $1 AND id = $2 FOR UPDATE"
        };
        self.query_opt(sql, &[&kind, &id])?
            .as_ref()
            .map(record_from)
            .transpose()
    }

    fn record_put(&mut self, row: &RecordRow) -> R<()> {
        self.exec(
            "INSERT INTO records (kind, id, doc, due_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, id) DO UPDATE SET doc = excluded.doc, due_at = excluded.due_at",
            &[&row.kind, &row.id, &row.doc, &row.due_at.map(to_micros)],
        )
        .map(drop)
    }

    fn record_delete(&mut self, kind: &str, id: &str) -> R<bool> {
        self.exec(
            "DELETE FROM records WHERE kind = $1 AND id = $2",
            &[&kind, &id],
        )
        .map(|n| n == 1)
    }

    fn record_list(&mut self, kind: &str, after: &str, limit: u32) -> R<Vec<RecordRow>> {
        self.query(
            "SELECT kind, id, doc, due_at FROM records WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&kind, &after, &i64::from(limit)],
        )?
        .iter()
        .map(record_from)
        .collect()
    }

    fn record_due(&mut self, kind: &str, now: DateTime<Utc>, limit: u32) -> R<Vec<RecordRow>> {
        self.query(
            "SELECT kind, id, doc, due_at FROM records WHERE kind = $1 AND due_at <= $2
             ORDER BY due_at, id LIMIT $3",
            &[&kind, &to_micros(now), &i64::from(limit)],
        )?
        .iter()
        .map(record_from)
        .collect()
    }

    fn record_delete_due(&mut self, kind: &str, before: DateTime<Utc>) -> R<u64> {
        self.exec(
            "DELETE FROM records WHERE kind = $1 AND due_at < $2",
            &[&kind, &to_micros(before)],
        )
    }

    fn record_count(&mut self, kind: &str) -> R<u64> {
        let r = self.query_one("SELECT COUNT(*) FROM records WHERE kind = $1", &[&kind])?;
        unsigned(col(&r, 0)?)
    }

    fn check_results_put(&mut self, rows: &[CheckResultRow]) -> R<()> {
        for r in rows {
            self.exec(
                "INSERT INTO check_results (check_name, at, ok, duration_us, error)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (check_name, at) DO UPDATE SET ok = excluded.ok,
                 duration_us = excluded.duration_us, error = excluded.error",
                &[
                    &r.check,
                    &to_micros(r.at),
                    &i64::from(r.ok),
                    &int(r.duration_us)?,
                    &r.error,
                ],
            )?;
        }
        Ok(())
    }

    fn check_results_range(
        &mut self,
        check: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> R<Vec<CheckResultRow>> {
        let (from, to, limit) = (to_micros(from), to_micros(to), i64::from(limit));
        let rows = match check {
            Some(c) => self.query(
                "SELECT check_name, at, ok, duration_us, error FROM check_results
                 WHERE check_name = $1 AND at >= $2 AND at < $3 ORDER BY at LIMIT $4",
                &[&c, &from, &to, &limit],
            )?,
            None => self.query(
                "SELECT check_name, at, ok, duration_us, error FROM check_results
                 WHERE at >= $1 AND at < $2 ORDER BY at, check_name LIMIT $3",
                &[&from, &to, &limit],
            )?,
        };
        rows.iter().map(result_from).collect()
    }

    fn check_results_latest(&mut self, check: &str, limit: u32) -> R<Vec<CheckResultRow>> {
        self.query(
            "SELECT check_name, at, ok, duration_us, error FROM check_results
             WHERE check_name = $1 ORDER BY at DESC LIMIT $2",
            &[&check, &i64::from(limit)],
        )?
        .iter()
        .map(result_from)
        .collect()
    }

    fn check_results_delete_before(&mut self, before: DateTime<Utc>) -> R<u64> {
        self.exec(
            "DELETE FROM check_results WHERE at < $1",
            &[&to_micros(before)],
        )
    }

    fn rollup_get(&mut self, check: &str, res: &str, bucket: i64) -> R<Option<RollupRow>> {
        self.query_opt(
            "SELECT check_name, res, bucket, doc FROM check_rollups
             WHERE check_name = $1 AND res = $2 AND bucket = $3",
            &[&check, &res, &bucket],
        )?
        .as_ref()
        .map(rollup_from)
        .transpose()
    }

    fn rollup_put(&mut self, row: &RollupRow) -> R<()> {
        self.exec(
            "INSERT INTO check_rollups (check_name, res, bucket, doc) VALUES ($1, $2, $3, $4)
             ON CONFLICT (check_name, res, bucket) DO UPDATE SET doc = excluded.doc",
            &[&row.check, &row.res, &row.bucket, &row.doc],
        )
        .map(drop)
    }

    fn rollups_range(&mut self, check: &str, res: &str, from: i64, to: i64) -> R<Vec<RollupRow>> {
        self.query(
            "SELECT check_name, res, bucket, doc FROM check_rollups
             WHERE check_name = $1 AND res = $2 AND bucket >= $3 AND bucket < $4
             ORDER BY bucket",
            &[&check, &res, &from, &to],
        )?
        .iter()
        .map(rollup_from)
        .collect()
    }

    fn rollups_delete_before(&mut self, res: &str, before: i64) -> R<u64> {
        self.exec(
            "DELETE FROM check_rollups WHERE res = $1 AND bucket < $2",
            &[&res, &before],
        )
    }

    fn savepoint(&mut self) -> R<()> {
        self.txn.batch_execute("SAVEPOINT job").map_err(e)
    }

    fn rollback_savepoint(&mut self) -> R<()> {
        self.txn
            .batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
            .map_err(e)
    }

    fn release_savepoint(&mut self) -> R<()> {
        self.txn.batch_execute("RELEASE SAVEPOINT job").map_err(e)
    }
}
