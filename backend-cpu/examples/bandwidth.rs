//! This machine's read bandwidth with N threads, in GB/s: each thread sums
//! its share of a 1 GiB buffer, best of 5 passes. `scripts/bench-cpu.sh`
//! divides it by the weight bytes of a token for the decode roofline.

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let data = vec![1u64; (1 << 30) / 8];
    let part = data.len() / threads;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(part)
                .map(|c| {
                    s.spawn(move || {
                        let mut lanes = [0u64; 8];
                        for chunk in c.chunks_exact(8) {
                            for l in 0..8 {
                                lanes[l] = lanes[l].wrapping_add(chunk[l]);
                            }
                        }
                        lanes.iter().sum::<u64>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(sum, data.len() as u64);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{:.1}", (data.len() * 8) as f64 / best / 1e9);
}
