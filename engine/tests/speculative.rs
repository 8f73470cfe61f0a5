//! Speculative decoding (prompt lookup) against decoding without it: greedy
//! output token-identical, sampled output distributed as the model says.

mod common;

use common::model_of;
use ferrum_engine::Model;
use ferrum_engine::generate::{GenerateOptions, Generation, generate};
use ferrum_engine::kv_cache::{BlockTable, PagedKv};
use ferrum_engine::model::{LogitsWanted, SeqChunk};
use ferrum_engine::sampler::{Sampler, SamplingParams, softmax};
use ferrum_engine::speculative::{self, Speculation};

/// A prompt that repeats itself, so lookups find guesses.
fn repetitive(len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| [17, 42, 99, 7, 256, 31][(i % 6) as usize] + (i / 18) % 2).collect()
}

fn run(model: &Model, prompt: &[u32], max_tokens: usize, sampling: SamplingParams, spec: bool) -> Generation {
    let opts =
        GenerateOptions { max_tokens, sampling, speculation: spec.then(Speculation::default), ..Default::default() };
    generate(model, prompt, &opts, None, |_| {}).unwrap()
}

#[test]
fn greedy_output_is_token_identical_with_and_without_guesses() {
    for name in ["llama-notok", "qwen3", "qwen3-moe", "deepseek-v3", "gemma2"] {
        let model = model_of(name);
        for (i, prompt) in [repetitive(40), repetitive(9), vec![5, 6, 7]].into_iter().enumerate() {
            let plain = run(&model, &prompt, 48, SamplingParams::default(), false);
            let spec = run(&model, &prompt, 48, SamplingParams::default(), true);
            assert_eq!(spec.tokens, plain.tokens, "{name} prompt {i}");
            assert!(
                spec.decode_steps <= plain.decode_steps,
                "{name}: {} vs {} steps",
                spec.decode_steps,
                plain.decode_steps
            );
            if i == 0 {
                println!(
                    "{name}: {} guessed, {} kept, {} steps instead of {}",
                    spec.guessed, spec.accepted, spec.decode_steps, plain.decode_steps
                );
            }
        }
        // penalties make greedy go through the host sampler: still identical
        let penalized = SamplingParams { repetition_penalty: 1.3, ..Default::default() };
        let prompt = repetitive(30);
        assert_eq!(
            run(&model, &prompt, 32, penalized.clone(), true).tokens,
            run(&model, &prompt, 32, penalized, false).tokens,
            "{name} with a repetition penalty"
        );
    }
}

/// The model's next-token probabilities after `context`.
fn next_probs(model: &Model, context: &[u32], temperature: f32) -> Vec<f32> {
    let mut kv = PagedKv::for_tokens(model.backend(), &model.config, context.len(), 16).unwrap();
    let mut table = BlockTable::default();
    table.reserve(&mut kv.pool, context.len(), 16).unwrap();
    let chunk = SeqChunk { tokens: context, start_pos: 0, block_table: table.blocks(), logits: LogitsWanted::Last };
    let logits = model.forward(&[chunk], &kv.cache).unwrap();
    softmax(&logits.row(0).iter().map(|l| l / temperature).collect::<Vec<_>>())
}

/// A verification pass as the engine runs it (the context, then a guess,
/// logits at every position) over many seeds: the token it yields after
/// the context follows the model's own next-token distribution, computed by
/// a plain pass, whether the guess is the likeliest token (mostly kept) or
/// an unlikely one (mostly replaced). Chi-square over the five likeliest
/// tokens and the rest.
#[test]
fn sampled_verification_keeps_the_models_distribution() {
    let model = model_of("llama-notok");
    let context = repetitive(24);
    // a peaked distribution guessed its likeliest token (mostly kept), a
    // spread one guessed a middling token (mostly replaced)
    for (temperature, rank) in [(0.05, 0), (1.5, 100)] {
        let probs = next_probs(&model, &context, temperature);
        let mut order: Vec<u32> = (0..probs.len() as u32).collect();
        order.sort_by(|a, b| probs[*b as usize].total_cmp(&probs[*a as usize]));
        let guess = order[rank];
        // the pass: the context and the guess, every row's logits
        let mut tokens = context.clone();
        tokens.push(guess);
        let mut kv = PagedKv::for_tokens(model.backend(), &model.config, tokens.len(), 16).unwrap();
        let mut table = BlockTable::default();
        table.reserve(&mut kv.pool, tokens.len(), 16).unwrap();
        let chunk = SeqChunk { tokens: &tokens, start_pos: 0, block_table: table.blocks(), logits: LogitsWanted::All };
        let logits = model.forward(&[chunk], &kv.cache).unwrap();
        let n = 20_000;
        let mut taken = Vec::with_capacity(n);
        for seed in 0..n as u64 {
            let sampling = SamplingParams { temperature, seed, ..Default::default() };
            let mut sampler = Sampler::new(sampling, &context);
            // rows[i] follows tokens[..=context.len() - 1 + i]
            let out = speculative::accept(&mut sampler, &[guess], |i| logits.row(context.len() - 1 + i));
            taken.push(out[0]);
        }
        // bins: each of the five likeliest tokens expected at least 5 times, the rest together
        let expected = |t: u32| probs[t as usize] as f64 * n as f64;
        let mut bins: Vec<Vec<u32>> = order[..5].iter().filter(|&&t| expected(t) >= 5.0).map(|&t| vec![t]).collect();
        let singles: Vec<u32> = bins.iter().flatten().copied().collect();
        let rest: Vec<u32> = order.iter().copied().filter(|t| !singles.contains(t)).collect();
        if rest.iter().map(|&t| expected(t)).sum::<f64>() >= 5.0 {
            bins.push(rest);
        } else if let Some(last) = bins.last_mut() {
            last.extend(rest);
        }
        let mut chi2 = 0.0;
        for bin in &bins {
            let observed = taken.iter().filter(|t| bin.contains(t)).count() as f64;
            let e: f64 = bin.iter().map(|&t| expected(t)).sum();
            chi2 += (observed - e).powi(2) / e;
        }
        // P(chi2 > x) = 0.001 for 1..=5 degrees of freedom
        let limit = [10.83, 13.82, 16.27, 18.47, 20.52][bins.len().clamp(2, 6) - 2];
        let kept = taken.iter().filter(|&&t| t == guess).count();
        println!("guess {guess} (p = {:.3}): kept {kept} of {n}, chi2 {chi2:.2}", probs[guess as usize]);
        assert!(chi2 < limit, "guess {guess}: chi2 {chi2:.2} over {} bins", bins.len());
    }
}

