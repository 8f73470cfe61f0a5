//! The parts of a config only some families have: a mixture of experts
//! (Mixtral, Qwen3-MoE, gpt-oss, DeepSeek) and multi-head latent attention
//! (DeepSeek), with the config.json readers for them.

use serde_json::Value;

use super::{Reader, Routing, opt_f64_in};
use crate::error::Result;
use crate::ops::{MoeRoute, RouterScoring};

/// Multi-head latent attention (DeepSeek V2/V3): keys and values come from
/// one compressed latent of `kv_lora_rank` per token plus a rotary key of
/// `rope` shared by the heads, which is all the cache holds.
#[derive(Clone, Debug, PartialEq)]
pub struct MlaConfig {
    /// The query's low-rank bottleneck (`q_a_proj`, `q_b_proj`), or a plain `q_proj`.
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    /// Per head: the query/key part without position (`qk_nope_head_dim`),
    /// the rotary part (`qk_rope_head_dim`) and the value (`v_head_dim`).
    pub nope: usize,
    pub rope: usize,
    pub v: usize,
    /// DeepSeek-V3.2's lightning indexer, which picks the positions each
    /// token attends to.
    pub indexer: Option<IndexerConfig>,
}

impl MlaConfig {
    /// Values a token keeps per layer: the latent and the rotary key.
    pub fn cache_width(&self) -> usize {
        self.kv_lora_rank + self.rope
    }

    /// Values a token keeps per layer beside the latent: the indexer's key.
    pub fn index_cache_width(&self) -> usize {
        self.indexer.as_ref().map_or(0, |i| i.head_dim)
    }
}

/// DeepSeek-V3.2's lightning indexer (DeepSeek Sparse Attention): its own
/// `heads` queries of `head_dim` from the query's low-rank input, one
/// cached key of `head_dim` per token, and the `top_k` positions kept.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexerConfig {
    pub heads: usize,
    pub head_dim: usize,
    pub top_k: usize,
}

impl IndexerConfig {
    /// Why these sizes cannot run beside the latent attention `m`, if they cannot.
    pub fn check(&self, m: &MlaConfig) -> std::result::Result<(), String> {
        if self.heads == 0 || self.top_k == 0 || self.head_dim < m.rope || !self.head_dim.is_multiple_of(2) {
            return Err(format!("indexer sizes must be positive, head_dim even and >= the rope dims: {self:?}"));
        }
        if m.q_lora_rank.is_none() {
            return Err("the lightning indexer needs a query low rank (`q_lora_rank`): its queries come from it".into());
        }
        Ok(())
    }
}

/// A mixture-of-experts block's shape and router.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub experts: usize,
    /// Each expert's intermediate size (`moe_intermediate_size`).
    pub expert_intermediate: usize,
    /// How tokens choose and weigh experts (top-k, scoring, renormalization).
    pub route: MoeRoute,
    /// Per layer: experts (true) or the dense MLP of `intermediate_size`.
    pub layers: Vec<bool>,
    /// Biases on the router and the experts' projections (gpt-oss).
    pub biases: bool,
    /// The router's choice bias (DeepSeek's `e_score_correction_bias`).
    pub choice_bias: bool,
    /// Shared experts' intermediate size, a dense MLP beside the routed ones (DeepSeek).
    pub shared_intermediate: Option<usize>,
}

impl MoeConfig {
    /// Mixtral's and Qwen3-MoE's router: softmax over the experts, top-k.
    pub fn softmax_route(top_k: usize, renormalize: bool) -> MoeRoute {
        MoeRoute { top_k, scoring: RouterScoring::Softmax, renormalize, groups: None, scale: 1.0 }
    }

    pub fn is_moe_layer(&self, l: usize) -> bool {
        self.layers.get(l).copied().unwrap_or(false)
    }
}

