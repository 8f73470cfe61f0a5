//! `open()` never panics: on a machine without the NVIDIA driver (CI) it is
//! an `Err` that says so; with one, a working backend.

#[test]
fn open_is_err_or_ok_never_a_panic() {
    match ferrum_backend_cuda::open() {
        Ok(b) => {
            assert_eq!(b.name(), "cuda");
            eprintln!("cuda present: {}", b.device_description());
        }
        Err(why) => {
            assert!(!why.is_empty());
            if !ferrum_backend_cuda::device::driver_present() {
                assert!(why.contains("libcuda not found"), "{why}");
            }
            eprintln!("cuda absent: {why}");
        }
    }
    // a second call gives the same answer (the backend is opened once)
    assert_eq!(ferrum_backend_cuda::open().is_ok(), ferrum_backend_cuda::open().is_ok());
}
