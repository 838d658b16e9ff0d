//! `fc7 export-vectors`: an index's vectors in formats other vector stores load directly —
//! `vectors.npy` (float32 [N, D], NumPy's format, which faiss, Qdrant and Milvus clients read
//! through numpy) and `metadata.jsonl` (one line per row, same order: catalog id and path). The
//! way out of one machine when a collection outgrows it.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::search::catalog::Meta;
use crate::search::index::Index;

/// What an export wrote.
#[derive(Debug, Serialize)]
pub struct Exported {
    pub rows: usize,
    pub dim: usize,
    pub vectors: PathBuf,
    pub metadata: PathBuf,
}

/// NumPy's .npy header (format 1.0) for a C-order float32 array of `rows` × `dim`, padded so
/// that the data starts at a multiple of 64 bytes.
pub fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let unpadded = 6 + 2 + 2 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let len = (dict.len() + pad + 1) as u16;
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h
}

#[derive(Serialize)]
struct Line<'a> {
    row: usize,
    id: i64,
    #[serde(serialize_with = "crate::util::fs::lossy_path")]
    path: &'a Path,
}

/// Writes `out/vectors.npy` and `out/metadata.jsonl` from `index` (a folder or a store), each
/// through a temporary file renamed at the end, so a failed export leaves no half file under
/// either name.
pub fn export_vectors(index: &dyn Index, out: &Path) -> Result<Exported> {
    let rows = index.count()? as usize;
    let dim: usize = index
        .meta(Meta::Dim)?
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let (vectors, metadata) = (out.join("vectors.npy"), out.join("metadata.jsonl"));
    let (vtmp, mtmp) = (
        out.join(".vectors.npy.tmp"),
        out.join(".metadata.jsonl.tmp"),
    );
    let create = |p: &Path| {
        std::fs::File::create(p)
            .map(BufWriter::new)
            .map_err(|e| Error::io(p, e))
    };
    let (mut v, mut m) = (create(&vtmp)?, create(&mtmp)?);
    let mut written = 0usize;
    let mut failed: Option<Error> = None;
    v.write_all(&npy_header(rows, dim))
        .map_err(|e| Error::io(&vtmp, e))?;
    let mut after = 0;
    'pages: loop {
        let page = match index.vectors_page(after, 1024) {
            Ok(p) if p.is_empty() => break,
            Ok(p) => p,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        for (id, path, vec) in page {
            after = id;
            let bytes = crate::util::le::f32s_to_bytes(&vec);
            let line = serde_json::to_string(&Line {
                row: written,
                id,
                path: &path,
            })
            .expect("json");
            if let Err(e) = v.write_all(&bytes).and_then(|_| writeln!(m, "{line}")) {
                failed = Some(Error::io(out, e));
                break 'pages;
            }
            written += 1;
        }
    }
    let finish = |w: BufWriter<std::fs::File>, p: &Path| {
        w.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(p, e))
    };
    let result = failed.map_or(Ok(()), Err).and_then(|_| {
        // Rows without a recorded dimension cannot be described as an array either.
        if written != rows || (dim == 0 && rows > 0) {
            return Err(Error::Index {
                path: PathBuf::from(index.location()),
                reason: "changed during the export (an fc7 index run?); export again".into(),
            });
        }
        finish(v, &vtmp)?;
        finish(m, &mtmp)?;
        std::fs::rename(&vtmp, &vectors).map_err(|e| Error::io(&vectors, e))?;
        std::fs::rename(&mtmp, &metadata).map_err(|e| Error::io(&metadata, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&vtmp);
        let _ = std::fs::remove_file(&mtmp);
    }
    result.map(|_| Exported {
        rows,
        dim,
        vectors,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_numpys_format_1_0() {
        let h = npy_header(3, 4096);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(h.len() % 64, 0, "data aligned to 64 bytes");
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(10 + len, h.len());
        let dict = std::str::from_utf8(&h[10..]).unwrap();
        assert!(dict.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4096), }"));
        assert!(dict.ends_with(" \n"));
    }
}
