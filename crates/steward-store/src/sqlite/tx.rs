//! [`Tx`] for SQLite. Statements are prepared once per connection (`prepare_cached`).

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::{
    audit::AuditRecord,
    model::{from_micros, to_micros},
    CheckResultRow, ConsumerRow, EventRow, PolicyRecord, RecordRow, RollupRow, RotationRow,
    SecretHead, StoreError, TokenRecord, Tx, VersionInfo, VersionRow,
};
use chrono::{DateTime, Utc};

pub(super) struct SqliteTx<'c> {
    pub conn: &'c Connection,
}

type R<T> = Result<T, StoreError>;

fn e(err: rusqlite::Error) -> StoreError {
    StoreError::sqlite(err)
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

fn hash32(v: Vec<u8>) -> R<[u8; 32]> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("stored hash is not 32 bytes".into()))
}

fn version_info(r: &Row<'_>) -> rusqlite::Result<(u64, i64, Option<i64>, bool, u32)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_info(t: (u64, i64, Option<i64>, bool, u32)) -> R<VersionInfo> {
    Ok(VersionInfo {
        version: t.0,
        created_at: from_micros(t.1)?,
        deleted_at: t.2.map(from_micros).transpose()?,
        destroyed: t.3,
        key_id: t.4,
    })
}

type HeadCols = (String, String, String, u64, u64, i64, i64);

fn head_cols(r: &Row<'_>) -> rusqlite::Result<HeadCols> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn to_head(c: HeadCols) -> R<SecretHead> {
    Ok(SecretHead {
        env: c.0,
        path: c.1,
        meta: serde_json::from_str(&c.2).map_err(|x| corrupt("secret metadata", x))?,
        current_version: c.3,
        oldest_version: c.4,
        created_at: from_micros(c.5)?,
        updated_at: from_micros(c.6)?,
    })
}

type RotationCols = (String, String, String, Option<i64>, i64);

fn rotation_cols(r: &Row<'_>) -> rusqlite::Result<RotationCols> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_rotation(c: RotationCols) -> R<RotationRow> {
    Ok(RotationRow {
        env: c.0,
        path: c.1,
        doc: c.2,
        due_at: c.3.map(from_micros).transpose()?,
        updated_at: from_micros(c.4)?,
    })
}

type RecordCols = (String, String, String, Option<i64>);

fn record_cols(r: &Row<'_>) -> rusqlite::Result<RecordCols> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_record(c: RecordCols) -> R<RecordRow> {
    Ok(RecordRow {
        kind: c.0,
        id: c.1,
        doc: c.2,
        due_at: c.3.map(from_micros).transpose()?,
    })
}

type ResultCols = (String, i64, i64, i64, Option<String>);

fn result_cols(r: &Row<'_>) -> rusqlite::Result<ResultCols> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_result(c: ResultCols) -> R<CheckResultRow> {
    Ok(CheckResultRow {
        check: c.0,
        at: from_micros(c.1)?,
        ok: c.2 != 0,
        duration_us: u64::try_from(c.3).unwrap_or(0),
        error: c.4,
    })
}

fn rollup_cols(r: &Row<'_>) -> rusqlite::Result<RollupRow> {
    Ok(RollupRow {
        check: r.get(0)?,
        res: r.get(1)?,
        bucket: r.get(2)?,
        doc: r.get(3)?,
    })
}

fn token_from(hash: Vec<u8>, record: String) -> R<TokenRecord> {
    let mut rec: TokenRecord = serde_json::from_str(&record).map_err(|x| corrupt("token", x))?;
    rec.hash = hash32(hash)?;
    Ok(rec)
}

