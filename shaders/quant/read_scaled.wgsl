// Reader prelude for quantized weights with separate scales (NVFP4, MXFP4,
// FP8, INT8, INT4): joined in front of an op body in shaders/quant/ (see
// shaders/src/lib.rs). The body declares the `codes` and `scales` bindings
// (array<u32>) and `p` with the fields `group`, `spr`, `tensor_scale` and
// `has_zp`; this file gives it `load_q`.
//
// Layout (engine/src/quant/device_layout.rs, written by backend-wgpu/src/quant.rs):
// - codes: 4-bit formats: element i of a row is bits 4(i%8).. of word i/8
//   (element 2j in the low nibble of byte j, as stored); 8-bit formats: bits
//   8(i%4).. of word i/4.
// - scales: element i of a row uses scale group i / group (g = 0..spr).
//   NVFP4 (E4M3) and MXFP4 (E8M0) scale bytes are kept raw, 4 per word (byte
//   g at bits 8(g%4) of word g/4); FP8, INT8 and INT4 scales are f32 words.
//   INT4 with zero points: after the spr f32 scales, the i8 zero points, 4
//   per word.
// - NVFP4's tensor scale is `p.tensor_scale`.

// 0: NVFP4 ModelOpt (E2M1 * (E4M3 * tensor_scale)), 1: NVFP4 compressed-tensors
// (E2M1 * (E4M3 / tensor_scale)), 2: MXFP4 (E2M1 * 2^(e-127)), 3: FP8 E4M3 * f32,
// 4: INT8 * f32, 5: INT4 ((q - zp) * f32)
override Q_FMT: u32 = 0u;

const E2M1: array<f32, 16> = array<f32, 16>(
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
);

// engine/src/quant/fp8.rs `decode` (0x7F/0xFF, NaN, never occur as scales or
// finite weights)
fn e4m3(b: u32) -> f32 {
    let sign = (b >> 7u) << 31u;
    let e = (b >> 3u) & 0xfu;
    let m = b & 7u;
    if (e == 0u) {
        let v = f32(m) * (1.0 / 512.0);
        return select(v, -v, sign != 0u);
    }
    return bitcast<f32>(sign | ((e + 120u) << 23u) | (m << 20u));
}

// 2^(e - 127); e = 0 is the f32 subnormal 2^-127 (0x00400000), which a device
// that flushes subnormals reads as 0
fn e8m0(e: u32) -> f32 {
    if (e == 0u) {
        return bitcast<f32>(0x00400000u);
    }
    return bitcast<f32>(e << 23u);
}

fn scale_byte(srow: u32, g: u32) -> u32 {
    return (scales[srow + (g >> 2u)] >> (8u * (g & 3u))) & 0xffu;
}

// element kk of the weight row whose codes start at word `crow` of `codes`
// and whose scales start at word `srow` of `scales`, dequantized
fn load_q(crow: u32, srow: u32, kk: u32) -> f32 {
    let g = kk / p.group;
    if (Q_FMT <= 2u || Q_FMT == 5u) {
        let code = (codes[crow + (kk >> 3u)] >> (4u * (kk & 7u))) & 0xfu;
        if (Q_FMT == 5u) {
            var zp = 0.0;
            if (p.has_zp == 1u) {
                let zb = scale_byte(srow + p.spr, g);
                zp = f32(i32(zb << 24u) >> 24u);
            }
            return (f32(i32(code) - 8) - zp) * bitcast<f32>(scales[srow + g]);
        }
        if (Q_FMT == 2u) {
            return E2M1[code] * e8m0(scale_byte(srow, g));
        }
        let sb = e4m3(scale_byte(srow, g));
        if (Q_FMT == 0u) {
            return E2M1[code] * (sb * p.tensor_scale);
        }
        return E2M1[code] * (sb / p.tensor_scale);
    }
    let byte = (codes[crow + (kk >> 2u)] >> (8u * (kk & 3u))) & 0xffu;
    let s = bitcast<f32>(scales[srow + g]);
    if (Q_FMT == 3u) {
        return e4m3(byte) * s;
    }
    return f32(i32(byte << 24u) >> 24u) * s;
}
