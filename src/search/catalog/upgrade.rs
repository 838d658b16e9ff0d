//! Schema 2: the vectors leave the catalog for the vector file. Schema 1 kept every vector as
//! an f32 blob in `images` (and the graph a second copy); upgrading writes them, in id order,
//! to `vectors-1.f16`, then one transaction gives each row its slot, drops the column and
//! forgets the old graph. The transaction is taken before the file is written, so two
//! processes opening an old index upgrade it once; a kill before the commit leaves the old
//! catalog as it was (the next open writes the file again), and the space the blobs held is
//! given back by a VACUUM after.

use super::{vectors_json, Catalog, Meta};
use crate::error::{Error, Result};
use crate::search::vectors::Appender;

const BATCH: usize = 2048;

/// Moves every vector of a schema-1 catalog into the vector file; returns how many.
pub fn to_2(cat: &mut Catalog, dir: &std::path::Path) -> Result<i64> {
    let path = cat.path.clone();
    let db = |source| Error::Catalog {
        path: path.clone(),
        source,
    };
    let dim: usize = cat
        .meta(Meta::Dim)?
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let (tx, version) = cat.locked_version()?;
    if version >= 2 {
        return Ok(0);
    }
    let mut appender = Appender::open(dir, 1, dim, 0)?;
    let mut ids = Vec::new();
    {
        let mut st = tx
            .prepare("SELECT id, vector FROM images ORDER BY id")
            .map_err(db)?;
        let mut rows = st.query([]).map_err(db)?;
        let mut batch = Vec::with_capacity(BATCH * dim);
        while let Some(r) = rows.next().map_err(db)? {
            ids.push(r.get::<_, i64>(0).map_err(db)?);
            let blob = r.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(db)?;
            if blob.len() != dim * 4 {
                return Err(Error::Index {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "image {} has a vector of {} bytes, not {dim} floats",
                        ids.last().unwrap(),
                        blob.len()
                    ),
                });
            }
            batch.extend(crate::util::le::f32s_from_bytes(blob));
            if batch.len() == BATCH * dim {
                let first = appender.append(&batch)?;
                appender.commit(first + BATCH as i64);
                batch.clear();
            }
        }
        if !batch.is_empty() {
            appender.append(&batch)?;
        }
    }
    crate::util::fault::point("upgrade-vectors-written");
    let n = ids.len() as i64;
    tx.execute_batch("ALTER TABLE images ADD COLUMN slot INTEGER")
        .map_err(db)?;
    {
        let mut set = tx
            .prepare("UPDATE images SET slot = ?1 WHERE id = ?2")
            .map_err(db)?;
        for (slot, id) in ids.iter().enumerate() {
            set.execute([slot as i64, *id]).map_err(db)?;
        }
    }
    tx.execute_batch(
        "ALTER TABLE images DROP COLUMN vector; DELETE FROM meta WHERE key = 'graph';",
    )
    .and_then(|_| {
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
            [Meta::Vectors.key(), &vectors_json(1, n)],
        )
    })
    .and_then(|_| tx.pragma_update(None, "user_version", 2))
    .and_then(|_| tx.commit())
    .map_err(db)?;
    if n > 0 {
        // In WAL mode VACUUM writes the whole file through the log: truncate it after.
        cat.conn
            .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(db)?;
    }
    Ok(n)
}
