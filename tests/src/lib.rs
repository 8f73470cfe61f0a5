//! # ferrum-conformance
//!
//! Cross-backend conformance, in the spirit of ggml's `test-backend-ops`:
//!
//! - [`cases`]: the table of op cases (op, parameters, shapes, dtype), each run
//!   on every backend present and compared with the CPU reference by
//!   normalised MSE, with a per-dtype tolerance.
//! - [`harness`]: runs cases, prints one self-describing line per result and
//!   the op x backend coverage matrix.
//! - [`fixtures`]: the transformers reference models of `fixtures/`.
//!
//! `cargo test -p ferrum-conformance` runs it all; `cargo run -p
//! ferrum-conformance -- [support] [--op NAME] [--backend NAME]` prints it.

pub mod cases;
pub mod fixtures;
pub mod golden;
pub mod harness;
pub mod npm_tokenizers;
pub mod oracle;
