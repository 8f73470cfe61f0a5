//! How a request body becomes a [`Job`]: parsed, checked against the
//! limits and the served model, the chat template applied and the prompts
//! tokenized. Pure: no engine, no I/O, so every body a client can send can
//! be tried here (the `openai_request` fuzz target does).

use std::sync::Arc;

use ferrum_engine::chat_template::{ChatTemplate, Message};
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::serving::GenerationRequest;
use ferrum_engine::tokenizer::Tokenizer;

use crate::error::ApiError;
use crate::limits::RequestLimits;
use crate::request::{self, ChatRequest, CompletionRequest, Prompt};
use crate::tools::{ToolSyntax, ToolUse};

/// What one request turns into before it reaches the engine: every prompt
/// runs `n` times with `request`'s settings.
#[derive(Debug)]
pub struct Job {
    pub prompts: Vec<Vec<u32>>,
    pub request: GenerationRequest,
    /// Choices returned per prompt.
    pub n: usize,
    /// Choices sampled per prompt (`best_of`, at least `n`): the `n` most
    /// likely are returned.
    pub best_of: usize,
    /// Each prompt's text, returned before its completions (`echo`).
    pub echo: Option<Vec<String>>,
    pub stream: bool,
    pub include_usage: bool,
    pub chat: bool,
    /// How to find tool calls in the answer, when the request offers tools.
    pub tools: Option<ToolSyntax>,
}

impl Job {
    /// One engine request per sampled choice (`best_of` per prompt),
    /// prompt-major; choice `i` of a prompt is seeded `seed + i`, so sampled
    /// choices differ.
    pub fn requests(&self) -> Vec<GenerationRequest> {
        let mut out = Vec::with_capacity(self.prompts.len() * self.best_of);
        for prompt in &self.prompts {
            for i in 0..self.best_of {
                let mut request = self.request.clone();
                request.prompt = prompt.clone();
                if self.best_of > self.n {
                    // the chosen tokens' logprobs rank the choices
                    request.logprobs = request.logprobs.or(Some(0));
                }
                request.sampling.seed = request.sampling.seed.wrapping_add(i as u64);
                out.push(request);
            }
        }
        out
    }
}

/// What the server serves, as far as turning a body into a job needs.
pub struct Served {
    /// The id clients name in `model`.
    pub model_name: String,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub template: Option<ChatTemplate>,
    /// Sampling when a request says nothing (the model's generation config).
    pub defaults: SamplingParams,
    pub eos_token_ids: Vec<u32>,
    /// The model's context, prompt and output together.
    pub max_context: usize,
    pub limits: RequestLimits,
}

/// A JSON body as `T`, or a 400 that says what is wrong with it.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

