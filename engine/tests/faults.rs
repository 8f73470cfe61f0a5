//! A failure stays with the request that caused it: with a fault injected
//! into the backend, the other requests finish with exactly the tokens they
//! get without it, every KV block comes back, and only a backend that can
//! run nothing stops the engine.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{alone, collect, fixture_named, model_of, outcome, prompt, request, run_all, wait_for_idle};
use ferrum_engine::faults::{Effect, Fault, FaultyBackend, Trigger};
use ferrum_engine::ops::OpKind;
use ferrum_engine::serving::{EngineConfig, EngineHandle, SubmitError, spawn};
use ferrum_engine::{Backend, CpuBackend, Model};

const MAX_TOKENS: usize = 8;

fn faulty_engine(fault: Fault) -> (EngineHandle, Arc<FaultyBackend>) {
    let cpu: Arc<dyn Backend> = Arc::new(CpuBackend::new());
    let backend = Arc::new(FaultyBackend::new(cpu, fault));
    let model = Model::load(&fixture_named("llama-notok"), backend.clone()).unwrap();
    // small steps: prompts are prefilled in chunks while others decode
    let config = EngineConfig { max_batch_tokens: 24, block_size: 4, num_blocks: 256, ..Default::default() };
    (spawn(model, None, config).unwrap(), backend)
}

/// Seven healthy prompts, their tokens alone, and a token id none of them
/// reads or writes (nor any row index of a step): the poison.
fn healthy() -> (Vec<Vec<u32>>, Vec<Vec<u32>>, u32) {
    let reference = model_of("llama-notok");
    let prompts: Vec<Vec<u32>> = (0..7).map(|i| prompt(i, 5 + 3 * i as usize)).collect();
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&reference, p, MAX_TOKENS)).collect();
    let seen: HashSet<u32> = prompts.iter().chain(&want).flatten().copied().collect();
    let poison = (64..reference.config.vocab_size as u32).find(|t| !seen.contains(t)).unwrap();
    (prompts, want, poison)
}

/// A prompt of 40 tokens whose last one is the poison: prefilled in chunks,
/// it breaks the step in which its third chunk runs beside the others.
fn poisoned(poison: u32) -> Vec<u32> {
    let mut p = prompt(30, 40);
    p[39] = poison;
    p
}

fn poisoned_request_fails_alone(effect: Effect) {
    let (prompts, want, poison) = healthy();
    let (engine, backend) = faulty_engine(Fault { op: OpKind::GatherRows, trigger: Trigger::Token(poison), effect });
    let mut requests: Vec<_> = prompts.iter().map(|p| request(p.clone(), MAX_TOKENS)).collect();
    requests.insert(3, request(poisoned(poison), MAX_TOKENS));
    let receivers = engine.submit_all(requests).unwrap();
    let mut results: Vec<_> = receivers.into_iter().map(|(_, rx)| outcome(rx)).collect();
    let failed = results.remove(3).unwrap_err();
    assert!(failed.contains("injected fault"), "{failed}");
    let got: Vec<Vec<u32>> = results.into_iter().map(|r| r.unwrap().0).collect();
    assert_eq!(got, want, "the other streams are byte-identical to a run without the fault");
    assert!(backend.struck() >= 2, "the step and the poisoned sequence rerun alone both failed");
    assert_eq!(engine.metrics.failed_steps.load(Ordering::Relaxed), 1);
    assert_eq!(engine.metrics.requests_server_error.load(Ordering::Relaxed), 1);
    wait_for_idle(&engine);
    // the engine goes on
    assert!(engine.broken().is_none());
    assert_eq!(collect(engine.submit(request(prompts[2].clone(), MAX_TOKENS)).unwrap().1).0, want[2]);
}

#[test]
fn a_request_whose_data_breaks_an_op_fails_alone() {
    poisoned_request_fails_alone(Effect::Error);
}

#[test]
fn a_panicking_op_fails_only_its_request() {
    poisoned_request_fails_alone(Effect::Panic);
}

/// A fault that strikes once (say, a transient device error) costs a rerun
/// of that step, one sequence at a time, and no request.
#[test]
fn a_transient_fault_is_absorbed_by_the_rerun() {
    let (prompts, want, _) = healthy();
    let (engine, backend) =
        faulty_engine(Fault { op: OpKind::Matmul, trigger: Trigger::Call(40), effect: Effect::Error });
    assert_eq!(run_all(&engine, &prompts, MAX_TOKENS), want);
    assert_eq!(backend.struck(), 1);
    assert_eq!(engine.metrics.failed_steps.load(Ordering::Relaxed), 1);
    wait_for_idle(&engine);
}

/// A lost device, a backend that fails even 1 + 2, or a panic outside the
/// forward pass: every request gets an error, new ones are refused, and the
/// engine says why.
#[test]
fn a_backend_that_can_run_nothing_stops_the_engine() {
    for (trigger, effect, why) in [
        (Trigger::Call(20), Effect::LoseDevice, "device was lost"),
        (Trigger::From(20), Effect::Error, "fails a trivial op"),
        // the probe itself panics: caught at the step boundary
        (Trigger::From(20), Effect::Panic, "the engine panicked"),
    ] {
        let (prompts, _, _) = healthy();
        let (engine, _) = faulty_engine(Fault { op: OpKind::Add, trigger, effect });
        let requests = prompts.iter().map(|p| request(p.clone(), MAX_TOKENS)).collect();
        for (_, rx) in engine.submit_all(requests).unwrap() {
            assert!(outcome(rx).is_err(), "{why}: a request finished on a broken backend");
        }
        let reason = engine.broken().unwrap_or_else(|| panic!("{why}: the engine goes on")).to_string();
        assert!(reason.contains(why), "{reason}");
        assert_eq!(engine.metrics.healthy.load(Ordering::Relaxed), 0);
        assert_eq!(engine.submit(request(prompts[0].clone(), 2)).unwrap_err(), SubmitError::Stopped);
    }
}
