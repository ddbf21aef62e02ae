//! Small dense products and element-wise helpers for coto's CPU kernels, written so that the
//! compiler vectorises them: fixed-size register tiles, no library calls. The callers compile
//! them once per instruction set (see [`simd_dispatch`](super::simd::simd_dispatch)).

/// The arithmetic of a kernel build: `a·b + c` as one fused instruction where the CPU has FMA,
/// else a multiply and an add (a library `fmaf` call per element would be far slower), and the
/// register-tile code of the products.
pub trait MulAdd {
    /// Returns `a·b + c`.
    fn mul_add(a: f32, b: f32, c: f32) -> f32;

    /// Adds the `R × W` block of `A·B` at (`row`, `col`) to `C`, as [`tile`] does.
    ///
    /// # Safety
    /// As for [`tile`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn add_block<const R: usize, const W: usize>(
        k: usize,
        a: &[f32],
        a_strides: (usize, usize),
        row: usize,
        b: (&[f32], usize, usize),
        col: usize,
        c: &mut [f32],
        ldc: usize,
    ) where
        Self: Sized,
    {
        // SAFETY: the caller's contract is the tile's.
        unsafe { tile::<Self, R, W>(k, a, a_strides, row, b, col, c, ldc) }
    }
}

/// `a·b + c` as one fused multiply-add (only for code compiled with the `fma` feature, which
/// only x86-64 builds select).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Fused multiply-adds, with register tiles written in AVX-512 intrinsics (only for code
/// compiled with the `avx512f` and `fma` features). The compiler keeps the portable tile's
/// accumulators in memory, with one load and one store per multiply-add.
#[cfg(target_arch = "x86_64")]
pub struct Avx512;

#[cfg(target_arch = "x86_64")]
impl MulAdd for Avx512 {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    unsafe fn add_block<const R: usize, const W: usize>(
        k: usize,
        a: &[f32],
        a_strides: (usize, usize),
        row: usize,
        (b, ldb, b_col): (&[f32], usize, usize),
        col: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        // SAFETY (all arms): the caller's contract bounds every access, as for `tile`, and the
        // code runs only where `avx512f` was detected.
        let (a, b, c) = unsafe {
            (a.as_ptr().add(row * a_strides.0), b.as_ptr().add(b_col), c.as_mut_ptr().add(row * ldc + col))
        };
        match (R, W) {
            (4, 64) => unsafe { avx512_block::<4, 4>(k, a, a_strides, b, ldb, c, ldc) },
            (8, 32) => unsafe { avx512_block::<8, 2>(k, a, a_strides, b, ldb, c, ldc) },
            (8, 16) => unsafe { avx512_block::<8, 1>(k, a, a_strides, b, ldb, c, ldc) },
            _ => unreachable!("no AVX-512 tile of {R} × {W}"),
        }
    }
}

/// Adds the `R × 16·V` block of `A·B` starting at `a`, `b` and `c` (already offset to the
/// block) to `C`, with the `R·V` accumulators in vector registers.
///
/// # Safety
/// The CPU must support `avx512f`; `a` must be readable at `r·a_row + p·a_col`, `b` at
/// `p·ldb + 0..16·V` and `c` writable at `r·ldc + 0..16·V` for `r < R`, `p < k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn avx512_block<const R: usize, const V: usize>(
    k: usize,
    a: *const f32,
    (a_row, a_col): (usize, usize),
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::{__m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps};
    let mut acc: [[__m512; V]; R] = [[_mm512_setzero_ps(); V]; R];
    for p in 0..k {
        let mut b_row: [__m512; V] = [_mm512_setzero_ps(); V];
        for (v, lanes) in b_row.iter_mut().enumerate() {
            // SAFETY: inside `B` by the contract.
            *lanes = unsafe { _mm512_loadu_ps(b.add(p * ldb + 16 * v)) };
        }
        for (r, acc_row) in acc.iter_mut().enumerate() {
            // SAFETY: inside `A` by the contract.
            let a_value = _mm512_set1_ps(unsafe { *a.add(r * a_row + p * a_col) });
            for (sum, &lanes) in acc_row.iter_mut().zip(&b_row) {
                *sum = _mm512_fmadd_ps(a_value, lanes, *sum);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        for (v, &sum) in acc_row.iter().enumerate() {
            // SAFETY: inside `C` by the contract.
            unsafe {
                let out = c.add(r * ldc + 16 * v);
                _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), sum));
            }
        }
    }
}