impl Served {
    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.model_name => Err(ApiError::model_not_found(m, &self.model_name)),
            _ => Ok(()),
        }
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer, ApiError> {
        self.tokenizer.as_deref().ok_or_else(|| ApiError::bad_request("this model has no tokenizer; send token ids"))
    }

    /// Token ids as text, or `<id>`s without a tokenizer.
    fn decode(&self, ids: &[u32]) -> String {
        match self.tokenizer.as_deref().map(|t| t.decode(ids, false)) {
            Some(Ok(text)) => text,
            _ => ids.iter().map(|id| format!("<{id}>")).collect(),
        }
    }

    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ApiError> {
        self.tokenizer()?.encode(text, add_special_tokens).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// The stop token ids a request gets (none with vLLM's `ignore_eos`).
    fn stop_ids(&self, ignore_eos: bool) -> Vec<u32> {
        if ignore_eos { Vec::new() } else { self.eos_token_ids.clone() }
    }

    /// A `/v1/completions` body.
    pub fn completion_job(&self, body: &[u8]) -> Result<Job, ApiError> {
        let req: CompletionRequest = parse_json(body)?;
        self.check_model(req.model.as_deref())?;
        let (prompts, texts): (Vec<Vec<u32>>, Vec<Option<String>>) = match req.prompt {
            Prompt::Text(t) => (vec![self.encode(&t, true)?], vec![Some(t)]),
            Prompt::Texts(ts) => {
                self.limits.prompts(ts.len())?;
                let ids = ts.iter().map(|t| self.encode(t, true)).collect::<Result<_, _>>()?;
                (ids, ts.into_iter().map(Some).collect())
            }
            Prompt::Ids(ids) => (vec![ids], vec![None]),
            Prompt::IdLists(lists) => {
                self.limits.prompts(lists.len())?;
                let none = vec![None; lists.len()];
                (lists, none)
            }
        };
        self.limits.logit_bias(req.sampling.logit_bias.as_ref().map_or(0, |b| b.len()))?;
        let n = self.limits.n(req.n)?;
        let best_of = match req.best_of {
            None => n,
            Some(b) if b >= n as i64 && b <= self.limits.max_n as i64 => b as usize,
            Some(b) => {
                return Err(ApiError::bad_request(format!(
                    "best_of must be between n ({n}) and {}, got {b}",
                    self.limits.max_n
                )));
            }
        };
        if best_of > n && req.stream {
            return Err(ApiError::bad_request("best_of cannot be streamed"));
        }
        let logprobs = request::top_logprobs(req.logprobs)?;
        // the prompt as text: as given, or its ids decoded
        let echo = req
            .echo
            .then(|| prompts.iter().zip(texts).map(|(ids, text)| text.unwrap_or_else(|| self.decode(ids))).collect());
        Ok(Job {
            request: GenerationRequest {
                prompt: Vec::new(),
                sampling: req.sampling.params(&self.defaults)?,
                max_tokens: request::max_tokens(req.max_tokens, 16)?,
                stop_strings: self.limits.stops(req.stop)?,
                stop_token_ids: self.stop_ids(req.sampling.ignore_eos),
                logprobs,
                grammar: req.guided.grammar()?,
                keep_special_tokens: false,
            },
            prompts,
            n,
            best_of,
            echo,
            stream: req.stream,
            include_usage: req.stream_options.is_some_and(|o| o.include_usage),
            chat: false,
            tools: None,
        })
    }

    /// A `/v1/chat/completions` body: the messages through the chat template.
    pub fn chat_job(&self, body: &[u8]) -> Result<Job, ApiError> {
        let req: ChatRequest = parse_json(body)?;
        self.check_model(req.model.as_deref())?;
        self.limits.messages(req.messages.len())?;
        self.limits.logit_bias(req.sampling.logit_bias.as_ref().map_or(0, |b| b.len()))?;
        let template =
            self.template.as_ref().ok_or_else(|| ApiError::bad_request("this model has no chat template"))?;
        let messages: Vec<Message> =
            req.messages.iter().enumerate().map(|(i, m)| m.to_template(i)).collect::<Result<_, ApiError>>()?;
        let tools = ToolUse::plan(
            &req.tools,
            req.tool_choice.as_ref(),
            req.parallel_tool_calls.unwrap_or(true),
            template,
            self.tokenizer()?,
        )?;
        let grammar = match (req.guided.grammar()?, tools.grammar) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("a required tool call and a response format cannot both apply"));
            }
            (g, t) => g.or(t),
        };
        let text = template
            .render_with_tools(&messages, tools.template_tools.as_ref(), true)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let prompt = self.encode(&text, false)?;
        let room = self.max_context.saturating_sub(prompt.len()).max(1);
        let logprobs = if req.logprobs { Some(request::top_logprobs(req.top_logprobs)?.unwrap_or(0)) } else { None };
        Ok(Job {
            request: GenerationRequest {
                prompt: Vec::new(),
                sampling: req.sampling.params(&self.defaults)?,
                max_tokens: request::max_tokens(req.max_completion_tokens.or(req.max_tokens), room)?,
                stop_strings: self.limits.stops(req.stop)?,
                stop_token_ids: self.stop_ids(req.sampling.ignore_eos),
                logprobs,
                grammar,
                // a call's marker may be a special token
                keep_special_tokens: tools.syntax.is_some(),
            },
            prompts: vec![prompt],
            n: self.limits.n(req.n)?,
            best_of: self.limits.n(req.n)?,
            echo: None,
            stream: req.stream,
            include_usage: req.stream_options.is_some_and(|o| o.include_usage),
            chat: true,
            tools: tools.syntax,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Served {
        Served {
            model_name: "m".into(),
            tokenizer: None,
            template: Some(ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}".into(), "", "")),
            defaults: SamplingParams::default(),
            eos_token_ids: vec![2],
            max_context: 64,
            limits: RequestLimits { max_prompts: 2, ..Default::default() },
        }
    }

    #[test]
    fn a_completion_of_ids_becomes_one_request_per_prompt_and_choice() {
        let job =
            served().completion_job(br#"{"prompt": [[5, 6], [7]], "n": 2, "max_tokens": 3, "seed": 10}"#).unwrap();
        let requests = job.requests();
        let shape: Vec<(Vec<u32>, u64)> = requests.iter().map(|r| (r.prompt.clone(), r.sampling.seed)).collect();
        assert_eq!(shape, [(vec![5, 6], 10), (vec![5, 6], 11), (vec![7], 10), (vec![7], 11)]);
        assert!(requests.iter().all(|r| r.max_tokens == 3 && r.stop_token_ids == [2]));
        // best_of samples more choices than it returns, each with its chosen tokens' logprobs
        let best = served().completion_job(br#"{"prompt": [[5], [6]], "n": 2, "best_of": 3, "seed": 1}"#).unwrap();
        let requests = best.requests();
        assert_eq!((best.n, best.best_of, requests.len()), (2, 3, 6));
        assert!(requests.iter().all(|r| r.logprobs == Some(0)));
        for bad in
            [&br#"{"prompt": [5], "n": 3, "best_of": 2}"#[..], br#"{"prompt": [5], "best_of": 3, "stream": true}"#]
        {
            assert!(served().completion_job(bad).is_err());
        }
        let ignoring = served().completion_job(br#"{"prompt": [5], "ignore_eos": true}"#).unwrap();
        assert!(ignoring.request.stop_token_ids.is_empty());
    }

    #[test]
    fn bad_bodies_are_400s_that_say_what_is_wrong() {
        let s = served();
        for (body, says) in [
            (&br#"{"prompt": [1"#[..], "invalid JSON"),
            (br#"{"prompt": [[1], [2], [3]]}"#, "at most 2"),
            (br#"{"prompt": []}"#, "empty"),
            (br#"{"prompt": "text needs a tokenizer"}"#, "no tokenizer"),
            (br#"{"prompt": [1], "max_tokens": 0}"#, "at least 1"),
            (br#"{"prompt": [1], "temperature": -1}"#, "temperature"),
        ] {
            let e = s.completion_job(body).unwrap_err();
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
        let e = s.completion_job(br#"{"model": "other", "prompt": [1]}"#).unwrap_err();
        assert_eq!(e.status, http::StatusCode::NOT_FOUND);
        let e = s.chat_job(br#"{"messages": [{"role": "hacker", "content": "x"}]}"#).unwrap_err();
        assert!(e.message.contains("messages[0].role"), "{e}");
    }
}
