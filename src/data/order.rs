//! The order in which training examples are visited, reshuffled each epoch.

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::rng;

/// Position in the epoch-by-epoch shuffled order of `len` examples. Each epoch's permutation is
/// a pure function of the seed and the epoch number, so saving `(epoch, position)` is enough to
/// resume the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochOrder {
    seed: u64,
    len: usize,
    /// Current epoch, from 0.
    pub epoch: usize,
    /// Next position within the epoch's permutation.
    pub position: usize,
    #[serde(skip)]
    permutation: Vec<usize>,
}

/// First generator stream of the epoch permutations; epoch `e` uses stream `EPOCH_STREAM + e`.
const EPOCH_STREAM: u64 = 1000;

impl EpochOrder {
    /// The order over `len` examples, at the start of epoch 0.
    pub fn new(len: usize, seed: u64) -> Self {
        let mut order = Self {
            seed,
            len,
            epoch: 0,
            position: 0,
            permutation: Vec::new(),
        };
        order.shuffle();
        order
    }

    /// Moves to a saved position.
    pub fn seek(&mut self, epoch: usize, position: usize) {
        self.epoch = epoch;
        self.position = position.min(self.len);
        self.shuffle();
    }

    /// The next `size` example indices. A batch never spans two epochs: the last batch of an
    /// epoch may be smaller, and the following call starts the next epoch.
    pub fn next_batch(&mut self, size: usize) -> Vec<usize> {
        if self.position >= self.len {
            self.epoch += 1;
            self.position = 0;
            self.shuffle();
        }
        let end = (self.position + size).min(self.len);
        let batch = self.permutation[self.position..end].to_vec();
        self.position = end;
        batch
    }

    fn shuffle(&mut self) {
        let mut rng = rng::seeded(self.seed, EPOCH_STREAM + self.epoch as u64);
        self.permutation = (0..self.len).collect();
        self.permutation.shuffle(&mut rng);
    }
}