/// `a·b + c` as a multiply and an add.
pub struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Row and column counts of the tile products must be multiples of this.
pub const TILE: usize = 16;

/// The memory layout of the `m × k` left factor of a product.
#[derive(Debug, Clone, Copy)]
pub enum Left {
    /// Row-major with this leading dimension (at least `k`).
    Rows(usize),
    /// Stored transposed, as a row-major `k × m` matrix with this leading dimension (at least
    /// `m`): the product is `Aᵀ·B` of that stored matrix.
    Transposed(usize),
}

impl Left {
    /// (row stride, column stride) of the `m × k` factor.
    #[inline(always)]
    fn strides(self) -> (usize, usize) {
        match self {
            Left::Rows(ld) => (ld, 1),
            Left::Transposed(ld) => (1, ld),
        }
    }
}

/// Adds `A·B` to `C`: `A` is `m × k` in the layout `left`, `B` is `k × n` and `C` is `m × n`,
/// row-major with leading dimensions `ldb` and `ldc`. `m` and `n` must be multiples of
/// [`TILE`].
///
/// # Panics
/// If a shape is not a multiple of [`TILE`] or a slice is too short for its shape.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn add_product<F: MulAdd>(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    left: Left,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(m % TILE == 0, "tile product with {m} rows: not a multiple of {TILE}");
    assert!(n % TILE == 0, "tile product with {n} columns: not a multiple of {TILE}");
    if m == 0 || n == 0 {
        return;
    }
    let a_fits = match left {
        Left::Rows(ld) => ld >= k && (k == 0 || a.len() >= (m - 1) * ld + k),
        Left::Transposed(ld) => ld >= m && (k == 0 || a.len() >= (k - 1) * ld + m),
    };
    assert!(a_fits, "A is too short for {m} × {k}");

    let lda = left.strides();
    assert!(k == 0 || (b.len() >= (k - 1) * ldb + n && ldb >= n), "B is too short for {k} × {n}");
    assert!(ldc >= n, "C's leading dimension {ldc} is below its {n} columns");
    assert!(c.len() >= (m - 1) * ldc + n, "C is too short for {m} × {n}");

    let pack = ldb > 64;
    let mut panel = if pack { vec![0f32; k * 64] } else { Vec::new() };
    let mut col = 0;
    while col < n {
        let width = match n - col {
            64.. => 64,
            32.. => 32,
            _ => 16,
        };
        // The columns of `B` under this column of tiles, copied next to each other when `B` is
        // wider, so that the tiles read consecutive memory.
        let (panel_b, panel_ld, panel_col) = if pack {
            for (p, out) in panel.chunks_exact_mut(width).take(k).enumerate() {
                out.copy_from_slice(&b[p * ldb + col..p * ldb + col + width]);
            }
            (&panel[..], width, 0)
        } else {
            (b, ldb, col)
        };
        for row in (0..m).step_by(if width == 64 { 4 } else { 8 }) {
            // SAFETY: the asserts above bound every index the tile reads or writes, and the
            // panel has `k` rows of `width` columns.
            unsafe {
                let b = (panel_b, panel_ld, panel_col);
                match width {
                    64 => F::add_block::<4, 64>(k, a, lda, row, b, col, c, ldc),
                    32 => F::add_block::<8, 32>(k, a, lda, row, b, col, c, ldc),
                    _ => F::add_block::<8, 16>(k, a, lda, row, b, col, c, ldc),
                }
            }
        }
        col += width;
    }
}

