//! Work sharing and tensor access for coto's CPU kernels.

use std::ops::Range;

use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::DType;

/// A split of `units` independent pieces of work (sequences, blocks of rows) among threads:
/// contiguous ranges, one per thread (one thread where the platform has none, as in browsers).
pub struct ThreadPlan {
    units: usize,
    per_thread: usize,
}

impl ThreadPlan {
    /// Shares `units` among the available cores.
    pub fn new(units: usize) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(units.max(1));
        Self { units, per_thread: units.div_ceil(threads).max(1) }
    }

    /// Returns the ranges of units, one per thread.
    pub fn ranges(&self) -> Vec<Range<usize>> {
        (0..self.units).step_by(self.per_thread).map(|start| start..(start + self.per_thread).min(self.units)).collect()
    }

    /// Splits `buffer` (`per_unit` values per unit, or empty) along [`Self::ranges`]; the last
    /// unit may be shorter.
    pub fn split<'a, T>(&self, buffer: &'a mut [T], per_unit: usize) -> Vec<&'a mut [T]> {
        let mut rest = buffer;
        let mut parts = Vec::new();
        for range in self.ranges() {
            let len = (range.len() * per_unit).min(rest.len());
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
            parts.push(part);
            rest = tail;
        }
        parts
    }

    /// Runs `work` on every job, each on its own thread (the last on the calling one).
    pub fn run<J: Send>(&self, mut jobs: Vec<J>, work: impl Fn(J) + Sync) {
        let Some(last) = jobs.pop() else { return };
        let work = &work;
        std::thread::scope(|scope| {
            for job in jobs {
                scope.spawn(move || work(job));
            }
            work(last);
        });
    }
}

/// Returns `tensor` itself when its values lie in row-major order, else a row-major copy.
pub fn row_major(tensor: FloatTensor<Flex>) -> FloatTensor<Flex> {
    if tensor.as_slice::<f32>().is_some() { tensor } else { tensor.to_contiguous() }
}

/// Borrows the values of a row-major float32 tensor without copying them.
pub fn float32_values(tensor: &FloatTensor<Flex>) -> &[f32] {
    assert_eq!(tensor.dtype(), DType::F32, "coto's CPU kernels take float32 tensors");
    tensor.as_slice::<f32>().expect("a row-major tensor, from `row_major`")
}
