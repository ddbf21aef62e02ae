//! The BERT encoder on the real all-MiniLM-L6-v2 against Hugging Face transformers: token ids,
//! `last_hidden_state` and the mean-pooled, L2-normalised sentence embedding of four sentences.
//! Fetches the model into the cache on first use (`coto fetch` does the same).

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use coto::assets::{self, MINILM};
use coto::coto::Gates;
use coto::model::{BertModel, Checkpoint, HostTensor, l2_normalize, mean_pool};
use common::{devices, fixture, fixture_path, max_abs_error};

/// Max absolute error allowed against transformers' float32 outputs, per device.
fn tolerance(device: &str) -> f64 {
    if device == "flex" { 1e-4 } else { 2e-3 }
}

fn reference_sentences() -> Vec<String> {
    let text = std::fs::read_to_string(fixture_path("minilm_l6_outputs.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn reference_ids(name: &str) -> Vec<i64> {
    let bytes = std::fs::read(fixture_path("minilm_l6_outputs.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(name).unwrap();
    view.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn minilm_matches_transformers() {
    let dir = assets::ensure(&MINILM).expect("MiniLM is fetched");
    let checkpoint = Checkpoint::from_dir(&dir, 64).unwrap();
    let sentences = reference_sentences();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();

    let batch = checkpoint.tokenizer.encode_batch(&texts).unwrap();
    assert_eq!(batch.input_ids, reference_ids("input_ids"), "token ids differ");
    assert_eq!(batch.attention_mask, reference_ids("attention_mask"), "attention mask differs");

    let reference = fixture("minilm_l6_outputs.safetensors");
    let expected_hidden = reference.get("last_hidden_state", &[4, 19, 384]).unwrap();
    let expected_embedding = reference.get("sentence_embedding", &[4, 384]).unwrap();

    for (name, device) in devices() {
        let (hidden, embedding) = run(&checkpoint, &batch_tensors(&batch, &device), &device);
        let hidden_error = max_abs_error(&hidden, expected_hidden);
        let embedding_error = max_abs_error(&embedding, expected_embedding);
        println!("{name}: last_hidden_state max abs error {hidden_error:.2e}, embedding {embedding_error:.2e}");
        assert!(hidden_error <= tolerance(name), "last_hidden_state on {name}: {hidden_error:.3e}");
        assert!(embedding_error <= tolerance(name), "sentence_embedding on {name}: {embedding_error:.3e}");
    }
}

fn batch_tensors(batch: &coto::model::EncodedBatch, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let shape = [batch.batch, batch.seq];
    (
        Tensor::from_data(TensorData::new(batch.input_ids.clone(), shape), device),
        Tensor::from_data(TensorData::new(batch.attention_mask.clone(), shape), device),
    )
}

fn run(
    checkpoint: &Checkpoint,
    (ids, mask): &(Tensor<2, Int>, Tensor<2, Int>),
    device: &Device,
) -> (HostTensor, HostTensor) {
    let model = BertModel::load(&checkpoint.config, &checkpoint.weights, device).unwrap();
    let hidden = model.forward(ids.clone(), mask.clone(), &Gates::all_on(0));
    let embedding = l2_normalize(mean_pool(hidden.clone(), mask.clone()));
    (HostTensor::from_tensor(hidden), HostTensor::from_tensor(embedding))
}