impl Reader<'_> {
    pub(super) fn mla(&self) -> Result<MlaConfig> {
        let m = MlaConfig {
            q_lora_rank: self.opt_usize("q_lora_rank")?,
            kv_lora_rank: self.usize("kv_lora_rank")?,
            nope: self.usize("qk_nope_head_dim")?,
            rope: self.usize("qk_rope_head_dim")?,
            v: self.usize("v_head_dim")?,
            indexer: None,
        };
        if m.kv_lora_rank == 0 || m.rope == 0 || !m.rope.is_multiple_of(2) || m.v == 0 || m.q_lora_rank == Some(0) {
            return Err(self.err(format!("multi-head latent attention sizes must be positive (rope even): {m:?}")));
        }
        if self.opt_bool("rope_interleave")? == Some(false) {
            return Err(self.err("rope_interleave false (rotate-half rope in MLA) is not supported yet"));
        }
        Ok(m)
    }

    /// The lightning indexer's sizes (`index_n_heads`, `index_head_dim`,
    /// `index_topk`). Its queries come from the low-rank query input, and
    /// its rope covers the first `rope` dims of each head.
    pub(super) fn indexer(&self, m: &MlaConfig) -> Result<IndexerConfig> {
        let i = IndexerConfig {
            heads: self.usize("index_n_heads")?,
            head_dim: self.usize("index_head_dim")?,
            top_k: self.usize("index_topk")?,
        };
        i.check(m).map_err(|e| self.err(e))?;
        Ok(i)
    }

    /// DeepSeek's softmax scale factor: yarn's `0.1 * mscale_all_dim * ln(factor) + 1`, squared.
    pub(super) fn mla_softmax_mscale(&self) -> Result<f64> {
        let Some(Value::Object(p)) = self.root.get("rope_parameters").or(self.root.get("rope_scaling")) else {
            return Ok(1.0);
        };
        let get = |k: &str| opt_f64_in(p, k).map_err(|m| self.err(m));
        let kind = p.get("rope_type").or(p.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
        match (kind, get("factor")?, get("mscale_all_dim")?) {
            ("default", _, _) | (_, None, _) | (_, _, None) => Ok(1.0),
            (_, Some(f), Some(all)) if all != 0.0 && f > 1.0 => Ok((0.1 * all * f.ln() + 1.0).powi(2)),
            _ => Ok(1.0),
        }
    }

    /// The experts: `num_local_experts` (or `num_experts`) of
    /// `moe_intermediate_size` (else `intermediate_size`), top
    /// `num_experts_per_tok`; Qwen3-MoE's dense layers are those in
    /// `mlp_only_layers` or off its `decoder_sparse_step`.
    pub(super) fn moe(&self, routing: Routing, biases: bool, num_layers: usize) -> Result<MoeConfig> {
        let experts = match (self.opt_usize("num_local_experts")?, self.opt_usize("n_routed_experts")?) {
            (Some(e), _) | (None, Some(e)) => e,
            (None, None) => self.usize("num_experts")?,
        };
        let top_k = self.usize("num_experts_per_tok")?;
        if experts == 0 || top_k == 0 || top_k > experts {
            return Err(self.err(format!("num_experts_per_tok ({top_k}) must be in 1..={experts} (the experts)")));
        }
        let expert_intermediate = match self.opt_usize("moe_intermediate_size")? {
            Some(i) => i,
            None => self.usize("intermediate_size")?,
        };
        if expert_intermediate == 0 {
            return Err(self.err("`moe_intermediate_size` must be positive"));
        }
        let norm_topk_prob = self.opt_bool("norm_topk_prob")?.unwrap_or(false);
        let route = match routing {
            Routing::SoftmaxRenormalized => MoeConfig::softmax_route(top_k, true),
            Routing::SoftmaxNormTopkProb => MoeConfig::softmax_route(top_k, norm_topk_prob),
            Routing::SigmoidGrouped => {
                let groups = self.opt_usize("n_group")?.unwrap_or(1);
                let top_groups = self.opt_usize("topk_group")?.unwrap_or(groups);
                MoeRoute {
                    top_k,
                    scoring: RouterScoring::Sigmoid,
                    renormalize: norm_topk_prob,
                    groups: (groups > 1).then_some(crate::ops::ExpertGroups { groups, top_groups }),
                    scale: self.opt_f64("routed_scaling_factor")?.unwrap_or(1.0) as f32,
                }
            }
        };
        // the router's own check, with this file's name on the error
        route
            .output_spec(&[crate::ops::TensorSpec::new(&[1, experts], crate::dtype::DType::F32)])
            .map_err(|e| self.err(e.to_string()))?;
        let dense: Vec<usize> = match self.root.get("mlp_only_layers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(v)) => v
                .iter()
                .map(|l| {
                    l.as_u64()
                        .map(|l| l as usize)
                        .ok_or_else(|| self.err(format!("mlp_only_layers: {l} is not a layer")))
                })
                .collect::<Result<_>>()?,
            Some(v) => return Err(self.err(format!("`mlp_only_layers` must be a list, got {v}"))),
        };
        let step = self.opt_usize("decoder_sparse_step")?.unwrap_or(1).max(1);
        let first_moe = self.opt_usize("first_k_dense_replace")?.unwrap_or(0);
        let layers = (0..num_layers).map(|l| l >= first_moe && !dense.contains(&l) && (l + 1) % step == 0).collect();
        let deepseek = routing == Routing::SigmoidGrouped;
        let shared = self.opt_usize("n_shared_experts")?.unwrap_or(0);
        Ok(MoeConfig {
            experts,
            expert_intermediate,
            route,
            layers,
            biases,
            choice_bias: deepseek,
            shared_intermediate: (shared > 0).then_some(shared.saturating_mul(expert_intermediate)),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{BASE, parse};
    use crate::ops::RouterScoring;

    /// The published sizes: Mixtral 8x7B has 46.7B parameters of which
    /// 12.9B are active; Qwen3-30B-A3B 30.5B and 3.3B.
    #[test]
    fn moe_parameter_counts_match_the_published_ones() {
        let mixtral = parse(
            r#"{"architectures": ["MixtralForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
            "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 32, "vocab_size": 32000,
            "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": false}"#,
        )
        .unwrap();
        // published to 0.1B, some rounded and some cut
        let near = |n: usize, published: f64| (n as f64 / 1e9 - published).abs() < 0.06;
        let c = mixtral.parameter_counts();
        assert!(near(c.total, 46.7) && near(c.active, 12.9), "{c:?}");
        let qwen = parse(
            r#"{"architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 2048, "intermediate_size": 6144,
            "moe_intermediate_size": 768, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
            "num_hidden_layers": 48, "vocab_size": 151936, "num_experts": 128, "num_experts_per_tok": 8,
            "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [], "tie_word_embeddings": false}"#,
        )
        .unwrap();
        let c = qwen.parameter_counts();
        assert!(near(c.total, 30.5) && near(c.active, 3.3), "{c:?}");
        let moe = qwen.moe.unwrap();
        assert!(moe.route.renormalize && moe.layers.iter().all(|&l| l));
    }

    /// DeepSeek-V3's published sizes: 671B parameters (without the
    /// multi-token-prediction layer), 37B active; MLA caches 576 values per
    /// token per layer where multi-head attention would cache 40,960.
    #[test]
    fn deepseek_v3_sizes_match_the_published_ones() {
        let c = parse(
            r#"{"architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168, "intermediate_size": 18432,
            "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
            "num_key_value_heads": 128, "n_routed_experts": 256, "num_experts_per_tok": 8, "n_group": 8,
            "topk_group": 4, "n_shared_experts": 1, "first_k_dense_replace": 3, "q_lora_rank": 1536,
            "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
            "vocab_size": 129280, "routed_scaling_factor": 2.5, "norm_topk_prob": true, "tie_word_embeddings": false,
            "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}"#,
        )
        .unwrap();
        let counts = c.parameter_counts();
        let near = |n: usize, published: f64| (n as f64 / 1e9 - published).abs() < 0.6;
        assert!(near(counts.total, 671.0) && near(counts.active, 37.0), "{counts:?}");
        assert_eq!(c.kv_floats_per_token(), 61 * 576);
        assert_eq!(c.mha_kv_floats_per_token(), 61 * 40_960);
        let route = &c.moe.as_ref().unwrap().route;
        assert_eq!((route.scoring, route.groups.unwrap().top_groups, route.scale), (RouterScoring::Sigmoid, 4, 2.5));
        // yarn's mscale(40, 1)^2 in the softmax scale
        let mscale = 0.1 * 40f32.ln() + 1.0;
        assert!((c.attention_scale - mscale * mscale / 192f32.sqrt()).abs() < 1e-6);
    }

    /// DeepSeek-V3.2-Exp is V3 plus the lightning indexer (64 heads of 128,
    /// top 2048): each token caches 128 more values per layer, 704 in all.
    /// An indexer without a query low rank is refused.
    #[test]
    fn deepseek_v32_adds_the_indexer_key_to_the_cache() {
        let v32 = r#"{"architectures": ["DeepseekV32ForCausalLM"], "hidden_size": 7168, "intermediate_size": 18432,
            "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
            "num_key_value_heads": 128, "n_routed_experts": 256, "num_experts_per_tok": 8, "n_group": 8,
            "topk_group": 4, "n_shared_experts": 1, "first_k_dense_replace": 3, "q_lora_rank": 1536,
            "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
            "vocab_size": 129280, "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048}"#;
        let c = parse(v32).unwrap();
        let indexer = c.mla.as_ref().and_then(|m| m.indexer.clone()).unwrap();
        assert_eq!((indexer.heads, indexer.head_dim, indexer.top_k), (64, 128, 2048));
        assert_eq!(c.kv_floats_per_token(), 61 * 704);
        // wq_b, wk, the key's LayerNorm and weights_proj, on each of 61 layers
        let v3 = parse(&v32.replace("DeepseekV32", "DeepseekV3")).unwrap();
        let per_layer = 1536 * 64 * 128 + 7168 * 128 + 2 * 128 + 7168 * 64;
        assert_eq!(c.parameter_counts().total - v3.parameter_counts().total, 61 * per_layer);
        let plain_q = parse(&v32.replace(r#""q_lora_rank": 1536,"#, ""));
        assert!(plain_q.unwrap_err().to_string().contains("q_lora_rank"));
    }

    #[test]
    fn qwen3_moe_dense_layers_follow_mlp_only_layers_and_the_sparse_step() {
        let c = parse(&format!(
            r#"{{"architectures": ["Qwen3MoeForCausalLM"], {BASE}, "num_hidden_layers": 4, "num_experts": 4,
            "num_experts_per_tok": 2, "moe_intermediate_size": 16, "decoder_sparse_step": 2, "mlp_only_layers": [3]}}"#
        ))
        .unwrap();
        assert_eq!(c.moe.unwrap().layers, [false, true, false, false]);
        let bad = parse(&format!(
            r#"{{"architectures": ["MixtralForCausalLM"], {BASE}, "num_local_experts": 2, "num_experts_per_tok": 3}}"#
        ));
        assert!(bad.unwrap_err().to_string().contains("num_experts_per_tok (3)"));
        // 8 experts do not split into 3 groups; a window of MLA sizes must be positive
        let mla = r#""kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8"#;
        let groups = parse(&format!(
            r#"{{"architectures": ["DeepseekV3ForCausalLM"], {BASE}, {mla}, "n_routed_experts": 8,
            "num_experts_per_tok": 2, "n_group": 3, "topk_group": 1}}"#
        ));
        assert!(groups.unwrap_err().to_string().contains("groups"), "the router's own check names the groups");
        let zero = parse(&format!(
            r#"{{"architectures": ["DeepseekV3ForCausalLM"], {BASE}, "kv_lora_rank": 0, "qk_nope_head_dim": 8,
            "qk_rope_head_dim": 4, "v_head_dim": 8, "n_routed_experts": 8, "num_experts_per_tok": 2}}"#
        ));
        assert!(zero.unwrap_err().to_string().contains("latent attention"));
    }
}
