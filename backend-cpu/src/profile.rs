//! `FERRUM_CPU_PROFILE=1`: time spent per op kind (wall clock on the calling
//! thread, so including the pool's wait), printed to stderr when the backend
//! is dropped. Off, it costs one relaxed load per op.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use ferrum_engine::ops::OpKind;

pub struct Profile {
    on: AtomicBool,
    nanos: [AtomicU64; OpKind::ALL.len()],
    calls: [AtomicU64; OpKind::ALL.len()],
}

impl Profile {
    pub fn from_env() -> Self {
        let on = std::env::var("FERRUM_CPU_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
        Profile { on: AtomicBool::new(on), nanos: Default::default(), calls: Default::default() }
    }

    pub fn start(&self) -> Option<Instant> {
        self.on.load(Ordering::Relaxed).then(Instant::now)
    }

    pub fn stop(&self, kind: OpKind, started: Option<Instant>) {
        if let Some(t) = started {
            let i = OpKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
            self.nanos[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.calls[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn report(&self) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let total: u64 = self.nanos.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        eprintln!("[cpu profile: {:.1} ms in ops]", total as f64 / 1e6);
        for (i, kind) in OpKind::ALL.iter().enumerate() {
            let (ns, calls) = (self.nanos[i].load(Ordering::Relaxed), self.calls[i].load(Ordering::Relaxed));
            if calls > 0 {
                eprintln!(
                    "  {:12} {:9.1} ms {:5.1}%  {calls:8} calls  {:7.1} us/call",
                    kind.name(),
                    ns as f64 / 1e6,
                    100.0 * ns as f64 / total.max(1) as f64,
                    ns as f64 / 1e3 / calls as f64
                );
            }
        }
    }
}
