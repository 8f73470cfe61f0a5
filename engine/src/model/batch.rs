//! One forward step's work: chunks of tokens from several sequences, each
//! continuing at its own position with its own block table. Prefill (many
//! tokens), decode (one token) and chunked prefill are the same thing here.

use crate::error::{Error, Result};

/// Which positions of a chunk need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None: the chunk only fills the cache (an early chunk of a long prompt).
    None,
    /// The last token's: what sampling needs.
    Last,
    /// Every token's: for perplexity and the `logits` command.
    All,
}

#[derive(Clone, Copy, Debug)]
pub struct SeqChunk<'a> {
    /// The tokens fed this step.
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; earlier positions are already in the cache.
    pub start_pos: usize,
    /// Blocks holding this sequence's positions, in order; must already cover
    /// `start_pos + tokens.len()` positions.
    pub block_table: &'a [u32],
    pub logits: LogitsWanted,
}

impl SeqChunk<'_> {
    /// How many logit rows this chunk asks for.
    pub fn logit_rows(&self) -> usize {
        match self.logits {
            LogitsWanted::None => 0,
            LogitsWanted::Last => 1,
            LogitsWanted::All => self.tokens.len(),
        }
    }
}

/// The flat per-token arrays the ops consume, built on the host.
#[derive(Debug, Default, PartialEq)]
pub struct BatchLayout {
    /// (T,) token ids of all chunks, concatenated
    pub token_ids: Vec<u32>,
    /// (T,) position of each token in its sequence
    pub positions: Vec<u32>,
    /// (T,) index of each token's sequence
    pub token_seq: Vec<u32>,
    /// (T,) cache slot each token's k and v go to
    pub slots: Vec<u32>,
    /// (seqs, max_blocks) block tables, padded with 0
    pub block_tables: Vec<u32>,
    pub max_blocks: usize,
    /// rows of T whose logits are returned, in order
    pub logit_rows: Vec<u32>,
}

impl BatchLayout {
    pub fn build(chunks: &[SeqChunk<'_>], block_size: usize, num_blocks: usize) -> Result<Self> {
        let mut b = BatchLayout { max_blocks: 1, ..Default::default() };
        for c in chunks {
            let end = c.start_pos + c.tokens.len();
            if c.tokens.is_empty() {
                return Err(Error::Request("a sequence chunk with no tokens".into()));
            }
            if end > c.block_table.len() * block_size {
                return Err(Error::KvCache(format!(
                    "{end} positions but the block table holds {} blocks of {block_size}",
                    c.block_table.len()
                )));
            }
            if let Some(&bad) = c.block_table.iter().find(|&&blk| blk as usize >= num_blocks) {
                return Err(Error::KvCache(format!("block {bad} is past the {num_blocks} blocks of the cache")));
            }
            b.max_blocks = b.max_blocks.max(c.block_table.len());
        }
        for (s, c) in chunks.iter().enumerate() {
            let mut table = c.block_table.to_vec();
            table.resize(b.max_blocks, 0);
            b.block_tables.extend(table);
            for (i, &tok) in c.tokens.iter().enumerate() {
                let pos = c.start_pos + i;
                let slot = c.block_table[pos / block_size] as usize * block_size + pos % block_size;
                let row = b.token_ids.len() as u32;
                b.token_ids.push(tok);
                b.positions.push(pos as u32);
                b.token_seq.push(s as u32);
                b.slots.push(slot as u32);
                let wanted = match c.logits {
                    LogitsWanted::None => false,
                    LogitsWanted::Last => i + 1 == c.tokens.len(),
                    LogitsWanted::All => true,
                };
                if wanted {
                    b.logit_rows.push(row);
                }
            }
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_block_tables_across_sequences() {
        let chunks = [
            SeqChunk { tokens: &[7, 8, 9], start_pos: 3, block_table: &[5, 2], logits: LogitsWanted::Last },
            SeqChunk { tokens: &[1], start_pos: 0, block_table: &[0], logits: LogitsWanted::All },
        ];
        let b = BatchLayout::build(&chunks, 4, 8).unwrap();
        assert_eq!(b.positions, [3, 4, 5, 0]);
        assert_eq!(b.slots, [5 * 4 + 3, 2 * 4, 2 * 4 + 1, 0]);
        assert_eq!(b.token_seq, [0, 0, 0, 1]);
        assert_eq!(b.block_tables, [5, 2, 0, 0]);
        assert_eq!(b.logit_rows, [2, 3]);
    }

    #[test]
    fn a_table_too_short_is_an_error() {
        let chunks = [SeqChunk { tokens: &[1, 2], start_pos: 3, block_table: &[0], logits: LogitsWanted::Last }];
        assert!(BatchLayout::build(&chunks, 4, 8).is_err());
    }
}
