//! Which instruction set the kernels use, picked once at start from the CPU's
//! features. `FERRUM_CPU_ISA=portable|avx2|avx512` forces a path (tests run
//! every path this machine has); asking for one the CPU lacks is an error,
//! never a crash on an illegal instruction.

use ferrum_engine::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, auto-vectorised for the build target (aarch64 included).
    Portable,
    /// AVX2 + FMA + F16C: `vpmaddubsw` integer dot products.
    Avx2,
    /// AVX-512 F/BW/VL + VNNI on 256-bit vectors: `vpdpbusd` dot products.
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU runs the path.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best path this CPU has.
    pub fn best() -> Isa {
        [Isa::Avx512, Isa::Avx2].into_iter().find(|i| i.available()).unwrap_or(Isa::Portable)
    }

    /// `FERRUM_CPU_ISA` if set, else the best.
    pub fn from_env() -> Result<Isa> {
        match std::env::var("FERRUM_CPU_ISA") {
            Ok(name) if !name.is_empty() => Isa::named(&name),
            _ => Ok(Isa::best()),
        }
    }

    pub fn named(name: &str) -> Result<Isa> {
        let isa = Isa::ALL
            .into_iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| Error::Backend(format!("unknown CPU path {name:?}: expected portable, avx2 or avx512")))?;
        if !isa.available() {
            return Err(Error::Backend(format!("this CPU cannot run the {name} path")));
        }
        Ok(isa)
    }
}