/// The serving engine verifying guesses for many sequences at once, with
/// chunked prefill beside them and a cache small enough to preempt: every
/// greedy sequence gets exactly the tokens it gets alone without guesses.
#[test]
fn the_engine_batches_verification_steps_and_greedy_stays_exact() {
    use common::{alone, run_all, wait_for_idle};
    use ferrum_engine::serving::{EngineConfig, spawn};
    use std::sync::atomic::Ordering;
    for name in ["llama-notok", "qwen3-moe", "deepseek-v3"] {
        let reference = model_of(name);
        let prompts: Vec<Vec<u32>> = (0..8).map(|i| repetitive(12 + 5 * i)).collect();
        let want: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&reference, p, 24)).collect();
        for num_blocks in [512, 40] {
            let config = EngineConfig {
                max_batch_tokens: 32,
                block_size: 4,
                num_blocks,
                speculation: Some(Speculation::default()),
                ..Default::default()
            };
            let engine = spawn(model_of(name), None, config).unwrap();
            assert_eq!(run_all(&engine, &prompts, 24), want, "{name}, {num_blocks} blocks");
            let m = &engine.metrics;
            let (guessed, kept) =
                (m.spec_guessed_tokens.load(Ordering::Relaxed), m.spec_accepted_tokens.load(Ordering::Relaxed));
            println!(
                "{name}, {num_blocks} blocks: {guessed} guessed, {kept} kept, {} preemptions",
                m.preemptions.load(Ordering::Relaxed)
            );
            assert!(guessed > 0, "{name}: nothing was guessed");
            wait_for_idle(&engine);
        }
    }
}

/// A draft model guessing instead of the lookup, in generate and in the
/// engine (with preemption): greedy output stays token-identical. With the
/// target as its own draft every guess is kept; with another model of the
/// same vocabulary, few are.
#[test]
fn a_draft_model_keeps_greedy_output_exact() {
    use common::{alone, run_all, wait_for_idle};
    use ferrum_engine::serving::{EngineConfig, spawn};
    use ferrum_engine::speculative::Drafter;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let target = model_of("qwen3");
    let prompts: Vec<Vec<u32>> = (0..6).map(|i| repetitive(10 + 7 * i)).collect();
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&target, p, 24)).collect();
    for (draft_name, all_kept) in [("qwen3", true), ("llama-notok", false)] {
        let drafter = Drafter::new(Arc::new(model_of(draft_name)), &target).unwrap();
        // generate
        for (prompt, want) in prompts.iter().zip(&want) {
            let opts = GenerateOptions {
                max_tokens: 24,
                speculation: Some(Speculation::default()),
                draft: Some(drafter.clone()),
                ..Default::default()
            };
            let got = generate(&target, prompt, &opts, None, |_| {}).unwrap();
            assert_eq!(&got.tokens, want, "generate, draft {draft_name}");
            assert!(got.guessed > 0);
            if all_kept {
                assert_eq!(got.accepted, got.guessed, "the target guessing for itself");
            }
        }
        // the engine, with room and with preemption
        for num_blocks in [512, 30] {
            let config = EngineConfig {
                max_batch_tokens: 32,
                block_size: 4,
                num_blocks,
                speculation: Some(Speculation::default()),
                draft: Some(drafter.clone()),
                ..Default::default()
            };
            let engine = spawn(model_of("qwen3"), None, config).unwrap();
            assert_eq!(run_all(&engine, &prompts, 24), want, "engine, draft {draft_name}, {num_blocks} blocks");
            let m = &engine.metrics;
            let (guessed, kept) =
                (m.spec_guessed_tokens.load(Ordering::Relaxed), m.spec_accepted_tokens.load(Ordering::Relaxed));
            println!("draft {draft_name}, {num_blocks} blocks: {guessed} guessed, {kept} kept");
            assert!(guessed > 0);
            if all_kept {
                assert_eq!(kept, guessed, "the target guessing for itself");
            }
            wait_for_idle(&engine);
        }
    }
}
