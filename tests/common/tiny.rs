//! A tiny random BERT written to disk in Hugging Face's layout (config.json, model.safetensors,
//! tokenizer.json), and a synthetic two-class task over its vocabulary, so that tests exercise
//! the real loading path in milliseconds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::Rng;

/// Words of class `positive` and class `negative`; a text's label is the set its words come from.
pub const POSITIVE: [&str; 8] = ["good", "great", "fine", "nice", "happy", "bright", "warm", "kind"];
/// See [`POSITIVE`].
pub const NEGATIVE: [&str; 8] = ["bad", "awful", "poor", "sad", "dark", "cold", "cruel", "grim"];
/// Words of neither class.
pub const NEUTRAL: [&str; 8] = ["the", "a", "day", "was", "very", "it", "and", "so"];

/// Hidden width of the tiny model.
pub const HIDDEN: usize = 32;
/// Layers of the tiny model.
pub const LAYERS: usize = 2;

fn vocabulary() -> Vec<String> {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).collect();
    vocab.extend(POSITIVE.iter().chain(&NEGATIVE).chain(&NEUTRAL).map(|s| s.to_string()));
    vocab
}

/// Writes the tiny model into `dir` and returns `dir`.
pub fn write_tiny_bert(dir: &Path, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = vocabulary();
    let config = serde_json::json!({
        "model_type": "bert",
        "vocab_size": vocab.len(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json(&vocab).to_string()).unwrap();
    write_weights(&dir.join("model.safetensors"), vocab.len(), seed);
    dir.to_path_buf()
}

fn write_weights(path: &Path, vocab: usize, seed: u64) {
    let mut rng = coto::rng::seeded(seed, 0);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut normal = |name: String, shape: Vec<usize>, std: f32| {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.random_range(-1.0f32..1.0) * std * 1.7).collect();
        tensors.push((name, shape, data));
    };
    let h = HIDDEN;
    normal("embeddings.word_embeddings.weight".into(), vec![vocab, h], 0.5);
    normal("embeddings.position_embeddings.weight".into(), vec![64, h], 0.1);
    normal("embeddings.token_type_embeddings.weight".into(), vec![2, h], 0.1);
    for layer in 0..LAYERS {
        let p = format!("encoder.layer.{layer}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", 64, h),
            ("output.dense", h, 64),
        ] {
            normal(format!("{p}.{name}.weight"), vec![out, inp], 0.15);
            normal(format!("{p}.{name}.bias"), vec![out], 0.02);
        }
    }
    normal("pooler.dense.weight".into(), vec![h, h], 0.15);
    normal("pooler.dense.bias".into(), vec![h], 0.02);

    let mut fixed: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("embeddings.LayerNorm.weight".into(), vec![h], vec![1.0; h]),
        ("embeddings.LayerNorm.bias".into(), vec![h], vec![0.0; h]),
    ];
    for layer in 0..LAYERS {
        for part in ["attention.output", "output"] {
            fixed.push((format!("encoder.layer.{layer}.{part}.LayerNorm.weight"), vec![h], vec![1.0; h]));
            fixed.push((format!("encoder.layer.{layer}.{part}.LayerNorm.bias"), vec![h], vec![0.0; h]));
        }
    }
    tensors.extend(fixed);

    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, data)| (name, shape, data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap())
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn tokenizer_json(vocab: &[String]) -> serde_json::Value {
    let ids: HashMap<&str, usize> = vocab.iter().enumerate().map(|(i, w)| (w.as_str(), i)).collect();
    let special = |token: &str| {
        serde_json::json!({"id": ids[token], "content": token, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let added: Vec<serde_json::Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|t| special(t)).collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [ids["[CLS]"]], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [ids["[SEP]"]], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": ids}
    })
}

/// `count` labelled texts of the synthetic task as `label<TAB>text` lines.
pub fn synthetic_lines(count: usize, seed: u64) -> Vec<String> {
    let mut rng = coto::rng::seeded(seed, 7);
    (0..count)
        .map(|i| {
            let positive = i % 2 == 0;
            let words = if positive { &POSITIVE } else { &NEGATIVE };
            let length = rng.random_range(3..9);
            let text: Vec<&str> = (0..length)
                .map(|_| {
                    if rng.random_bool(0.5) {
                        words[rng.random_range(0..8)]
                    } else {
                        NEUTRAL[rng.random_range(0..8)]
                    }
                })
                .collect();
            format!("{}\t{}", if positive { "pos" } else { "neg" }, text.join(" "))
        })
        .collect()
}

/// A fresh temporary directory under the target directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
