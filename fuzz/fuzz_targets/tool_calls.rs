//! A model's answer as the tool-call finder reads it, in every syntax:
//! whatever the text, finding calls in it whole and as a stream cut at
//! arbitrary places (the first bytes of the input pick the cuts) must
//! agree, and a call's arguments must be JSON. No panic on any text.
#![no_main]

use ferrum_api::tools::{Piece, ToolStream, ToolSyntax, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    for syntax in [ToolSyntax::Hermes, ToolSyntax::Llama3Json, ToolSyntax::Mistral] {
        let whole = parse(syntax, &text);
        for (_, call) in whole.1.iter().enumerate() {
            assert!(serde_json::from_str::<serde_json::Value>(&call.arguments).is_ok(), "{call:?}");
        }
        // the same text in pieces of 1 + cuts % 7 characters
        let size = 1 + (cuts % 7) as usize;
        let chars: Vec<char> = text.chars().collect();
        let mut stream = ToolStream::new(syntax);
        let (mut content, mut calls) = (String::new(), Vec::new());
        let pieces = chars.chunks(size).flat_map(|c| stream.push(&c.iter().collect::<String>())).collect::<Vec<_>>();
        for p in pieces.into_iter().chain(stream.finish()) {
            match p {
                Piece::Content(c) => content.push_str(&c),
                Piece::Call(c) => calls.push(c),
            }
        }
        assert_eq!((content, calls), whole, "{syntax:?} in pieces of {size}");
    }
});