/// Adds the `R × W` block of `A·B` at (`row`, `col`) to `C`, holding the block in registers
/// over the whole `k` loop. `B` comes as (values, leading dimension, first column).
///
/// # Safety
/// `row + R ≤ m`, `col + W ≤ n`, and the slices must cover `m × k` (with strides `a_row`,
/// `a_col`), `k × n` and `m × n` with their leading dimensions, as [`add_product`] asserts.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<F: MulAdd, const R: usize, const W: usize>(
    k: usize,
    a: &[f32],
    (a_row, a_col): (usize, usize),
    row: usize,
    (b, ldb, b_col): (&[f32], usize, usize),
    col: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let mut acc = [[0f32; W]; R];
    for p in 0..k {
        // SAFETY: `p < k` and `b_col + W ≤ ldb`, inside `B` by the caller's contract.
        let b_row: &[f32; W] = unsafe { &*(b.as_ptr().add(p * ldb + b_col) as *const [f32; W]) };
        for (r, acc_row) in acc.iter_mut().enumerate() {
            // SAFETY: `row + r < m` and `p < k`, inside `A` by the caller's contract.
            let a_value = unsafe { *a.get_unchecked((row + r) * a_row + p * a_col) };
            for (sum, &b_value) in acc_row.iter_mut().zip(b_row) {
                *sum = F::mul_add(a_value, b_value, *sum);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        // SAFETY: `row + r < m` and `col + W ≤ n ≤ ldc`.
        let c_row: &mut [f32; W] = unsafe { &mut *(c.as_mut_ptr().add((row + r) * ldc + col) as *mut [f32; W]) };
        for (out, &sum) in c_row.iter_mut().zip(acc_row) {
            *out += sum;
        }
    }
}

/// `exp(x)` as `2ⁿ·e^r` with `n = round(x/ln 2)` and a degree-6 Taylor polynomial for `e^r`,
/// `|r| ≤ ln 2 / 2` (relative error about 2e-7); 0 below −87, where `2ⁿ` leaves the normal range.
/// Only arithmetic and bit operations, so that the compiler can vectorise the callers' loops.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    // Adding 1.5·2²³ rounds to an integer, which then sits in the low bits of the sum's mantissa.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    let poly = 1.0
        + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let exponent = shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    let value = poly * f32::from_bits(exponent);
    if x <= -87.0 { 0.0 } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the transpose of the `rows × cols` row-major `src` into `dst` (`cols × rows`).
    fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
        for i in 0..rows {
            for j in 0..cols {
                dst[j * rows + i] = src[i * cols + j];
            }
        }
    }

    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn tile_product_matches_a_plain_loop() {
        // 112 columns run one 64-wide, one 32-wide and one 16-wide tile; k = 37 is odd.
        for (m, n, k) in [(16, 112, 37), (32, 16, 1), (48, 64, 128), (16, 32, 0)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0).collect();
            let mut c = vec![1f32; m * n];
            add_product::<Separate>((m, n, k), &a, Left::Rows(k), &b, n, &mut c, n);
            let want = reference(m, n, k, &a, &b);
            for (got, want) in c.iter().zip(&want) {
                assert!((got - (want + 1.0)).abs() < 1e-4 * (1.0 + want.abs()), "{m}×{n}×{k}: {got} vs {want} + 1");
            }
            // The same product from `A` stored transposed.
            let mut a_t = vec![0f32; m * k];
            transpose(&a, m, k, &mut a_t);
            let mut c = vec![0f32; m * n];
            add_product::<Fused>((m, n, k), &a_t, Left::Transposed(m), &b, n, &mut c, n);
            for (got, want) in c.iter().zip(&want) {
                assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "transposed {m}×{n}×{k}: {got} vs {want}");
            }
            // The AVX-512 tiles, where this CPU has them.
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::simd::isa() == crate::kernels::simd::Isa::Avx512 {
                #[target_feature(enable = "avx512f,fma")]
                fn avx512(shape: (usize, usize, usize), a: &[f32], left: Left, b: &[f32], c: &mut [f32]) {
                    add_product::<Avx512>(shape, a, left, b, shape.1, c, shape.1);
                }
                for (a, left) in [(&a, Left::Rows(k)), (&a_t, Left::Transposed(m))] {
                    let mut c = vec![0f32; m * n];
                    // SAFETY: `isa()` detected AVX-512 and FMA on this CPU.
                    unsafe { avx512((m, n, k), a, left, &b, &mut c) };
                    for (got, want) in c.iter().zip(&want) {
                        assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "AVX-512 {m}×{n}×{k}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let src: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let mut dst = vec![0f32; 6];
        transpose(&src, 2, 3, &mut dst);
        assert_eq!(dst, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
