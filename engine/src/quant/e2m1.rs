//! E2M1, the 4-bit float of NVFP4 and MXFP4: 1 sign bit, 2 exponent bits
//! (bias 1), 1 mantissa bit, no Inf/NaN.
//!
//! | code | 0 | 1   | 2 | 3   | 4 | 5 | 6 | 7 |
//! |------|---|-----|---|-----|---|---|---|---|
//! | value| 0 | 0.5 | 1 | 1.5 | 2 | 3 | 4 | 6 |
//!
//! Codes 8-15 are the same magnitudes negated (8 is -0).
//!
//! **Packing** (every FP4 format here: ModelOpt, compressed-tensors, gpt-oss,
//! OCP): two codes per byte, element `2j` in the low nibble of byte `j`,
//! element `2j + 1` in the high nibble. (GGUF's MXFP4 orders nibbles
//! differently; see `quant::ggml::blocks`.)
//!
//! **Rounding** (`encode`): round to nearest, ties to the even code, and
//! saturate at 6, exactly as ModelOpt's `NVFP4QTensor._cast_fp4` and
//! compressed-tensors' `cast_to_fp4` do: `|x| <= 0.25 -> 0`, `< 0.75 -> 0.5`,
//! `<= 1.25 -> 1`, `< 1.75 -> 1.5`, `<= 2.5 -> 2`, `< 3.5 -> 3`, `<= 5 -> 4`,
//! else 6. The sign bit is set iff `x < 0`, so a small negative that rounds to
//! zero becomes code 8 (-0) and `-0.0` itself becomes code 0: both tools do
//! this (ModelOpt tests `x < 0`; compressed-tensors multiplies by
//! `torch.sign(x)`, which is 0 for -0.0, then packs the sign bit).

/// The magnitude of each code, sign included (code 8 is -0.0).
pub const E2M1_VALUES: [f32; 16] =
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// The largest E2M1 magnitude.
pub const E2M1_MAX: f32 = 6.0;

/// The value of a 4-bit code (only the low nibble of `code` is read).
#[inline]
pub fn decode(code: u8) -> f32 {
    E2M1_VALUES[(code & 0xF) as usize]
}

/// The code nearest to `x` (already divided by its scale): RNE, saturating at
/// ±6, sign bit iff `x < 0`. NaN encodes as code 7 (callers reject NaN input
/// before it gets here).
#[inline]
pub fn encode(x: f32) -> u8 {
    let sign = if x < 0.0 { 8 } else { 0 };
    let a = x.abs();
    let magnitude = if a <= 0.25 {
        0
    } else if a < 0.75 {
        1
    } else if a <= 1.25 {
        2
    } else if a < 1.75 {
        3
    } else if a <= 2.5 {
        4
    } else if a < 3.5 {
        5
    } else if a <= 5.0 {
        6
    } else {
        7
    };
    sign | magnitude
}

/// Half the distance between the two codes around `|x|` (0.25, 0.5 or 1),
/// the largest rounding error `encode` makes for `|x| <= 6`.
pub fn half_step(x: f32) -> f32 {
    let a = x.abs();
    if a < 2.0 {
        0.25
    } else if a < 4.0 {
        0.5
    } else {
        1.0
    }
}

/// The code of element `i` of a packed row (see the module doc).
#[inline]
pub fn nibble(packed: &[u8], i: usize) -> u8 {
    (packed[i / 2] >> (4 * (i % 2))) & 0xF
}

/// Packs codes (one per byte, low nibble used) two per byte. `codes.len()`
/// must be even; `out.len()` must be half of it.
pub fn pack_into(codes: &[u8], out: &mut [u8]) {
    for (o, pair) in out.iter_mut().zip(codes.chunks_exact(2)) {
        *o = (pair[0] & 0xF) | ((pair[1] & 0xF) << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decodes_every_code_back() {
        for code in 0..16u8 {
            let v = decode(code);
            let expect = if code == 8 { 0 } else { code }; // -0.0 is not < 0
            assert_eq!(encode(v), expect, "code {code}");
        }
    }

    #[test]
    fn ties_go_to_the_even_code() {
        let ties = [(0.25, 0), (0.75, 2), (1.25, 2), (1.75, 4), (2.5, 4), (3.5, 6), (5.0, 6)];
        for (x, code) in ties {
            assert_eq!(encode(x), code, "{x}");
            assert_eq!(encode(-x), code | 8, "-{x}");
        }
        assert_eq!(encode(7.0), 7);
        assert_eq!(encode(f32::INFINITY), 7);
        assert_eq!(encode(-1e-3), 8);
        assert_eq!(encode(-0.0), 0);
    }
}
