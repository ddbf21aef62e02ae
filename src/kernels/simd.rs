//! The instruction set coto's CPU kernels are compiled for, chosen once at run time. Each
//! kernel body is generic over [`MulAdd`](super::tile::MulAdd) and `#[inline(always)]`. A thin
//! wrapper per instruction set (`#[target_feature]`) lets the compiler vectorise it with 512-bit
//! or 256-bit registers and fused multiply-adds. Other CPUs and WebAssembly get the portable
//! build.

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// The vector instructions a kernel may use (on x86-64; other targets always run the portable
/// build).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, VL, DQ, BW) with FMA.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// The target's baseline (SSE2 on x86-64, scalar WebAssembly).
    Portable,
}

/// Returns the best [`Isa`] this CPU supports (detected on the first call), or a lower one
/// named by `COTO_CPU_ISA` (`avx2` or `portable`), which tests use to run the other builds.
#[cfg(target_arch = "x86_64")]
pub fn isa() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let detected = detect();
        let requested = match std::env::var("COTO_CPU_ISA").as_deref() {
            Ok("portable") => Isa::Portable,
            Ok("avx2") => Isa::Avx2,
            _ => detected,
        };
        // Never above what the CPU has: `Isa` orders from the widest to the portable build.
        if requested as u8 > detected as u8 { requested } else { detected }
    })
}

/// Returns whether the kernels run with AVX-512 on this CPU.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return isa() == Isa::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    let has = |avx512: bool| {
        avx512
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
    };
    let fma = std::arch::is_x86_feature_detected!("fma");
    if fma && has(std::arch::is_x86_feature_detected!("avx512f")) {
        Isa::Avx512
    } else if fma && std::arch::is_x86_feature_detected!("avx2") {
        Isa::Avx2
    } else {
        Isa::Portable
    }
}

/// Defines `$name`, which runs the `#[inline(always)]` generic kernel `$body::<F>` compiled
/// for the detected [`Isa`]: `Avx512` tiles, `Fused` multiply-adds with AVX2, `Separate` ones on
/// the portable build.
macro_rules! simd_dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $body::<$crate::kernels::tile::Avx512>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body::<$crate::kernels::tile::Fused>($($arg),*)
                }
                match $crate::kernels::simd::isa() {
                    // SAFETY: `isa()` detected these features on this CPU.
                    $crate::kernels::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::kernels::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::simd::Isa::Portable => {}
                }
            }
            $body::<$crate::kernels::tile::Separate>($($arg),*)
        }
    };
}

pub(crate) use simd_dispatch;
