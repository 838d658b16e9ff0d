//! Where an index keeps its fc7 vectors, once: a flat file of rows of `dim` half-precision
//! floats (`vectors-G.f16`, little endian), addressed by the slot the catalog records for each
//! image. Rows are only appended; a row belongs to the index once the catalog transaction that
//! names its slot has committed, and the catalog's row count says where the next append starts,
//! so bytes written by a run that was killed before its commit are simply written over.
//!
//! Half precision keeps 8 KB per 4096-d vector (the catalog used to keep 16 KB, and the graph a
//! second copy): fc7 values are ReLU outputs well inside f16's range, and its 11-bit mantissa
//! moves a Euclidean distance by about 5e-4 of itself.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use half::f16;
use half::slice::HalfFloatSliceExt;
use memmap2::Mmap;

use crate::error::{Error, Result};

/// The file name of vector generation `g`.
pub fn file_name(generation: i64) -> String {
    format!("vectors-{generation}.f16")
}

/// f32 rows as little-endian f16 bytes.
pub fn encode(rows: &[f32]) -> Vec<u8> {
    rows.iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// A read-only view of the committed rows.
pub struct Vectors {
    map: Option<Mmap>,
    dim: usize,
    rows: usize,
    generation: i64,
}

impl Vectors {
    /// Maps `dir/vectors-G.f16`, of which the first `rows` rows are committed.
    pub fn open(dir: &Path, generation: i64, dim: usize, rows: usize) -> Result<Vectors> {
        if rows == 0 || dim == 0 {
            return Ok(Vectors {
                map: None,
                dim,
                rows: 0,
                generation,
            });
        }
        let path = dir.join(file_name(generation));
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: rows below `rows` are never written again (appends go after them and a new
        // generation is a new file), so the mapped bytes do not change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        if map.len() < rows * dim * 2 {
            return Err(Error::Index {
                path: dir.to_path_buf(),
                reason: format!(
                    "{} holds {} bytes, fewer than its {rows} rows of {dim} need",
                    path.display(),
                    map.len()
                ),
            });
        }
        Ok(Vectors {
            map: Some(map),
            dim,
            rows,
            generation,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tells the kernel the rows will be read here and there (a query's re-rank), so a page
    /// fault reads its page rather than a readahead window around it.
    pub fn advise_random(&self) {
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::Random);
        }
    }

    /// The file generation these rows come from (slots are only meaningful within one).
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// The half floats of `slot` (the map is page-aligned and rows are whole f16s; fc7 runs
    /// on little-endian machines, as the file is).
    fn halves(&self, slot: i64) -> Option<&[f16]> {
        let s = usize::try_from(slot).ok().filter(|s| *s < self.rows)?;
        let row = self.dim * 2;
        Some(bytemuck::cast_slice(
            &self.map.as_ref()?[s * row..(s + 1) * row],
        ))
    }

    /// The vector in `slot`; `None` for a slot beyond the rows this view was opened with
    /// (a row committed after it, which the caller may ignore).
    pub fn row(&self, slot: i64) -> Option<Vec<f32>> {
        let h = self.halves(slot)?;
        let mut out = vec![0.0; h.len()];
        h.convert_to_f32_slice(&mut out); // F16C where the CPU has it
        Some(out)
    }

    /// Euclidean distance from `q` to the vector in `slot`.
    pub fn l2_to(&self, slot: i64, q: &[f32]) -> Option<f32> {
        let h = self.halves(slot)?;
        let mut buf = [0.0f32; 256];
        let mut s = 0.0f32;
        for (hc, qc) in h.chunks(256).zip(q.chunks(256)) {
            let b = &mut buf[..hc.len()];
            hc.convert_to_f32_slice(b);
            s += b
                .iter()
                .zip(qc)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>();
        }
        Some(s.sqrt())
    }
}

/// Appends rows to a vector file after its committed rows.
pub struct Appender {
    file: File,
    path: PathBuf,
    dim: usize,
    rows: i64,
}

impl Appender {
    /// Opens (creating) `dir/vectors-G.f16` to append after `rows` committed rows; with none
    /// committed, whatever the file held is dropped.
    pub fn open(dir: &Path, generation: i64, dim: usize, rows: i64) -> Result<Appender> {
        let path = dir.join(file_name(generation));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(rows == 0)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Appender {
            file,
            path,
            dim,
            rows,
        })
    }

    /// Writes `rows` ([n, dim]) after the committed rows and makes them durable; returns their
    /// first slot. They count only once the caller commits them (`commit`).
    pub fn append(&mut self, rows: &[f32]) -> Result<i64> {
        debug_assert_eq!(rows.len() % self.dim.max(1), 0);
        let first = self.rows;
        let at = first as u64 * self.dim as u64 * 2;
        let io = |e| Error::io(&self.path, e);
        self.file.seek(SeekFrom::Start(at)).map_err(io)?;
        self.file.write_all(&encode(rows)).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        Ok(first)
    }

    /// Records that the catalog now counts `rows` rows.
    pub fn commit(&mut self, rows: i64) {
        self.rows = rows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_rows_are_written_over_and_values_keep_half_precision() {
        let d = tempfile::tempdir().unwrap();
        let mut a = Appender::open(d.path(), 1, 3, 0).unwrap();
        assert_eq!(a.append(&[1.0, 2.5, -3.0, 0.1, 65504.0, 7.0]).unwrap(), 0);
        a.commit(2);
        // A run killed after its append and before its commit: these rows never count …
        assert_eq!(a.append(&[9.0, 9.0, 9.0]).unwrap(), 2);
        let mut b = Appender::open(d.path(), 1, 3, 2).unwrap();
        // … and the next run writes its own row into the same slot.
        assert_eq!(b.append(&[4.0, 5.0, 6.0]).unwrap(), 2);
        b.commit(3);
        let v = Vectors::open(d.path(), 1, 3, 3).unwrap();
        assert_eq!(v.row(0).unwrap(), [1.0, 2.5, -3.0]);
        assert_eq!(v.row(2).unwrap(), [4.0, 5.0, 6.0]);
        // 0.1 is not a half-precision number: stored as the nearest one, 0.099975586.
        assert_eq!(v.row(1).unwrap()[0], 0.099975586);
        assert_eq!(v.l2_to(2, &[4.0, 1.0, 3.0]).unwrap(), 5.0);
        assert!(v.row(3).is_none() && v.row(-1).is_none());
        let short = Vectors::open(d.path(), 1, 3, 9);
        assert!(short
            .err()
            .unwrap()
            .to_string()
            .contains("fewer than its 9 rows"));
    }
}
