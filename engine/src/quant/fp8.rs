//! FP8 E4M3 (`torch.float8_e4m3fn`, safetensors `F8_E4M3`): 1 sign bit,
//! 4 exponent bits (bias 7), 3 mantissa bits, no Inf.
//!
//! ```text
//! bit 7: sign | bits 6-3: exponent e | bits 2-0: mantissa m
//! e = 0:      (-1)^s * m/8 * 2^-6          (subnormals, 2^-9 .. 7 * 2^-9)
//! e = 1..15:  (-1)^s * (1 + m/8) * 2^(e-7) (normals, 2^-6 .. 448)
//! S.1111.111 (0x7F, 0xFF) is NaN; 0x7E = 448 is the largest finite value.
//! ```
//!
//! `encode` is bit-exact with torch 2.15's `Tensor.to(torch.float8_e4m3fn)`
//! on CPU (checked by `tests/quant_formats.rs`): round to nearest, ties to
//! even; every finite value beyond 448 and ±Inf saturate to ±448 (torch
//! does this itself; ModelOpt and compressed-tensors also clamp scales to
//! [-448, 448] before casting); NaN becomes 0x7F, or 0xFF when its sign bit
//! is set; -0.0 becomes 0x80.

/// The largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;

/// The f32 value of an E4M3 byte (NaN for 0x7F and 0xFF).
#[inline]
pub fn decode(b: u8) -> f32 {
    let sign = ((b >> 7) as u32) << 31;
    let e = ((b >> 3) & 0xF) as u32;
    let m = (b & 7) as u32;
    if e == 15 && m == 7 {
        return f32::from_bits(sign | 0x7FC0_0000);
    }
    if e == 0 {
        // m * 2^-9, exact in f32.
        let v = m as f32 * (1.0 / 512.0);
        return if sign != 0 { -v } else { v };
    }
    f32::from_bits(sign | ((e + 120) << 23) | (m << 20))
}

/// [`decode`] of every byte, computed once.
pub fn decode_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|b| decode(b as u8)))
}

/// The E4M3 byte nearest to `x` (see the module doc for the rules).
pub fn encode(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 31) as u8) << 7;
    if x.is_nan() {
        return sign | 0x7F;
    }
    let a = x.abs();
    if a >= 0.015625 {
        // Normal in E4M3 (or above): keep 3 mantissa bits of the f32, RNE.
        let abits = a.to_bits();
        let mut r = abits >> 20; // exponent and 3 mantissa bits
        let rest = abits & 0xF_FFFF;
        if rest > 0x8_0000 || (rest == 0x8_0000 && r & 1 == 1) {
            r += 1;
        }
        // f32 exponent bias 127 -> E4M3 bias 7: subtract 120 << 3.
        let code = r.saturating_sub(120 << 3);
        return sign | code.min(0x7E) as u8;
    }
    // Subnormal range: multiples of 2^-9, RNE (q = 8 is the smallest normal).
    let q = (a * 512.0).round_ties_even() as u8;
    sign | q
}

/// `encode` after clamping to [-448, 448], as the quantizers do when they cast
/// a scale (identical to `encode` with torch 2.15's saturating cast; kept
/// separate so the intent is visible at call sites).
#[inline]
pub fn encode_saturating(x: f32) -> u8 {
    encode(if x.is_nan() { x } else { x.clamp(-E4M3_MAX, E4M3_MAX) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_code_round_trips() {
        for b in 0..=255u8 {
            let v = decode(b);
            if v.is_nan() {
                assert!(b & 0x7F == 0x7F);
                continue;
            }
            assert_eq!(encode(v), b, "code {b:#04x} = {v}");
        }
    }

    #[test]
    fn edges() {
        assert_eq!(decode(0x7E), 448.0);
        assert_eq!(decode(0x01), 1.0 / 512.0);
        assert_eq!(decode(0x08), 1.0 / 64.0);
        assert_eq!(encode(1000.0), 0x7E);
        assert_eq!(encode(f32::NEG_INFINITY), 0xFE);
        assert_eq!(encode(1.0 / 1024.0), 0); // tie between 0 and 2^-9
        assert_eq!(encode(3.0 / 1024.0), 2); // tie between 1 and 2 (x 2^-9)
        assert_eq!(encode(1.0625), 0x38); // tie between 1 and 1.125
        assert_eq!(encode(1.1875), 0x3A); // tie between 1.125 and 1.25
    }
}
