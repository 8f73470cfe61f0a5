//! Binding windows: how a tensor larger than one binding is still usable.
//!
//! A tensor is one wgpu buffer (up to `max_buffer_size`, 2 GiB on lavapipe),
//! but a shader binding may cover at most `max_storage_buffer_binding_size`
//! (128 MiB on lavapipe and under WebGPU's defaults): a real model's f32
//! embedding table or a long prefill's logits do not fit. So the big operands
//! of an op are bound through windows of whole rows: each window starts at
//! an offset aligned down to `min_storage_buffer_offset_alignment`, and the
//! shader adds `base`, where the window's first row starts inside the
//! binding. An op dispatches once per window (or per pair of windows, e.g.
//! x rows by weight rows in matmul, tokens by cache slots in kv_store and
//! attention); small operands (ids, positions, norm weights, biases, block
//! tables) are bound whole and must fit.
//!
//! The limit can be lowered (`Options::max_binding_bytes`) so tests run the
//! windowed paths on small tensors.

use ferrum_engine::{Error, Result, Tensor};

use crate::buffer::{GpuBuffer, gpu_buffer};

/// What shapes the windows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BindLimits {
    /// Most bytes one storage binding may cover.
    pub max_binding: u64,
    /// Storage binding offsets must be multiples of this.
    pub align: u64,
    /// Most workgroups along one dispatch dimension.
    pub max_groups: u32,
}

/// A storage binding: a byte range of a buffer.
#[derive(Clone, Debug)]
pub(crate) struct Binding {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

/// Rows `first..first + rows` of a tensor, bound from `offset`; row `first`
/// starts `base` elements into the binding.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub first: usize,
    pub rows: usize,
    pub base: u32,
    pub binding: Binding,
}

/// A tensor seen as `rows` rows of `row_elems` elements, for windowing.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub buf: &'a GpuBuffer,
    pub rows: usize,
    pub row_elems: usize,
    pub elem_bytes: usize,
}

impl<'a> Rows<'a> {
    /// `t` as rows along its first dimension.
    pub fn of(t: &'a Tensor) -> Result<Self> {
        let rows = t.shape().first().copied().unwrap_or(1);
        let row_elems = t.shape().iter().skip(1).product();
        Ok(Rows { buf: gpu_buffer(t)?, rows, row_elems, elem_bytes: t.dtype().size_bytes() })
    }

    fn row_bytes(&self) -> u64 {
        (self.row_elems * self.elem_bytes) as u64
    }

    /// Most rows one window can hold, or why not even one row fits.
    pub fn per_window(&self, l: &BindLimits) -> Result<usize> {
        let row = self.row_bytes();
        if row == 0 {
            return Ok(usize::MAX);
        }
        // the window may start up to align - 1 bytes before its first row
        let fit = l.max_binding.saturating_sub(l.align) / row;
        if fit == 0 {
            return Err(Error::Backend(format!(
                "a row of {row} bytes does not fit a binding of {} bytes",
                l.max_binding
            )));
        }
        Ok(fit.min(usize::MAX as u64) as usize)
    }

    /// Most groups of `unit` consecutive rows (`what`: a token's choices,
    /// an expert's weight rows) one window holds, or why not even one fits.
    pub fn groups_per_window(&self, unit: usize, what: &str, l: &BindLimits) -> Result<usize> {
        let per = self.per_window(l)? / unit.max(1);
        if per == 0 {
            return Err(Error::Backend(format!(
                "{what} ({unit} rows of {} bytes) does not fit a binding of {} bytes",
                self.row_bytes(),
                l.max_binding
            )));
        }
        Ok(per)
    }

