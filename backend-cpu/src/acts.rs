//! Activations quantized for the integer kernels, as llama.cpp's Q8_0/Q8_K:
//! per block of 32 along a row, `d = max|x| / 127` and `q = round(x / d)`,
//! plus `d * sum(q)` per 16 for formats with offsets. The buffers only grow,
//! so steady-state decode allocates nothing.

#[derive(Debug, Default)]
pub struct QuantActs {
    pub k: usize,
    /// [m, k] codes
    pub q: Vec<i8>,
    /// [m, k / 32] block scales
    pub d: Vec<f32>,
    /// [m, k / 16] `d * sum(q)` per 16
    pub sums: Vec<f32>,
    /// [m, k / 32] `d * sum(q)` per 32
    pub sums32: Vec<f32>,
}

impl QuantActs {
    /// Sizes the buffers for `m` rows of `k` (a multiple of 32).
    pub fn resize(&mut self, m: usize, k: usize) {
        self.k = k;
        grow(&mut self.q, m * k, 0);
        grow(&mut self.d, m * k / 32, 0.0);
        grow(&mut self.sums, m * k / 16, 0.0);
        grow(&mut self.sums32, m * k / 32, 0.0);
    }

    pub fn row_q(&self, r: usize) -> &[i8] {
        &self.q[r * self.k..(r + 1) * self.k]
    }

    pub fn row_d(&self, r: usize) -> &[f32] {
        &self.d[r * self.k / 32..(r + 1) * self.k / 32]
    }

    pub fn row_sums(&self, r: usize) -> &[f32] {
        &self.sums[r * self.k / 16..(r + 1) * self.k / 16]
    }
}

fn grow<T: Copy>(v: &mut Vec<T>, n: usize, fill: T) {
    if v.len() < n {
        v.resize(n, fill);
    }
}

/// Quantizes one row `x` (len k) into its codes, scales and sums.
#[inline(always)]
pub fn quantize_row(x: &[f32], q: &mut [i8], d: &mut [f32], sums: &mut [f32], sums32: &mut [f32]) {
    for (b, (xb, qb)) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)).enumerate() {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (o, &v) in qb.iter_mut().zip(xb) {
            *o = (v * inv).round() as i8;
        }
        d[b] = scale;
        for h in 0..2 {
            let s: i32 = qb[16 * h..16 * h + 16].iter().map(|&v| v as i32).sum();
            sums[2 * b + h] = scale * s as f32;
        }
        sums32[b] = scale * qb.iter().map(|&v| v as i32).sum::<i32>() as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_times_scale_give_back_the_row_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3).collect();
        let mut a = QuantActs::default();
        a.resize(1, 64);
        quantize_row(&x, &mut a.q, &mut a.d, &mut a.sums, &mut a.sums32);
        for (i, &v) in x.iter().enumerate() {
            let d = a.d[i / 32];
            assert!((a.q[i] as f32 * d - v).abs() <= d / 2.0 + 1e-6, "element {i}");
        }
        let s: f32 = a.q[16..32].iter().map(|&v| v as f32).sum::<f32>() * a.d[0];
        assert!((a.sums[1] - s).abs() < 1e-4);
        assert_eq!(a.q.iter().map(|v| v.unsigned_abs()).max(), Some(127));
    }
}
