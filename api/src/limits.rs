//! What one request may ask for, each bound a flag of `ferrum serve`: past
//! it the request gets a 400 naming the field and the bound.

use clap::Args;

use crate::error::ApiError;
use crate::request::Stop;

#[derive(Args, Clone, Debug)]
pub struct RequestLimits {
    /// Most choices (`n`) one request may ask for.
    #[arg(long, default_value_t = 16)]
    pub max_n: usize,
    /// Most stop strings in one request; each is searched for in every
    /// streamed piece of text.
    #[arg(long, default_value_t = 16)]
    pub max_stop_strings: usize,
    /// Longest stop string, in bytes.
    #[arg(long, default_value_t = 256)]
    pub max_stop_bytes: usize,
    /// Most messages in one chat request.
    #[arg(long, default_value_t = 1024)]
    pub max_messages: usize,
    /// Most prompts in one completions request.
    #[arg(long, default_value_t = 64)]
    pub max_prompts: usize,
    /// Most tokens one request's `logit_bias` may name.
    #[arg(long, default_value_t = 1024)]
    pub max_logit_bias: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_n: 16,
            max_stop_strings: 16,
            max_stop_bytes: 256,
            max_messages: 1024,
            max_prompts: 64,
            max_logit_bias: 1024,
        }
    }
}

impl RequestLimits {
    /// `n` in 1..=max_n (1 when absent).
    pub fn n(&self, n: Option<i64>) -> Result<usize, ApiError> {
        match n.unwrap_or(1) {
            n if n >= 1 && n as u64 <= self.max_n as u64 => Ok(n as usize),
            n => Err(ApiError::bad_request(format!("n must be between 1 and {}, got {n}", self.max_n))),
        }
    }

    /// The stop strings, within the count and length bounds.
    pub fn stops(&self, stop: Option<Stop>) -> Result<Vec<String>, ApiError> {
        let v = match stop {
            None => return Ok(Vec::new()),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if v.len() > self.max_stop_strings {
            return Err(ApiError::bad_request(format!(
                "stop has {} strings; at most {}",
                v.len(),
                self.max_stop_strings
            )));
        }
        if let Some(long) = v.iter().find(|s| s.len() > self.max_stop_bytes) {
            return Err(ApiError::bad_request(format!(
                "a stop string of {} bytes; at most {}",
                long.len(),
                self.max_stop_bytes
            )));
        }
        Ok(v)
    }

    pub fn messages(&self, count: usize) -> Result<(), ApiError> {
        match count {
            0 => Err(ApiError::bad_request("messages must not be empty")),
            n if n > self.max_messages => {
                Err(ApiError::bad_request(format!("{n} messages; at most {} in one request", self.max_messages)))
            }
            _ => Ok(()),
        }
    }

    pub fn logit_bias(&self, count: usize) -> Result<(), ApiError> {
        if count > self.max_logit_bias {
            return Err(ApiError::bad_request(format!(
                "logit_bias names {count} tokens; at most {}",
                self.max_logit_bias
            )));
        }
        Ok(())
    }

    pub fn prompts(&self, count: usize) -> Result<(), ApiError> {
        match count {
            0 => Err(ApiError::bad_request("prompt is empty")),
            n if n > self.max_prompts => {
                Err(ApiError::bad_request(format!("{n} prompts; at most {} in one request", self.max_prompts)))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_is_inclusive_and_named_in_the_error() {
        let l = RequestLimits {
            max_n: 2,
            max_stop_strings: 1,
            max_stop_bytes: 3,
            max_messages: 2,
            max_prompts: 1,
            max_logit_bias: 2,
        };
        assert_eq!(l.n(None).unwrap(), 1);
        assert_eq!(l.n(Some(2)).unwrap(), 2);
        for bad in [0, 3, -1, i64::MAX] {
            assert!(l.n(Some(bad)).unwrap_err().message.contains("between 1 and 2"), "{bad}");
        }
        assert_eq!(l.stops(Some(Stop::One("abc".into()))).unwrap(), ["abc"]);
        assert!(l.stops(Some(Stop::One("abcd".into()))).unwrap_err().message.contains("at most 3"));
        let two = Stop::Many(vec!["a".into(), "b".into()]);
        assert!(l.stops(Some(two)).unwrap_err().message.contains("at most 1"));
        assert!(l.messages(2).is_ok() && l.messages(3).is_err() && l.messages(0).is_err());
        assert!(l.prompts(1).is_ok() && l.prompts(2).unwrap_err().message.contains("at most 1"));
        assert!(l.logit_bias(2).is_ok() && l.logit_bias(3).unwrap_err().message.contains("at most 2"));
    }
}
