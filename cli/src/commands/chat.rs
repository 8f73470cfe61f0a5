//! `ferrum chat`: talk to a model through its chat template, one-shot or
//! interactively.

use std::io::{BufRead, Write};

use anyhow::Result;
use clap::Args;
use ferrum_engine::chat_template::Message;

use super::generate::{report, stream};
use crate::model_args::{ModelArgs, SamplingArgs};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Answer this one message and exit; without it, read messages from stdin.
    pub message: Option<String>,
    /// A system prompt to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: &ChatArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let template = loaded.source.chat_template()?;
    let tokenizer = loaded.source.tokenizer()?;
    let opts = args.sampling.options(&args.model, &loaded)?;
    let mut history: Vec<Message> = args.system.iter().map(|s| Message::new("system", s)).collect();

    let turn = |history: &mut Vec<Message>, user: &str| -> Result<()> {
        history.push(Message::new("user", user));
        // the template writes BOS itself, so none is added here
        let prompt = tokenizer.encode(&template.render(history, true)?, false)?;
        let out = stream(&loaded, &prompt, opts.clone())?;
        println!();
        history.push(Message::new("assistant", out.text.trim()));
        report(&out);
        Ok(())
    };

    if let Some(message) = &args.message {
        return turn(&mut history, message);
    }
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(()); // end of input
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/exit" || line == "/quit" {
            return Ok(());
        }
        turn(&mut history, line)?;
    }
}