    /// The binding for rows `first..first + rows` (which `per_window` allows).
    pub fn window(&self, first: usize, rows: usize, l: &BindLimits) -> Window {
        let start = first as u64 * self.row_bytes();
        let end = (first + rows) as u64 * self.row_bytes();
        let offset = start / l.align * l.align;
        let buffer = self.buf.raw().clone();
        // a multiple of 4 and at least 4 bytes; the buffer is padded to allow it
        let size = (end.next_multiple_of(4) - offset).max(4).min(buffer.size() - offset);
        let base = ((start - offset) / self.elem_bytes as u64) as u32;
        Window { first, rows, base, binding: Binding { buffer, offset, size } }
    }

    /// Windows over all rows, each holding at most `per` rows.
    pub fn windows(&self, per: usize, l: &BindLimits) -> Vec<Window> {
        ranges(self.rows, per).map(|(first, rows)| self.window(first, rows, l)).collect()
    }
}

/// `(first, count)` chunks of at most `per` covering `0..total`.
pub(crate) fn ranges(total: usize, per: usize) -> impl Iterator<Item = (usize, usize)> {
    let per = per.max(1);
    (0..total.div_ceil(per)).map(move |i| (i * per, per.min(total - i * per)))
}

/// The whole of a small tensor (ids, norm weights, biases, tables) as one binding.
pub(crate) fn whole(t: &Tensor, what: &str, l: &BindLimits) -> Result<Binding> {
    let bytes = t.size_bytes() as u64;
    if bytes > l.max_binding {
        return Err(Error::Backend(format!(
            "{what} {:?} {} is {bytes} bytes, more than one binding ({} bytes) holds",
            t.shape(),
            t.dtype(),
            l.max_binding
        )));
    }
    let buffer = gpu_buffer(t)?.raw().clone();
    let size = bytes.next_multiple_of(4).max(4);
    Ok(Binding { buffer, offset: 0, size })
}

/// Flat f32 windows for elementwise ops: each starts on an aligned offset, so
/// element i of the window is element i of the binding (no base).
pub(crate) fn flat_windows(t: &Tensor, l: &BindLimits) -> Result<Vec<(usize, Binding)>> {
    let per = (l.max_binding / l.align * l.align / 4) as usize;
    if per == 0 {
        return Err(Error::Backend(format!("a binding of {} bytes holds no aligned window", l.max_binding)));
    }
    let buffer = gpu_buffer(t)?.raw().clone();
    Ok(ranges(t.elem_count(), per)
        .map(|(first, n)| {
            let offset = first as u64 * 4;
            let size = (n as u64 * 4).max(4).min(buffer.size() - offset);
            (n, Binding { buffer: buffer.clone(), offset, size })
        })
        .collect())
}

/// Workgroup counts for `groups` workgroups in a line: along x up to the
/// per-dimension limit, the rest along y (shaders flatten `x + y * num_x`).
pub(crate) fn groups_2d(groups: u64, l: &BindLimits) -> Result<[u32; 3]> {
    let max = l.max_groups as u64;
    let x = groups.clamp(1, max);
    let y = groups.div_ceil(x);
    if y > max {
        return Err(Error::Backend(format!("{groups} workgroups exceed {max} x {max}")));
    }
    Ok([x as u32, y as u32, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_exactly() {
        let r: Vec<_> = ranges(10, 4).collect();
        assert_eq!(r, [(0, 4), (4, 4), (8, 2)]);
        assert_eq!(ranges(0, 4).count(), 0);
        assert_eq!(ranges(3, usize::MAX).collect::<Vec<_>>(), [(0, 3)]);
    }

    #[test]
    fn groups_fold_into_two_dimensions() {
        let l = BindLimits { max_binding: 1 << 27, align: 256, max_groups: 65535 };
        assert_eq!(groups_2d(10, &l).unwrap(), [10, 1, 1]);
        assert_eq!(groups_2d(65536, &l).unwrap(), [65535, 2, 1]);
        assert_eq!(groups_2d(0, &l).unwrap(), [1, 0, 1]);
        assert!(groups_2d(65535 * 65535 + 1, &l).is_err());
    }
}
