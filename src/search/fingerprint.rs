//! A file's fingerprint for recognising it after a move or rename without decoding it: SHA-256
//! of its length and its first and last 64 KiB (the middle of a large file is never read).

use std::path::Path;

/// Partial content hash: size, first and last 64 KiB. Enough to recognise a moved file.
pub fn partial_hash(bytes: &[u8]) -> Vec<u8> {
    let part = PART as usize;
    digest_parts(
        bytes.len() as u64,
        &bytes[..bytes.len().min(part)],
        &bytes[bytes.len().saturating_sub(part)..],
    )
}

const PART: u64 = 64 * 1024;

/// The one definition of the partial hash, from a file's length and its two ends.
fn digest_parts(len: u64, head: &[u8], tail: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    h.update(head);
    h.update(tail);
    h.finalize().to_vec()
}

pub fn hash_file(path: &Path) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len <= 2 * PART {
        let mut all = Vec::new();
        f.read_to_end(&mut all).ok()?;
        return Some(partial_hash(&all));
    }
    // The ends partial_hash would see, without reading the middle.
    let mut head = vec![0; PART as usize];
    f.read_exact(&mut head).ok()?;
    let mut tail = vec![0; PART as usize];
    f.seek(SeekFrom::End(-(PART as i64))).ok()?;
    f.read_exact(&mut tail).ok()?;
    Some(digest_parts(len, &head, &tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_only_the_ends_gives_the_in_memory_hash() {
        let d = tempfile::tempdir().unwrap();
        for len in [10usize, 2 * PART as usize, 300_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = d.path().join(format!("f{len}"));
            std::fs::write(&p, &bytes).unwrap();
            assert_eq!(hash_file(&p), Some(partial_hash(&bytes)), "length {len}");
        }
        let mut other: Vec<u8> = (0..300_000).map(|i| (i * 31 % 251) as u8).collect();
        other[150_000] ^= 1;
        let p = d.path().join("middle");
        std::fs::write(&p, &other).unwrap();
        assert_eq!(
            hash_file(&p),
            hash_file(&d.path().join("f300000")),
            "the middle is not read"
        );
    }
}
