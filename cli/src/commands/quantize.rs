//! `ferrum quantize`: write a quantized copy of a Hugging Face folder in the
//! layout NVIDIA ModelOpt exports (and vLLM / TensorRT-LLM load): per linear
//! `weight` (packed), `weight_scale`, `weight_scale_2` for NVFP4, or `weight`
//! (E4M3) + `weight_scale` for FP8; `quantization_config` in config.json and
//! `hf_quant_config.json`. Everything else is copied as stored. Experts
//! stored one matrix each are quantized each as its own tensor, as ModelOpt
//! does (`nvidia/DeepSeek-R1-FP4`); experts fused into one 3-D tensor
//! (transformers 5, gpt-oss) are copied as stored.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferrum_engine::loader::{ModelDir, StDtype, TensorToWrite, WeightStore, write_safetensors};
use ferrum_engine::model::QuantPolicy;
use ferrum_engine::model::weights_widen as widen;
use ferrum_engine::quant::{Fp8Scaling, Nvfp4Convention, QuantFormat, QuantizedMatrix};
use serde_json::{Value, json};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// A Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// nvfp4 or fp8 (the formats with a published ModelOpt layout).
    #[arg(long)]
    pub format: QuantFormat,
    #[arg(long)]
    pub out: PathBuf,
    /// Leave weights whose name matches unquantized (repeatable; `lm_head` always is).
    #[arg(long)]
    pub quant_exclude: Vec<String>,
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let algo = match args.format {
        QuantFormat::Nvfp4(Nvfp4Convention::ModelOpt) => "NVFP4",
        QuantFormat::Fp8(Fp8Scaling::PerTensor) => "FP8",
        other => bail!("no published checkpoint layout is written for {other} yet (supported: nvfp4, fp8)"),
    };
    if args.model.is_file() {
        bail!("ferrum quantize reads a Hugging Face folder; {} is a file", args.model.display());
    }
    let dir = ModelDir::new(&args.model)?;
    let store = WeightStore::open_dir(&dir.root)?;
    let policy = QuantPolicy::new(Some(args.format), &args.quant_exclude);
    let mut owned: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut quantized = 0;
    // the stored tensors, not the stacks the loader makes of them (`loader::experts`)
    let names: Vec<String> = store.stored().iter().map(|t| t.name.to_string()).collect();
    let mut fused = 0;
    for name in &names {
        let raw = store.get(name)?;
        // every matrix but the embedding table is a linear layer's (`lm_head`
        // and the routers are excluded by the policy), as the loader sees them
        let is_linear = name.ends_with(".weight") && raw.shape.len() == 2 && !name.contains("embed_tokens");
        match policy.format_for(name).filter(|_| is_linear) {
            Some(format) => {
                let (rows, cols) = (raw.shape[0], raw.shape[1]);
                let packed = QuantizedMatrix::quantize(format, &widen(name, &raw)?, rows, cols)
                    .with_context(|| format!("quantizing {name}"))?;
                let prefix = name.strip_suffix(".weight").expect("checked suffix");
                match &packed {
                    QuantizedMatrix::Nvfp4(m) => {
                        owned.push((name.clone(), StDtype::U8, vec![rows, cols / 2], m.packed().to_vec()));
                        owned.push((
                            format!("{prefix}.weight_scale"),
                            StDtype::F8E4M3,
                            vec![rows, cols / 16],
                            m.scales().to_vec(),
                        ));
                        owned.push((
                            format!("{prefix}.weight_scale_2"),
                            StDtype::F32,
                            vec![],
                            m.tensor_scale().to_le_bytes().to_vec(),
                        ));
                    }
                    QuantizedMatrix::Fp8(m) => {
                        owned.push((name.clone(), StDtype::F8E4M3, vec![rows, cols], m.data().to_vec()));
                        let scale: Vec<u8> = m.scales().iter().flat_map(|s| s.to_le_bytes()).collect();
                        owned.push((format!("{prefix}.weight_scale"), StDtype::F32, vec![], scale));
                    }
                    _ => unreachable!("formats were checked above"),
                }
                quantized += 1;
            }
            None => {
                fused += (name.contains(".experts.") && raw.shape.len() == 3) as usize;
                owned.push((name.clone(), raw.dtype, raw.shape.to_vec(), raw.bytes.into_owned()))
            }
        }
    }
    if fused > 0 {
        eprintln!("{fused} fused expert tensors (one 3-D tensor per layer) are copied as stored, not quantized");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let tensors: Vec<TensorToWrite<'_>> = owned
        .iter()
        .map(|(name, dtype, shape, data)| TensorToWrite {
            name: name.clone(),
            dtype: *dtype,
            shape: shape.clone(),
            data,
        })
        .collect();
    write_safetensors(&args.out.join("model.safetensors"), &tensors)?;

    let exclude: Vec<String> = policy.exclude.clone();
    let quant = json!({"quant_algo": algo, "kv_cache_quant_algo": null, "group_size": 16, "exclude_modules": exclude});
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(dir.config())?)?;
    let mut qc = quant.clone();
    qc["quant_method"] = "modelopt".into();
    config["quantization_config"] = qc;
    std::fs::write(args.out.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    let hf_quant = json!({"producer": {"name": "ferrum", "version": env!("CARGO_PKG_VERSION")}, "quantization": quant});
    std::fs::write(args.out.join("hf_quant_config.json"), serde_json::to_string_pretty(&hf_quant)?)?;
    for file in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"] {
        let from = dir.root.join(file);
        if from.exists() {
            std::fs::copy(&from, args.out.join(file)).with_context(|| format!("copying {file}"))?;
        }
    }
    eprintln!("wrote {} ({quantized} linear weights in {}) to {}", algo, args.format, args.out.display());
    Ok(())
}
