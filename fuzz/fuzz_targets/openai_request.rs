//! Request bodies from a stranger, as `ferrum serve` turns them into engine
//! requests: JSON parsed into the completions and chat shapes, checked
//! against the limits and the served model, the chat template applied, the
//! prompts tokenized (the qwen3 fixture's tokenizer and template). Every
//! body must become a job or a 4xx `ApiError`; a panic is a crash.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ferrum_api::{RequestLimits, Served};
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::source::ModelSource;
use libfuzzer_sys::fuzz_target;

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3");
        let source = ModelSource::open(&fixture).expect("the qwen3 fixture");
        Served {
            model_name: "qwen3".into(),
            template: Some(source.chat_template().expect("a chat template")),
            tokenizer: source.tokenizer.clone().map(Into::into),
            defaults: SamplingParams::default(),
            eos_token_ids: source.eos_token_ids(),
            max_context: source.config.max_position_embeddings,
            limits: RequestLimits::default(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let served = served();
    for job in [served.completion_job(data), served.chat_job(data)] {
        match job {
            Ok(job) => {
                // best_of choices are sampled per prompt, the n likeliest returned
                let requests = job.requests();
                assert!(job.n >= 1 && job.best_of >= job.n, "n {} best_of {}", job.n, job.best_of);
                assert_eq!(requests.len(), job.prompts.len() * job.best_of);
            }
            Err(e) => assert!(e.status.is_client_error(), "{e}"),
        }
    }
});
