// Reader prelude for float weights (f32, f16, bf16), so a body in
// shaders/quant/ serves them too: moe_matmul runs every weight dtype through
// the `moe` entry of quant/matmul.wgsl. The body's `codes` binding holds the
// weight as u32 words whatever its dtype (f32 bits, or two f16/bf16 halves
// per word, low half first); `scales` is not read. Unlike the quantized
// readers, `crow` (and so p.w_base and p.row_words) counts elements of the
// dtype, not words: an f16 row of odd length starts mid-word.
// shaders/matmul.wgsl reads its weight the same way (`load_w`).

// 0: f32, 1: f16, 2: bf16
override W_DTYPE: u32 = 0u;

// element kk of the weight row that starts at element `crow` of `codes`
fn load_q(crow: u32, srow: u32, kk: u32) -> f32 {
    let i = crow + kk;
    if (W_DTYPE == 0u) {
        return bitcast<f32>(codes[i]);
    }
    let word = codes[i >> 1u];
    let high = (i & 1u) == 1u;
    if (W_DTYPE == 1u) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, high);
    }
    // bf16 is the top half of an f32: widen with a shift
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}
