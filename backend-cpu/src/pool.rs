//! One persistent pool of worker threads. A job is a closure every thread
//! (the caller included) runs once with its index; the caller returns when all
//! have finished. Workers spin briefly between jobs, since a decode step
//! issues hundreds of small ones microseconds apart, then sleep on a condvar.
//!
//! No thread is spawned and nothing is allocated per job.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// The current job, valid while `run` waits (its lifetime erased).
    /// Written only by `run` while no worker is inside a job, before it bumps
    /// `epoch` (release); read by workers after they see the bump (acquire).
    job: std::cell::UnsafeCell<Option<&'static Job>>,
    /// Bumped once per job; workers wait for it to change.
    epoch: AtomicUsize,
    /// Workers finished with the current job.
    done: AtomicUsize,
    /// A worker's part of the current job panicked.
    panicked: AtomicBool,
    stop: AtomicBool,
    wake: Condvar,
    /// Guards sleeping on `wake`.
    sleep: Mutex<()>,
    /// Workers asleep (or about to be) on `wake`: `run` skips the wake-up
    /// syscall when there are none, the common case mid-step.
    sleeping: AtomicUsize,
}

// SAFETY: `job` is accessed under the epoch protocol described on it.
unsafe impl Sync for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time.
    running: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

impl Pool {
    /// A pool of `threads` threads in all: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            job: std::cell::UnsafeCell::new(None),
            epoch: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            sleep: Mutex::new(()),
            sleeping: AtomicUsize::new(0),
        });
        let workers = (1..threads.max(1))
            .map(|index| {
                let shared = shared.clone();
                std::thread::Builder::new().name(format!("ferrum-cpu-{index}")).spawn(move || worker(&shared, index))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Pool { shared, workers, running: Mutex::new(()) })
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every thread index i in 0..threads, in parallel.
    /// Returns false when a part panicked (the pool stays usable).
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) -> bool {
        if self.workers.is_empty() {
            return catch_unwind(AssertUnwindSafe(|| f(0))).is_ok();
        }
        let _one = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let s = &*self.shared;
        // SAFETY: the reference is only used until every worker has reported
        // done below, and this function does not return before then.
        let job: &'static Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Job>(f) };
        // SAFETY: every worker finished the previous job (the wait below)
        // and none reads `job` before seeing the new epoch
        unsafe { *s.job.get() = Some(job) };
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        // SeqCst with the workers' `sleeping` increment: either we see the
        // sleeper, or it sees the new epoch before it waits
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = s.sleep.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0))).is_ok();
        while s.done.load(Ordering::Acquire) < self.workers.len() {
            std::hint::spin_loop();
        }
        // SAFETY: all workers are done with it
        unsafe { *s.job.get() = None };
        mine && !s.panicked.load(Ordering::Relaxed)
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Relaxed) {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let g = s.sleep.lock().unwrap_or_else(|p| p.into_inner());
                s.sleeping.fetch_add(1, Ordering::SeqCst);
                if s.epoch.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::Relaxed) {
                    drop(s.wake.wait_timeout(g, Duration::from_millis(100)));
                }
                s.sleeping.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = s.epoch.load(Ordering::Acquire);
        // SAFETY: the epoch changed, so `run` wrote the job and waits for us
        let job = unsafe { *s.job.get() };
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| job(index))).is_err()
        {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let _g = self.shared.sleep.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Hands out `0..total` in chunks of `chunk` to whoever asks next, so threads
/// that run slower (a busy core) take fewer.
pub struct Chunks {
    next: AtomicUsize,
    total: usize,
    chunk: usize,
}

impl Chunks {
    pub fn new(total: usize, chunk: usize) -> Self {
        Chunks { next: AtomicUsize::new(0), total, chunk: chunk.max(1) }
    }

    pub fn next(&self) -> Option<std::ops::Range<usize>> {
        let start = self.next.fetch_add(self.chunk, Ordering::Relaxed);
        (start < self.total).then(|| start..(start + self.chunk).min(self.total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_every_job_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads).unwrap();
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                assert!(pool.run(&|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }));
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn a_panicking_part_is_reported_and_the_pool_goes_on() {
        let pool = Pool::new(2).unwrap();
        assert!(!pool.run(&|i| assert_ne!(i, 1, "worker part fails")));
        let chunks = Chunks::new(1000, 7);
        let sum = AtomicUsize::new(0);
        assert!(pool.run(&|_| {
            while let Some(r) = chunks.next() {
                sum.fetch_add(r.sum::<usize>(), Ordering::Relaxed);
            }
        }));
        assert_eq!(sum.load(Ordering::Relaxed), 999 * 1000 / 2);
    }
}
