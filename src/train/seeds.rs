//! Every random draw of a run (views, dropout masks, shuffles, negatives) is seeded by mixing
//! the run's seed with where the draw is (epoch, batch, sample), so a resumed run draws what an
//! uninterrupted one would: the one mixing function they share.

/// A well-spread 64-bit seed from `seed` and two coordinates.
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut x =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}