impl Tx for SqliteTx<'_> {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn sys_get(&mut self, key: &str) -> R<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT value FROM sys WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(e)
    }

    fn sys_put(&mut self, key: &str, value: &[u8]) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO sys (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut s| s.execute(params![key, value]))
            .map(drop)
            .map_err(e)
    }

    fn sys_insert_new(&mut self, key: &str, value: &[u8]) -> R<bool> {
        self.conn
            .prepare_cached(
                "INSERT INTO sys (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![key, value]))
            .map(|n| n == 1)
            .map_err(e)
    }

    fn head(&mut self, env: &str, path: &str) -> R<Option<SecretHead>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT meta, current_version, oldest_version, created_at, updated_at FROM secrets WHERE env = ?1 AND path = ?2",
            )
            .and_then(|mut s| {
                s.query_row([env, path], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u64>(1)?,
                        r.get::<_, u64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()
            })
            .map_err(e)?;
        row.map(|(meta, cur, old, c, u)| {
            Ok(SecretHead {
                env: env.into(),
                path: path.into(),
                meta: serde_json::from_str(&meta).map_err(|x| corrupt("secret metadata", x))?,
                current_version: cur,
                oldest_version: old,
                created_at: from_micros(c)?,
                updated_at: from_micros(u)?,
            })
        })
        .transpose()
    }

    fn put_head(&mut self, h: &SecretHead) -> R<()> {
        let meta = serde_json::to_string(&h.meta).map_err(|x| corrupt("secret metadata", x))?;
        self.conn
            .prepare_cached(
                "INSERT INTO secrets (env, path, meta, current_version, oldest_version, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (env, path) DO UPDATE SET meta = excluded.meta,
                   current_version = excluded.current_version, oldest_version = excluded.oldest_version,
                   updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    h.env,
                    h.path,
                    meta,
                    h.current_version,
                    h.oldest_version,
                    to_micros(h.created_at),
                    to_micros(h.updated_at)
                ])
            })
            .map(drop)
            .map_err(e)
    }

    fn delete_secret(&mut self, env: &str, path: &str) -> R<bool> {
        self.conn
            .prepare_cached("DELETE FROM secret_versions WHERE env = ?1 AND path = ?2")
            .and_then(|mut s| s.execute([env, path]))
            .map_err(e)?;
        self.conn
            .prepare_cached("DELETE FROM secrets WHERE env = ?1 AND path = ?2")
            .and_then(|mut s| s.execute([env, path]))
            .map(|n| n == 1)
            .map_err(e)
    }

    fn versions(&mut self, env: &str, path: &str) -> R<Vec<VersionInfo>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT version, created_at, deleted_at, destroyed, key_id FROM secret_versions
                 WHERE env = ?1 AND path = ?2 ORDER BY version",
            )
            .and_then(|mut s| {
                s.query_map([env, path], version_info)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(e)?;
        rows.into_iter().map(to_info).collect()
    }

    fn version(&mut self, env: &str, path: &str, version: u64) -> R<Option<VersionRow>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT version, created_at, deleted_at, destroyed, key_id, envelope FROM secret_versions
                 WHERE env = ?1 AND path = ?2 AND version = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![env, path, version], |r| {
                    Ok((version_info(r)?, r.get::<_, Option<Vec<u8>>>(5)?))
                })
                .optional()
            })
            .map_err(e)?;
        row.map(|(info, envelope)| {
            Ok(VersionRow {
                info: to_info(info)?,
                envelope,
            })
        })
        .transpose()
    }

    fn insert_version(&mut self, env: &str, path: &str, i: &VersionInfo, envelope: &[u8]) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO secret_versions (env, path, version, created_at, deleted_at, destroyed, key_id, envelope)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    env,
                    path,
                    i.version,
                    to_micros(i.created_at),
                    i.deleted_at.map(to_micros),
                    i.destroyed,
                    i.key_id,
                    envelope
                ])
            })
            .map(drop)
            .map_err(e)
    }

    fn update_version(&mut self, env: &str, path: &str, i: &VersionInfo) -> R<()> {
        self.conn
            .prepare_cached(
                "UPDATE secret_versions SET deleted_at = ?4, destroyed = ?5,
                   envelope = CASE WHEN ?5 THEN NULL ELSE envelope END
                 WHERE env = ?1 AND path = ?2 AND version = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    env,
                    path,
                    i.version,
                    i.deleted_at.map(to_micros),
                    i.destroyed
                ])
            })
            .map(drop)
            .map_err(e)
    }

    fn prune_versions(&mut self, env: &str, path: &str, keep_from: u64) -> R<u64> {
        self.conn
            .prepare_cached(
                "DELETE FROM secret_versions WHERE env = ?1 AND path = ?2 AND version < ?3",
            )
            .and_then(|mut s| s.execute(params![env, path, keep_from]))
            .map(|n| n as u64)
            .map_err(e)
    }

    fn list_paths(&mut self, env: &str, prefix: &str, limit: u32) -> R<Vec<String>> {
        // Paths use only [A-Za-z0-9._/-], so prefix + U+FFFF bounds the range.
        let upper = format!("{prefix}\u{ffff}");
        self.conn
            .prepare_cached(
                "SELECT path FROM secrets WHERE env = ?1 AND path >= ?2 AND path < ?3 ORDER BY path LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![env, prefix, upper, limit], |r| r.get(0))?
                    .collect()
            })
            .map_err(e)
    }

    fn envelopes_not_under(&mut self, key_id: u32, limit: u32) -> R<Vec<crate::tx::RewrapItem>> {
        self.conn
            .prepare_cached(
                "SELECT env, path, version, envelope FROM secret_versions
                 WHERE key_id <> ?1 AND envelope IS NOT NULL LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![key_id, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })
            .map_err(e)
    }

    fn count_envelopes_not_under(&mut self, key_id: u32) -> R<u64> {
        self.conn
            .prepare_cached(
                "SELECT COUNT(*) FROM secret_versions WHERE key_id <> ?1 AND envelope IS NOT NULL",
            )
            .and_then(|mut s| s.query_row(params![key_id], |r| r.get(0)))
            .map_err(e)
    }

    fn set_envelope(
        &mut self,
        env: &str,
        path: &str,
        version: u64,
        key_id: u32,
        envelope: &[u8],
    ) -> R<()> {
        self.conn
            .prepare_cached(
                "UPDATE secret_versions SET key_id = ?4, envelope = ?5
                 WHERE env = ?1 AND path = ?2 AND version = ?3 AND envelope IS NOT NULL
                   AND key_id <> ?4",
            )
            .and_then(|mut s| s.execute(params![env, path, version, key_id, envelope]))
            .map(drop)
            .map_err(e)
    }

    fn token_get(&mut self, hash: &[u8; 32]) -> R<Option<TokenRecord>> {
        let row = self
            .conn
            .prepare_cached("SELECT hash, record FROM tokens WHERE hash = ?1")
            .and_then(|mut s| {
                s.query_row([&hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(e)?;
        row.map(|(h, rec)| token_from(h, rec)).transpose()
    }

    fn token_by_accessor(&mut self, accessor: &str) -> R<Option<TokenRecord>> {
        let row = self
            .conn
            .prepare_cached("SELECT hash, record FROM tokens WHERE accessor = ?1")
            .and_then(|mut s| {
                s.query_row([accessor], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(e)?;
        row.map(|(h, rec)| token_from(h, rec)).transpose()
    }

    fn token_put(&mut self, rec: &TokenRecord) -> R<()> {
        let json = serde_json::to_string(rec).map_err(|x| corrupt("token", x))?;
        self.conn
            .prepare_cached(
                "INSERT INTO tokens (hash, accessor, record, parent) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (hash) DO UPDATE SET record = excluded.record, parent = excluded.parent",
            )
            .and_then(|mut s| s.execute(params![&rec.hash[..], rec.accessor, json, rec.parent]))
            .map(drop)
            .map_err(e)
    }

    fn token_children(&mut self, parent: &str) -> R<Vec<TokenRecord>> {
        let rows: Vec<(Vec<u8>, String)> = self
            .conn
            .prepare_cached("SELECT hash, record FROM tokens WHERE parent = ?1 ORDER BY accessor")
            .and_then(|mut s| {
                s.query_map([parent], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(e)?;
        rows.into_iter().map(|(h, r)| token_from(h, r)).collect()
    }

    fn token_list(&mut self) -> R<Vec<TokenRecord>> {
        let rows: Vec<(Vec<u8>, String)> = self
            .conn
            .prepare_cached("SELECT hash, record FROM tokens ORDER BY accessor")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(e)?;
        rows.into_iter().map(|(h, r)| token_from(h, r)).collect()
    }

    fn policy_get(&mut self, name: &str) -> R<Option<PolicyRecord>> {
        let row = self
            .conn
            .prepare_cached("SELECT document, updated_at FROM policies WHERE name = ?1")
            .and_then(|mut s| {
                s.query_row([name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map_err(e)?;
        row.map(|(document, t)| {
            Ok(PolicyRecord {
                name: name.into(),
                document,
                updated_at: from_micros(t)?,
            })
        })
        .transpose()
    }

    fn policy_put(&mut self, rec: &PolicyRecord) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO policies (name, document, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![rec.name, rec.document, to_micros(rec.updated_at)]))
            .map(drop)
            .map_err(e)
    }

    fn policy_delete(&mut self, name: &str) -> R<bool> {
        self.conn
            .prepare_cached("DELETE FROM policies WHERE name = ?1")
            .and_then(|mut s| s.execute([name]))
            .map(|n| n == 1)
            .map_err(e)
    }

    fn policy_list(&mut self) -> R<Vec<PolicyRecord>> {
        let rows: Vec<(String, String, i64)> = self
            .conn
            .prepare_cached("SELECT name, document, updated_at FROM policies ORDER BY name")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(e)?;
        rows.into_iter()
            .map(|(name, document, t)| {
                Ok(PolicyRecord {
                    name,
                    document,
                    updated_at: from_micros(t)?,
                })
            })
            .collect()
    }

    fn audit_head(&mut self) -> R<(u64, [u8; 32])> {
        let (seq, hash): (u64, Vec<u8>) = self
            .conn
            .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(e)?;
        Ok((seq, hash32(hash)?))
    }

    fn audit_append(&mut self, recs: &[AuditRecord]) -> R<()> {
        let Some(last) = recs.last() else {
            return Ok(());
        };
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO audit_log (seq, entry, hash) VALUES (?1, ?2, ?3)")
            .map_err(e)?;
        for rec in recs {
            insert
                .execute(params![rec.seq, rec.entry, &rec.hash[..]])
                .map_err(e)?;
        }
        self.conn
            .prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
            .and_then(|mut s| s.execute(params![last.seq, &last.hash[..]]))
            .map(drop)
            .map_err(e)
    }

    fn audit_range(&mut self, after: u64, limit: u32) -> R<Vec<AuditRecord>> {
        let rows: Vec<(u64, String, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT seq, entry, hash FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![after, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect()
            })
            .map_err(e)?;
        rows.into_iter()
            .map(|(seq, entry, hash)| {
                Ok(AuditRecord {
                    seq,
                    entry,
                    hash: hash32(hash)?,
                })
            })
            .collect()
    }

    fn heads_with_expiry(&mut self) -> R<Vec<SecretHead>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT env, path, meta, current_version, oldest_version, created_at, updated_at FROM secrets WHERE json_extract(meta, '$.expires_at') IS NOT NULL ORDER BY env, path",
            )
            .and_then(|mut s| s.query_map([], head_cols)?.collect::<Result<Vec<_>, _>>())
            .map_err(e)?;
        rows.into_iter().map(to_head).collect()
    }

    fn rotation_get(&mut self, env: &str, path: &str) -> R<Option<RotationRow>> {
        self.conn
            .prepare_cached(
                "SELECT env, path, doc, due_at, updated_at FROM rotations WHERE env = ?1 AND path = ?2",
            )
            .and_then(|mut s| s.query_row([env, path], rotation_cols).optional())
            .map_err(e)?
            .map(to_rotation)
            .transpose()
    }

    fn rotation_put(&mut self, row: &RotationRow) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO rotations (env, path, doc, due_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (env, path) DO UPDATE SET doc = excluded.doc, due_at = excluded.due_at, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row.env,
                    row.path,
                    row.doc,
                    row.due_at.map(to_micros),
                    to_micros(row.updated_at)
                ])
            })
            .map(drop)
            .map_err(e)
    }

    fn rotation_delete(&mut self, env: &str, path: &str) -> R<bool> {
        self.conn
            .prepare_cached("DELETE FROM rotations WHERE env = ?1 AND path = ?2")
            .and_then(|mut s| s.execute([env, path]))
            .map(|n| n == 1)
            .map_err(e)
    }

    fn rotation_list(&mut self) -> R<Vec<RotationRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT env, path, doc, due_at, updated_at FROM rotations ORDER BY env, path",
            )
            .and_then(|mut s| {
                s.query_map([], rotation_cols)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)?;
        rows.into_iter().map(to_rotation).collect()
    }

    fn rotation_due(&mut self, now: DateTime<Utc>, limit: u32) -> R<Vec<RotationRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT env, path, doc, due_at, updated_at FROM rotations WHERE due_at <= ?1 ORDER BY due_at LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![to_micros(now), limit], rotation_cols)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)?;
        rows.into_iter().map(to_rotation).collect()
    }

    fn event_append(&mut self, ev: &EventRow) -> R<u64> {
        // One writer connection: seq order is commit order.
        self.conn
            .prepare_cached(
                "INSERT INTO events (seq, time, kind, env, path, detail)
                 VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM events), ?1, ?2, ?3, ?4, ?5) RETURNING seq",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![to_micros(ev.time), ev.kind, ev.env, ev.path, ev.detail],
                    |r| r.get(0),
                )
            })
            .map_err(e)
    }

    fn events_after(&mut self, after: u64, limit: u32) -> R<Vec<EventRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT seq, time, kind, env, path, detail FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![after, limit], |r| {
                    Ok((
                        r.get::<_, u64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)?;
        rows.into_iter()
            .map(|(seq, t, kind, env, path, detail)| {
                Ok(EventRow {
                    seq,
                    time: from_micros(t)?,
                    kind,
                    env,
                    path,
                    detail,
                })
            })
            .collect()
    }

    fn events_last_seq(&mut self) -> R<u64> {
        self.conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(e)
    }

    fn consumer_put(&mut self, row: &ConsumerRow) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO consumers (env, path, accessor, version, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (env, path, accessor) DO UPDATE SET
                   version = MAX(version, excluded.version), seen_at = MAX(seen_at, excluded.seen_at)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row.env,
                    row.path,
                    row.accessor,
                    row.version,
                    to_micros(row.seen_at)
                ])
            })
            .map(drop)
            .map_err(e)
    }

    fn consumers(&mut self, env: &str, path: &str) -> R<Vec<ConsumerRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT accessor, version, seen_at FROM consumers WHERE env = ?1 AND path = ?2 ORDER BY accessor",
            )
            .and_then(|mut s| {
                s.query_map([env, path], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)?;
        rows.into_iter()
            .map(|(accessor, version, t)| {
                Ok(ConsumerRow {
                    env: env.into(),
                    path: path.into(),
                    accessor,
                    version,
                    seen_at: from_micros(t)?,
                })
            })
            .collect()
    }

    fn record_get(&mut self, kind: &str, id: &str) -> R<Option<RecordRow>> {
        self.conn
            .prepare_cached("SELECT kind, id, doc, due_at FROM records WHERE kind = ?1 AND id = ?2")
            .and_then(|mut s| s.query_row([kind, id], record_cols).optional())
            .map_err(e)?
            .map(to_record)
            .transpose()
    }

    fn record_put(&mut self, row: &RecordRow) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO records (kind, id, doc, due_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, id) DO UPDATE SET doc = excluded.doc, due_at = excluded.due_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row.kind,
                    row.id,
                    row.doc,
                    row.due_at.map(to_micros)
                ])
            })
            .map(drop)
            .map_err(e)
    }

    fn record_delete(&mut self, kind: &str, id: &str) -> R<bool> {
        self.conn
            .prepare_cached("DELETE FROM records WHERE kind = ?1 AND id = ?2")
            .and_then(|mut s| s.execute([kind, id]))
            .map(|n| n == 1)
            .map_err(e)
    }

    fn record_list(&mut self, kind: &str, after: &str, limit: u32) -> R<Vec<RecordRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT kind, id, doc, due_at FROM records WHERE kind = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![kind, after, limit], record_cols)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)?;
        rows.into_iter().map(to_record).collect()
    }

    fn record_due(&mut self, kind: &str, now: DateTime<Utc>, limit: u32) -> R<Vec<RecordRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT kind, id, doc, due_at FROM records WHERE kind = ?1 AND due_at <= ?2
                 ORDER BY due_at, id LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![kind, to_micros(now), limit], record_cols)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)?;
        rows.into_iter().map(to_record).collect()
    }

    fn record_delete_due(&mut self, kind: &str, before: DateTime<Utc>) -> R<u64> {
        self.conn
            .prepare_cached("DELETE FROM records WHERE kind = ?1 AND due_at < ?2")
            .and_then(|mut s| s.execute(params![kind, to_micros(before)]))
            .map(|n| n as u64)
            .map_err(e)
    }

    fn record_count(&mut self, kind: &str) -> R<u64> {
        self.conn
            .prepare_cached("SELECT COUNT(*) FROM records WHERE kind = ?1")
            .and_then(|mut s| s.query_row([kind], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(e)
    }

    fn check_results_put(&mut self, rows: &[CheckResultRow]) -> R<()> {
        let mut s = self
            .conn
            .prepare_cached(
                "INSERT INTO check_results (check_name, at, ok, duration_us, error)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (check_name, at) DO UPDATE SET ok = excluded.ok,
                 duration_us = excluded.duration_us, error = excluded.error",
            )
            .map_err(e)?;
        for r in rows {
            s.execute(params![
                r.check,
                to_micros(r.at),
                i64::from(r.ok),
                i64::try_from(r.duration_us).unwrap_or(i64::MAX),
                r.error
            ])
            .map_err(e)?;
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
        let rows = self
            .conn
            .prepare_cached(
                "SELECT check_name, at, ok, duration_us, error FROM check_results
                 WHERE (?1 IS NULL OR check_name = ?1) AND at >= ?2 AND at < ?3
                 ORDER BY at, check_name LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![check, to_micros(from), to_micros(to), limit],
                    result_cols,
                )?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)?;
        rows.into_iter().map(to_result).collect()
    }

    fn check_results_latest(&mut self, check: &str, limit: u32) -> R<Vec<CheckResultRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT check_name, at, ok, duration_us, error FROM check_results
                 WHERE check_name = ?1 ORDER BY at DESC LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![check, limit], result_cols)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)?;
        rows.into_iter().map(to_result).collect()
    }

    fn check_results_delete_before(&mut self, before: DateTime<Utc>) -> R<u64> {
        self.conn
            .prepare_cached("DELETE FROM check_results WHERE at < ?1")
            .and_then(|mut s| s.execute([to_micros(before)]))
            .map(|n| n as u64)
            .map_err(e)
    }

    fn rollup_get(&mut self, check: &str, res: &str, bucket: i64) -> R<Option<RollupRow>> {
        self.conn
            .prepare_cached(
                "SELECT check_name, res, bucket, doc FROM check_rollups
                 WHERE check_name = ?1 AND res = ?2 AND bucket = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![check, res, bucket], rollup_cols)
                    .optional()
            })
            .map_err(e)
    }

    fn rollup_put(&mut self, row: &RollupRow) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO check_rollups (check_name, res, bucket, doc) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (check_name, res, bucket) DO UPDATE SET doc = excluded.doc",
            )
            .and_then(|mut s| s.execute(params![row.check, row.res, row.bucket, row.doc]))
            .map(drop)
            .map_err(e)
    }

    fn rollups_range(&mut self, check: &str, res: &str, from: i64, to: i64) -> R<Vec<RollupRow>> {
        self.conn
            .prepare_cached(
                "SELECT check_name, res, bucket, doc FROM check_rollups
                 WHERE check_name = ?1 AND res = ?2 AND bucket >= ?3 AND bucket < ?4
                 ORDER BY bucket",
            )
            .and_then(|mut s| {
                s.query_map(params![check, res, from, to], rollup_cols)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(e)
    }

    fn rollups_delete_before(&mut self, res: &str, before: i64) -> R<u64> {
        self.conn
            .prepare_cached("DELETE FROM check_rollups WHERE res = ?1 AND bucket < ?2")
            .and_then(|mut s| s.execute(params![res, before]))
            .map(|n| n as u64)
            .map_err(e)
    }

    fn savepoint(&mut self) -> R<()> {
        self.conn
            .prepare_cached("SAVEPOINT job")
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(e)
    }

    fn rollback_savepoint(&mut self) -> R<()> {
        self.conn
            .execute_batch("ROLLBACK TO job; RELEASE job")
            .map_err(e)
    }

    fn release_savepoint(&mut self) -> R<()> {
        self.conn
            .prepare_cached("RELEASE job")
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(e)
    }
}
