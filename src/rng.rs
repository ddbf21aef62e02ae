//! The seeded random number generator shared by adapter initialisation, CoTo gate draws and data
//! shuffling. ChaCha8 is portable (same stream on every target, the browser included) and its
//! position can be saved and restored, so a resumed run continues the exact same stream.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The generator type used throughout coto.
pub type CotoRng = ChaCha8Rng;

/// Creates the generator for one purpose of a run. Each purpose (`stream`) gets its own
/// independent stream of the same seed, so adding draws for one purpose never shifts another.
pub fn seeded(seed: u64, stream: u64) -> CotoRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The saved position of a [`CotoRng`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 256-bit key derived from the seed.
    pub key: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl RngState {
    /// Captures the generator's position.
    pub fn capture(rng: &CotoRng) -> Self {
        Self {
            key: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// Rebuilds a generator at the captured position.
    pub fn restore(&self) -> CotoRng {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

/// Draws one standard-normal sample with the Box-Muller transform.
pub fn standard_normal(rng: &mut CotoRng) -> f64 {
    // `1 - u` lies in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Hashes a 64-bit counter with SplitMix64's output function. Dropout uses it for
/// counter-based draws, so each element's draw is computed independently of the others.
#[inline(always)]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
