//! The architectures Ferrum runs, one row each: how `config.json` and GGUF
//! metadata name it and the switches the shared decoder reads from it. Both
//! config readers (`config.rs`, `loader/gguf_model.rs`) take their rules
//! from here, so a new family is one row plus what is truly new about it.

/// The decoder families. They share one decoder with switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma,
    Gemma2,
    Gemma3,
    Mixtral,
    Qwen3Moe,
    GptOss,
    DeepseekV3,
    DeepseekV32,
}

/// Which layers attend through a sliding window, when the config does not
/// list them (`layer_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowRule {
    /// Only `layer_types` says.
    None,
    /// Every layer, when `sliding_window` is set (Mistral).
    Every,
    /// With `use_sliding_window`, layers from `max_window_layers` on (Qwen2/3).
    FromMaxWindowLayers,
    /// Every n-th layer is global, the others slide; `sliding_window_pattern`
    /// overrides n (Gemma 2: 2, Gemma 3: 6).
    Period(usize),
}

/// How a mixture-of-experts family weighs its chosen experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// softmax, top-k, renormalized (Mixtral)
    SoftmaxRenormalized,
    /// softmax, top-k, renormalized when `norm_topk_prob` (Qwen3-MoE)
    SoftmaxNormTopkProb,
    /// DeepSeek-V3: sigmoid scores, chosen by score + `e_score_correction_bias`
    /// within the `topk_group` best of `n_group` groups, renormalized when
    /// `norm_topk_prob`, times `routed_scaling_factor`; shared experts beside.
    SigmoidGrouped,
}

/// One architecture's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchSpec {
    pub arch: Architecture,
    /// `architectures[0]` in config.json
    pub hf_class: &'static str,
    pub model_type: &'static str,
    /// GGUF's `general.architecture` (Mistral and Mixtral are "llama" there)
    pub gguf: &'static str,
    /// Gemma's conventions: tanh-GELU, norms storing `gain - 1`, embeddings
    /// scaled by sqrt(hidden), tied embeddings by default.
    pub gemma: bool,
    /// Per-head RMSNorm on q and k (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Norms after attention and after the MLP too (Gemma 2 and 3).
    pub sandwich_norms: bool,
    /// q/k/v biases whatever `attention_bias` says (Qwen2).
    pub qkv_bias: bool,
    pub windows: WindowRule,
    /// `Some` for mixture-of-experts families.
    pub routing: Option<Routing>,
    /// A learned sink logit per head in every attention (gpt-oss).
    pub attention_sinks: bool,
    /// Biases on the router and on every expert's projections (gpt-oss).
    pub expert_biases: bool,
    /// Multi-head latent attention (DeepSeek V2/V3): a compressed KV cache.
    pub mla: bool,
    /// DeepSeek-V3.2's lightning indexer: each token attends to the
    /// `index_topk` cached positions it scores best (sparse attention).
    pub indexer: bool,
}

const fn dense(arch: Architecture, hf_class: &'static str, model_type: &'static str, gguf: &'static str) -> ArchSpec {
    ArchSpec {
        arch,
        hf_class,
        model_type,
        gguf,
        gemma: false,
        qk_norm: false,
        sandwich_norms: false,
        qkv_bias: false,
        windows: WindowRule::None,
        routing: None,
        attention_sinks: false,
        expert_biases: false,
        mla: false,
        indexer: false,
    }
}

