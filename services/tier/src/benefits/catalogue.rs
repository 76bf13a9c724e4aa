//! The programme's catalogue (benefits and plans) and its ladders, read
//! through in-process caches. The catalogue is keyed on its revision, which
//! every PutBenefit and PutPlan raises, and ladder versions never change,
//! so a cached entry is never stale: the caller reads the current revision
//! and ladder version with the member's state in one statement.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
    time::Duration,
};

use laurel_proto::tier::v1 as pb;
use moka::sync::Cache;
use prost::Message;
use sqlx::PgConnection;

/// A programme's benefits and plans at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalogue {
    /// The revision it was read at.
    pub revision: i64,
    /// Benefits by code.
    pub benefits: BTreeMap<String, pb::Benefit>,
    /// Plans by code.
    pub plans: BTreeMap<String, pb::Plan>,
}

/// Cache key: database schema (one per deployment), programme, revision or
/// version.
type Key = (String, String, i64);

static CATALOGUES: LazyLock<Cache<Key, Arc<Catalogue>>> = LazyLock::new(|| {
    Cache::builder()
        .max_capacity(1_000)
        .time_to_idle(Duration::from_secs(600))
        .build()
});

static LADDERS: LazyLock<Cache<Key, Arc<pb::Ladder>>> = LazyLock::new(|| {
    Cache::builder()
        .max_capacity(1_000)
        .time_to_idle(Duration::from_secs(600))
        .build()
});

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, sqlx::Error> {
    M::decode(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The catalogue at `revision` (or a newer one, if it moved on meanwhile).
pub async fn catalogue(
    conn: &mut PgConnection,
    schema: &str,
    program: &str,
    revision: i64,
) -> Result<Arc<Catalogue>, sqlx::Error> {
    let key = (schema.to_owned(), program.to_owned(), revision);
    if let Some(hit) = CATALOGUES.get(&key) {
        return Ok(hit);
    }
    let loaded = Arc::new(load(conn, program).await?);
    CATALOGUES.insert(
        (schema.to_owned(), program.to_owned(), loaded.revision),
        loaded.clone(),
    );
    Ok(loaded)
}

/// Reads the catalogue and its revision in one statement (one snapshot).
async fn load(conn: &mut PgConnection, program: &str) -> Result<Catalogue, sqlx::Error> {
    let (revision, benefits, plans): (i64, Vec<Vec<u8>>, Vec<Vec<u8>>) = sqlx::query_as(
        "SELECT COALESCE((SELECT revision FROM catalogue_revisions WHERE program_id = $1), 0),
                ARRAY(SELECT benefit FROM benefits WHERE program_id = $1 ORDER BY code),
                ARRAY(SELECT plan FROM plans WHERE program_id = $1 ORDER BY code)",
    )
    .bind(program)
    .fetch_one(&mut *conn)
    .await?;
    let mut catalogue = Catalogue {
        revision,
        ..Default::default()
    };
    for bytes in benefits {
        let b: pb::Benefit = decode(&bytes)?;
        catalogue.benefits.insert(b.code.clone(), b);
    }
    for bytes in plans {
        let p: pb::Plan = decode(&bytes)?;
        catalogue.plans.insert(p.code.clone(), p);
    }
    Ok(catalogue)
}

/// The current catalogue (reads its revision first).
pub async fn current(
    conn: &mut PgConnection,
    schema: &str,
    program: &str,
) -> Result<Arc<Catalogue>, sqlx::Error> {
    let revision: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT revision FROM catalogue_revisions WHERE program_id = $1), 0)",
    )
    .bind(program)
    .fetch_one(&mut *conn)
    .await?;
    catalogue(conn, schema, program, revision).await
}

/// Raises the programme's catalogue revision (in the writer's transaction).
pub async fn bump(conn: &mut PgConnection, program: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO catalogue_revisions (program_id, revision) VALUES ($1, 1)
         ON CONFLICT (program_id) DO UPDATE SET revision = catalogue_revisions.revision + 1",
    )
    .bind(program)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ladder `version` of the programme (versions never change once
/// published); `None` when there is none.
pub async fn ladder(
    conn: &mut PgConnection,
    schema: &str,
    program: &str,
    version: Option<i64>,
) -> Result<Option<Arc<pb::Ladder>>, sqlx::Error> {
    let Some(version) = version else {
        return Ok(None);
    };
    let key = (schema.to_owned(), program.to_owned(), version);
    if let Some(hit) = LADDERS.get(&key) {
        return Ok(Some(hit));
    }
    let stored: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT ladder FROM ladders WHERE program_id = $1 AND version = $2")
            .bind(program)
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(bytes) = stored else {
        return Ok(None);
    };
    let ladder = Arc::new(decode::<pb::Ladder>(&bytes)?);
    LADDERS.insert(key, ladder.clone());
    Ok(Some(ladder))
}
