//! A BERT encoder whose modules mirror the Hugging Face tree (`embeddings`, `encoder.layer.N`,
//! `attention.self.query`, ...), with every linear layer of the encoder a [`LoraLinear`].

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm};
use burn::tensor::activation::softmax;
use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Int, Tensor};

use super::config::BertConfig;
use super::dropout::{apply_dropout, dropout_is_active, next_mask_key};
use super::gelu::exact_gelu;
use super::weights::WeightMap;
use crate::coto::Gates;
use crate::error::Result;
use crate::kernels::{AttentionSpec, CpuAttention, layer_norm};
use crate::lora::LoraLinear;

/// Additive attention bias for padded key positions, as in Hugging Face (`finfo(f32).min`).
const MASKED_SCORE: f32 = f32::MIN;

/// `embeddings`: word, position and token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `word_embeddings`, `[vocab_size, hidden]`.
    pub word_embeddings: Embedding,
    /// `position_embeddings`, `[max_position_embeddings, hidden]`.
    pub position_embeddings: Embedding,
    /// `token_type_embeddings`, `[type_vocab_size, hidden]`.
    pub token_type_embeddings: Embedding,
    /// `LayerNorm`.
    pub layer_norm: LayerNorm,
    /// The LayerNorm's epsilon (`layer_norm_eps`).
    pub layer_norm_eps: f64,
    /// Dropout on the normalised sum.
    pub dropout: Dropout,
}

impl BertEmbeddings {
    fn load(config: &BertConfig, weights: &WeightMap, device: &Device) -> Result<Self> {
        let h = config.hidden_size;
        Ok(Self {
            word_embeddings: weights.embedding("embeddings.word_embeddings.weight", config.vocab_size, h, device)?,
            position_embeddings: weights.embedding(
                "embeddings.position_embeddings.weight",
                config.max_position_embeddings,
                h,
                device,
            )?,
            token_type_embeddings: weights.embedding(
                "embeddings.token_type_embeddings.weight",
                config.type_vocab_size,
                h,
                device,
            )?,
            layer_norm: weights.layer_norm("embeddings.LayerNorm", h, config.layer_norm_eps, device)?,
            layer_norm_eps: config.layer_norm_eps,
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        })
    }

    /// Embeds token ids `[batch, seq]` to `[batch, seq, hidden]`, with positions `0..seq` and
    /// token type 0 throughout.
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .unsqueeze::<2>()
            .expand([batch, seq]);
        let token_types = Tensor::<2, Int>::zeros([batch, seq], &device);
        let sum = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(token_types);
        apply_dropout(&self.dropout, layer_norm(&self.layer_norm, self.layer_norm_eps, sum))
    }
}

/// `attention.self`: multi-head scaled dot-product self-attention.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// `query`.
    pub query: LoraLinear,
    /// `key`.
    pub key: LoraLinear,
    /// `value`.
    pub value: LoraLinear,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
}

impl BertSelfAttention {
    /// Attends over `x: [batch, seq, hidden]` with the additive key mask
    /// `mask_bias: [batch, 1, 1, seq]`, returning the per-head contexts concatenated,
    /// `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>, gates: &Gates) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let split = |t: Tensor<3>| {
            t.reshape([batch, seq, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = self.query.forward_gated(x.clone(), gates);
        let k = self.key.forward_gated(x.clone(), gates);
        let v = self.value.forward_gated(x, gates);
        if q.device().without_autodiff() == Device::flex() && q.dtype() == DType::F32 {
            return self.cpu_attention(q, k, v, mask_bias.reshape([batch, seq]));
        }

        let (q, k, v) = (split(q), split(k), split(v));
        let scores = q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt() + mask_bias;
        let probs = apply_dropout(&self.dropout, softmax(scores, 3));
        probs
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, hidden])
    }
}