/// Every architecture, in the order errors list them.
pub const ARCHITECTURES: [ArchSpec; 12] = {
    use Architecture::*;
    let gemma = ArchSpec { gemma: true, ..dense(Gemma, "GemmaForCausalLM", "gemma", "gemma") };
    [
        dense(Llama, "LlamaForCausalLM", "llama", "llama"),
        ArchSpec { windows: WindowRule::Every, ..dense(Mistral, "MistralForCausalLM", "mistral", "llama") },
        ArchSpec {
            qkv_bias: true,
            windows: WindowRule::FromMaxWindowLayers,
            ..dense(Qwen2, "Qwen2ForCausalLM", "qwen2", "qwen2")
        },
        ArchSpec {
            qk_norm: true,
            windows: WindowRule::FromMaxWindowLayers,
            ..dense(Qwen3, "Qwen3ForCausalLM", "qwen3", "qwen3")
        },
        gemma,
        ArchSpec {
            arch: Gemma2,
            hf_class: "Gemma2ForCausalLM",
            model_type: "gemma2",
            gguf: "gemma2",
            sandwich_norms: true,
            windows: WindowRule::Period(2),
            ..gemma
        },
        ArchSpec {
            arch: Gemma3,
            hf_class: "Gemma3ForCausalLM",
            model_type: "gemma3_text",
            gguf: "gemma3",
            qk_norm: true,
            sandwich_norms: true,
            windows: WindowRule::Period(6),
            ..gemma
        },
        ArchSpec {
            windows: WindowRule::Every,
            routing: Some(Routing::SoftmaxRenormalized),
            ..dense(Mixtral, "MixtralForCausalLM", "mixtral", "llama")
        },
        ArchSpec {
            qk_norm: true,
            windows: WindowRule::FromMaxWindowLayers,
            routing: Some(Routing::SoftmaxNormTopkProb),
            ..dense(Qwen3Moe, "Qwen3MoeForCausalLM", "qwen3_moe", "qwen3moe")
        },
        // softmax over the top-k logits is the top-k of the softmax, renormalized
        // sliding and full layers alternate when `layer_types` does not say
        ArchSpec {
            windows: WindowRule::Period(2),
            routing: Some(Routing::SoftmaxRenormalized),
            attention_sinks: true,
            expert_biases: true,
            ..dense(GptOss, "GptOssForCausalLM", "gpt_oss", "gpt-oss")
        },
        ArchSpec {
            routing: Some(Routing::SigmoidGrouped),
            mla: true,
            ..dense(DeepseekV3, "DeepseekV3ForCausalLM", "deepseek_v3", "deepseek2")
        },
        ArchSpec {
            routing: Some(Routing::SigmoidGrouped),
            mla: true,
            indexer: true,
            ..dense(DeepseekV32, "DeepseekV32ForCausalLM", "deepseek_v32", "deepseek32")
        },
    ]
};

impl Architecture {
    pub fn spec(self) -> &'static ArchSpec {
        ARCHITECTURES.iter().find(|s| s.arch == self).expect("every architecture has a row")
    }

    pub fn hf_name(self) -> &'static str {
        self.spec().hf_class
    }

    pub fn is_gemma(self) -> bool {
        self.spec().gemma
    }

    /// The class names config.json may give, for errors.
    pub fn supported_names() -> String {
        ARCHITECTURES.map(|s| s.hf_class).join(", ")
    }

    /// The row for a config.json's `architectures[0]` (or, without one, its `model_type`).
    pub fn from_hf(class: Option<&str>, model_type: Option<&str>) -> Option<Self> {
        ARCHITECTURES
            .iter()
            .find(|s| class == Some(s.hf_class) || (class.is_none() && model_type == Some(s.model_type)))
            .map(|s| s.arch)
    }

    /// The row for a GGUF `general.architecture`; "llama" files with experts are Mixtral.
    pub fn from_gguf(name: &str, has_experts: bool) -> Option<Self> {
        match (name, has_experts) {
            ("llama", false) => Some(Architecture::Llama),
            ("llama", true) => Some(Architecture::Mixtral),
            _ => ARCHITECTURES.iter().find(|s| s.gguf == name && s.routing.is_some() == has_experts).map(|s| s.arch),
        }
    }

    /// The GGUF names Ferrum reads, for errors.
    pub fn gguf_names() -> String {
        let mut names: Vec<&str> = ARCHITECTURES.iter().map(|s| s.gguf).collect();
        names.dedup();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_has_one_row_and_unique_names() {
        for (i, a) in ARCHITECTURES.iter().enumerate() {
            assert_eq!(a.arch.spec(), a);
            for b in &ARCHITECTURES[i + 1..] {
                assert_ne!(a.arch, b.arch);
                assert_ne!(a.hf_class, b.hf_class);
                assert_ne!(a.model_type, b.model_type);
            }
        }
    }

    #[test]
    fn gguf_names_resolve() {
        assert_eq!(Architecture::from_gguf("llama", false), Some(Architecture::Llama));
        assert_eq!(Architecture::from_gguf("llama", true), Some(Architecture::Mixtral));
        assert_eq!(Architecture::from_gguf("qwen3moe", true), Some(Architecture::Qwen3Moe));
        assert_eq!(Architecture::from_gguf("qwen3", false), Some(Architecture::Qwen3));
        assert_eq!(Architecture::from_gguf("gemma3", false), Some(Architecture::Gemma3));
        assert_eq!(Architecture::from_gguf("qwen3moe", false), None);
        assert_eq!(Architecture::from_gguf("mamba", false), None);
    }
}
