//! Chat templates from a stranger. The first byte picks the attack: a
//! hostile template (the input up to a NUL) rendered over the messages that
//! follow, or hostile messages rendered through a real template (one of the
//! fixtures' `tokenizer_config.json`). Either must give text or an `Err`
//! within the fuel budget: no panic, no hang (libFuzzer's -timeout), no
//! allocation past the budget's ~256 MiB (-malloc_limit_mb).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ferrum_engine::chat_template::{ChatTemplate, Message, template_from_tokenizer_config};
use libfuzzer_sys::fuzz_target;

/// The fixtures' real templates (Llama 3, Gemma, Mistral, gpt-oss, ...).
fn real_templates() -> &'static [String] {
    static TEMPLATES: OnceLock<Vec<String>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&fixtures).expect("tests/fixtures").flatten() {
            if let Ok(Some(t)) = template_from_tokenizer_config(&entry.path().join("tokenizer_config.json")) {
                found.push(t);
            }
        }
        found.sort();
        found.dedup();
        assert!(!found.is_empty(), "no chat template among the fixtures");
        found
    })
}

/// Messages from bytes: `role \x01 content` records split by `\x02`.
fn messages(data: &[u8]) -> Vec<Message> {
    let text = String::from_utf8_lossy(data);
    text.split('\x02')
        .map(|record| {
            let (role, content) = record.split_once('\x01').unwrap_or(("user", record));
            Message::new(role, content)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let add_generation_prompt = mode & 0x80 != 0;
    if mode & 1 == 0 {
        let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let source = String::from_utf8_lossy(&rest[..split]).into_owned();
        let template = ChatTemplate::new(source, "<s>", "</s>");
        let _ = template.render(&messages(rest.get(split + 1..).unwrap_or(&[])), add_generation_prompt);
    } else {
        let templates = real_templates();
        let source = templates[(mode as usize >> 1) % templates.len()].clone();
        let template = ChatTemplate::new(source, "<s>", "</s>");
        let _ = template.render(&messages(rest), add_generation_prompt);
    }
});