impl BertSelfAttention {
    /// Computes the same attention as [`Self::forward`] in one fused kernel on burn's CPU
    /// backend, from `[batch, seq, hidden]` projections and the key bias `[batch, seq]`.
    fn cpu_attention(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, key_bias: Tensor<2>) -> Tensor<3> {
        let dropout = dropout_is_active(&self.dropout, &q.device());
        let spec = AttentionSpec {
            heads: self.num_heads,
            dropout: if dropout { self.dropout.prob } else { 0.0 },
            mask_key: if dropout { next_mask_key() } else { 0 },
        };
        Tensor::from_dispatch(<Dispatch as CpuAttention>::cpu_attention(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            key_bias.into_dispatch(),
            spec,
        ))
    }
}

/// `attention.output` or `output`: a dense projection, dropout, and a residual LayerNorm.
#[derive(Module, Debug)]
pub struct BertResidualOutput {
    /// `dense`.
    pub dense: LoraLinear,
    /// `LayerNorm`.
    pub layer_norm: LayerNorm,
    /// The LayerNorm's epsilon (`layer_norm_eps`).
    pub layer_norm_eps: f64,
    /// Dropout before the residual sum.
    pub dropout: Dropout,
}

impl BertResidualOutput {
    fn load(prefix: &str, d_in: usize, config: &BertConfig, weights: &WeightMap, device: &Device) -> Result<Self> {
        let h = config.hidden_size;
        Ok(Self {
            dense: LoraLinear::new(weights.linear(&format!("{prefix}.dense"), d_in, h, device)?),
            layer_norm: weights.layer_norm(&format!("{prefix}.LayerNorm"), h, config.layer_norm_eps, device)?,
            layer_norm_eps: config.layer_norm_eps,
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        })
    }

    /// `LayerNorm(dropout(dense(x)) + residual)`, shapes `[batch, seq, d_in]` and
    /// `[batch, seq, hidden]` to `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, residual: Tensor<3>, gates: &Gates) -> Tensor<3> {
        let projected = apply_dropout(&self.dropout, self.dense.forward_gated(x, gates));
        layer_norm(&self.layer_norm, self.layer_norm_eps, projected + residual)
    }
}

/// `attention`: self-attention followed by its output projection.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `attention.self` (renamed: `self` is a Rust keyword).
    pub self_attention: BertSelfAttention,
    /// `attention.output`.
    pub output: BertResidualOutput,
}

/// `intermediate`: the feed-forward expansion with exact GELU.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `dense`.
    pub dense: LoraLinear,
}

/// `encoder.layer.N`: one transformer layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// `attention`.
    pub attention: BertAttention,
    /// `intermediate`.
    pub intermediate: BertIntermediate,
    /// `output`.
    pub output: BertResidualOutput,
}

impl BertLayer {
    fn load(index: usize, config: &BertConfig, weights: &WeightMap, device: &Device) -> Result<Self> {
        let h = config.hidden_size;
        let prefix = format!("encoder.layer.{index}");
        let linear = |name: &str, d_in: usize, d_out: usize| -> Result<LoraLinear> {
            Ok(LoraLinear::new(weights.linear(&format!("{prefix}.{name}"), d_in, d_out, device)?))
        };
        Ok(Self {
            attention: BertAttention {
                self_attention: BertSelfAttention {
                    query: linear("attention.self.query", h, h)?,
                    key: linear("attention.self.key", h, h)?,
                    value: linear("attention.self.value", h, h)?,
                    dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
                    num_heads: config.num_attention_heads,
                },
                output: BertResidualOutput::load(&format!("{prefix}.attention.output"), h, config, weights, device)?,
            },
            intermediate: BertIntermediate {
                dense: linear("intermediate.dense", h, config.intermediate_size)?,
            },
            output: BertResidualOutput::load(
                &format!("{prefix}.output"),
                config.intermediate_size,
                config,
                weights,
                device,
            )?,
        })
    }

