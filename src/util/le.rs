//! f32 arrays as little-endian bytes and back: how checkpoints, ONNX tensors, exported vectors
//! and the PostgreSQL store keep floats. On a little-endian CPU (every one fc7 builds for) both
//! ways are one copy of the whole array instead of a loop over its values: a checkpoint of the
//! paper network is 0.5 GB, and per-value conversion was a quarter of a short training run.

/// Appends `v`'s values to `out` as little-endian bytes.
pub fn extend_f32s(out: &mut Vec<u8>, v: &[f32]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(v));
    } else {
        out.reserve(v.len() * 4);
        v.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
}

/// `v`'s values as little-endian bytes, borrowed where the CPU is little-endian.
pub fn f32s_as_bytes(v: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(v))
    } else {
        std::borrow::Cow::Owned(f32s_to_bytes(v))
    }
}

/// `v`'s values as little-endian bytes.
pub fn f32s_to_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    extend_f32s(&mut out, v);
    out
}

/// The f32 values of little-endian `bytes`; a tail shorter than 4 bytes is ignored.
pub fn f32s_from_bytes(bytes: &[u8]) -> Vec<f32> {
    let whole = &bytes[..bytes.len() / 4 * 4];
    if cfg!(target_endian = "little") {
        bytemuck::pod_collect_to_vec(whole)
    } else {
        whole
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_their_little_endian_bytes() {
        let v = [1.0f32, -2.5, f32::MIN_POSITIVE, 3.0e38, -0.0];
        let bytes = f32s_to_bytes(&v);
        // 1.0 = 0x3f800000, least significant byte first
        assert_eq!(&bytes[..4], &[0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(&bytes[4..8], &(-2.5f32).to_le_bytes());
        let back = f32s_from_bytes(&bytes);
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        let mut out = vec![7u8];
        extend_f32s(&mut out, &v[..1]);
        assert_eq!(out, [7, 0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(&f32s_as_bytes(&v[..1])[..], [0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(f32s_as_bytes(&v), bytes);
    }

    #[test]
    fn a_misaligned_slice_with_a_short_tail_reads_its_whole_values() {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&f32s_to_bytes(&[0.5, 4.0]));
        bytes.push(9);
        assert_eq!(f32s_from_bytes(&bytes[1..]), [0.5, 4.0]);
    }
}