    /// Runs the layer on `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>, gates: &Gates) -> Tensor<3> {
        let context = self.attention.self_attention.forward(x.clone(), mask_bias, gates);
        let attended = self.attention.output.forward(context, x, gates);
        let expanded = exact_gelu(self.intermediate.dense.forward_gated(attended.clone(), gates));
        self.output.forward(expanded, attended, gates)
    }

    /// The layer's linear modules with their names relative to the layer, in adapter order.
    pub fn linears_mut(&mut self) -> [(&'static str, &mut LoraLinear); 6] {
        [
            ("attention.self.query", &mut self.attention.self_attention.query),
            ("attention.self.key", &mut self.attention.self_attention.key),
            ("attention.self.value", &mut self.attention.self_attention.value),
            ("attention.output.dense", &mut self.attention.output.dense),
            ("intermediate.dense", &mut self.intermediate.dense),
            ("output.dense", &mut self.output.dense),
        ]
    }

    /// The layer's linear modules with their names relative to the layer, in adapter order.
    pub fn linears(&self) -> [(&'static str, &LoraLinear); 6] {
        [
            ("attention.self.query", &self.attention.self_attention.query),
            ("attention.self.key", &self.attention.self_attention.key),
            ("attention.self.value", &self.attention.self_attention.value),
            ("attention.output.dense", &self.attention.output.dense),
            ("intermediate.dense", &self.intermediate.dense),
            ("output.dense", &self.output.dense),
        ]
    }
}

/// `encoder`.
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// `layer.N`.
    pub layer: Vec<BertLayer>,
}

/// `pooler`: `tanh(dense(h[CLS]))`, frozen.
#[derive(Module, Debug)]
pub struct BertPooler {
    /// `dense`.
    pub dense: LoraLinear,
}

impl BertPooler {
    /// Pools `[batch, seq, hidden]` to `[batch, hidden]` from the first (`[CLS]`) token.
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [batch, _, h] = hidden.dims();
        let cls = hidden.narrow(1, 0, 1).reshape([batch, h]);
        self.dense.forward(cls, false).tanh()
    }
}

/// The BERT encoder: `BertModel` in Hugging Face.
#[derive(Module, Debug)]
pub struct BertModel {
    /// `embeddings`.
    pub embeddings: BertEmbeddings,
    /// `encoder`.
    pub encoder: BertEncoder,
    /// `pooler`, when the checkpoint has one.
    pub pooler: Option<BertPooler>,
}

impl BertModel {
    /// Builds the encoder from checkpoint tensors with Hugging Face names (an optional `bert.`
    /// prefix, as in `BertForSequenceClassification` checkpoints, is accepted). Every weight is
    /// frozen; adapters are added by [`super::inject_lora`].
    pub fn load(config: &BertConfig, weights: &WeightMap, device: &Device) -> Result<Self> {
        config.validate()?;
        let embeddings = BertEmbeddings::load(config, weights, device)?;
        let layer = (0..config.num_hidden_layers)
            .map(|index| BertLayer::load(index, config, weights, device))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if weights.contains("pooler.dense.weight") {
            Some(BertPooler {
                dense: LoraLinear::new(weights.linear("pooler.dense", config.hidden_size, config.hidden_size, device)?),
            })
        } else {
            None
        };
        let model = Self {
            embeddings,
            encoder: BertEncoder { layer },
            pooler,
        };
        Ok(model.no_grad())
    }

    /// Runs the encoder on token ids `[batch, seq]` with `attention_mask` `[batch, seq]` (1 for
    /// tokens, 0 for padding), returning `last_hidden_state`, `[batch, seq, hidden]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>, gates: &Gates) -> Tensor<3> {
        let [batch, seq] = attention_mask.dims();
        let mask_bias = (attention_mask.equal_elem(0).float() * MASKED_SCORE).reshape([batch, 1, 1, seq]);
        let mut hidden = self.embeddings.forward(input_ids);
        for layer in &self.encoder.layer {
            hidden = layer.forward(hidden, mask_bias.clone(), gates);
        }
        hidden
    }
}
