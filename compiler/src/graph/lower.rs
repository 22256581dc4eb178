//! Lowering: expands the architecture description for one model's hyperparameters into the
//! unfused op graph (prologue, `n_layers` copies of the layer, epilogue).
use std::collections::HashMap;

use qwen_aot_plan::HyperParams;

use super::{Op, OpGraph, Value, WeightRef};
use crate::description::{Description, NodeDesc};
use crate::error::CompileError;
use crate::expr::{self, Env};

/// Names the description's expressions can use.
pub fn hparams_env(hp: &HyperParams) -> Env {
    [
        ("n_layers", hp.n_layers as f64),
        ("hidden", hp.hidden as f64),
        ("n_heads", hp.n_heads as f64),
        ("n_kv_heads", hp.n_kv_heads as f64),
        ("head_dim", hp.head_dim as f64),
        ("ffn", hp.ffn as f64),
        ("vocab", hp.vocab as f64),
        ("rms_eps", hp.rms_eps as f64),
        ("rope_theta", hp.rope_theta as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Lowers `desc` for `hp`. `has_tensor` says whether the model has a tensor (to pick among
/// `a|b` alternatives such as a separate or tied LM head).
pub fn lower(desc: &Description, hp: &HyperParams, has_tensor: &dyn Fn(&str) -> bool) -> Result<OpGraph, CompileError> {
    let mut env = hparams_env(hp);
    desc.resolve_dims(&mut env)?;
    let mut l = Lowerer { g: OpGraph::default(), env, scope: HashMap::new(), has_tensor };
    let tokens = l.g.add(Op::Tokens, vec![1], "tokens", &[]);
    l.scope.insert("tokens".into(), Value::new(tokens, 0));
    for nd in &desc.prologue {
        l.node(nd, None)?;
    }
    for layer in 0..hp.n_layers {
        for nd in &desc.layer {
            l.node(nd, Some(layer))?;
        }
    }
    for nd in &desc.epilogue {
        l.node(nd, None)?;
    }
    for name in ["logits", "next_token"] {
        let v = *l
            .scope
            .get(name)
            .ok_or_else(|| CompileError::Description(format!("the description never binds `{name}`")))?;
        l.g.outputs.push((name.to_string(), v));
    }
    Ok(l.g)
}

struct Lowerer<'a> {
    g: OpGraph,
    env: Env,
    scope: HashMap<String, Value>,
    has_tensor: &'a dyn Fn(&str) -> bool,
}

impl Lowerer<'_> {
    fn size(&self, src: &str) -> Result<usize, CompileError> {
        expr::eval_usize(src, &self.env)
    }

    fn scalar(&self, nd: &NodeDesc, key: &str) -> Result<f32, CompileError> {
        Ok(expr::eval(nd.attr(key)?, &self.env)? as f32)
    }

    fn usize_attr(&self, nd: &NodeDesc, key: &str) -> Result<usize, CompileError> {
        self.size(nd.attr(key)?)
    }

    fn tensor(&self, pattern: &str, layer: Option<usize>) -> Result<WeightRef, CompileError> {
        let resolved = match layer {
            Some(l) => pattern.replace("{layer}", &l.to_string()),
            None if pattern.contains("{layer}") => {
                return Err(CompileError::Description(format!("`{pattern}` uses {{layer}} outside [[layer]]")))
            }
            None => pattern.to_string(),
        };
        let options: Vec<&str> = resolved.split('|').map(str::trim).collect();
        options
            .iter()
            .find(|n| (self.has_tensor)(n))
            .map(|n| WeightRef::Tensor(n.to_string()))
            .ok_or_else(|| CompileError::MissingTensor(options.join(" or ")))
    }

    fn weight(&self, nd: &NodeDesc, layer: Option<usize>) -> Result<WeightRef, CompileError> {
        let p =
            nd.weight.as_deref().ok_or_else(|| CompileError::Description(format!("op `{}` needs `weight`", nd.op)))?;
        self.tensor(p, layer)
    }

    /// The node's bias tensor, if it has one. `bias = "name"`: the model must have it (refused
    /// here, by name, rather than later in a pass); `bias = "name?"`: optional, a model without
    /// the tensor has no bias there (the projection lowers as one without `bias`).
    fn bias(&self, nd: &NodeDesc, layer: Option<usize>) -> Result<Option<WeightRef>, CompileError> {
        let Some(b) = nd.bias.as_deref() else { return Ok(None) };
        let (pattern, optional) = match b.strip_suffix('?') {
            Some(p) => (p, true),
            None => (b, false),
        };
        match self.tensor(pattern, layer) {
            Ok(bias) => Ok(Some(bias)),
            Err(CompileError::MissingTensor(_)) if optional => Ok(None),
            Err(CompileError::MissingTensor(name)) => Err(CompileError::MissingBias(name)),
            Err(e) => Err(e),
        }
    }

    fn node(&mut self, nd: &NodeDesc, layer: Option<usize>) -> Result<(), CompileError> {
        let inputs: Vec<Value> = nd
            .inputs
            .iter()
            .map(|n| {
                self.scope
                    .get(n)
                    .copied()
                    .ok_or_else(|| CompileError::Description(format!("op `{}` reads unbound value `{n}`", nd.op)))
            })
            .collect::<Result<_, _>>()?;
        let want = |k: usize| -> Result<(), CompileError> {
            if inputs.len() == k {
                Ok(())
            } else {
                Err(CompileError::Description(format!("op `{}` takes {k} inputs, got {}", nd.op, inputs.len())))
            }
        };
        let cols = self.size(&nd.cols)?;
        let label = match layer {
            Some(l) => format!("blk.{l}.{}", nd.out),
            None => nd.out.clone(),
        };
        let layer_idx = || {
            layer.ok_or_else(|| CompileError::Description(format!("op `{}` only makes sense inside [[layer]]", nd.op)))
        };
        let op = match nd.op.as_str() {
            "embedding" => {
                want(1)?;
                Op::Embedding { table: self.weight(nd, layer)? }
            }
            "rms_norm" => {
                want(1)?;
                Op::RmsNorm { weight: self.weight(nd, layer)?, eps: self.scalar(nd, "eps")? }
            }
            "linear" | "logits" => {
                want(1)?;
                let k = self.g.cols(inputs[0]);
                let mm = Op::MatMul { weight: self.weight(nd, layer)?, n: cols, k, logits: nd.op == "logits" };
                match self.bias(nd, layer)? {
                    None => mm,
                    Some(bias) => {
                        let m = self.g.add(mm, vec![cols], format!("{label}.matmul"), &inputs);
                        let b = self.g.add(Op::BiasAdd { bias }, vec![cols], label, &[Value::new(m, 0)]);
                        self.bind(nd, b);
                        return Ok(());
                    }
                }
            }
            "rope" => {
                want(1)?;
                Op::Rope {
                    heads: self.usize_attr(nd, "heads")?,
                    head_dim: self.usize_attr(nd, "head_dim")?,
                    theta: self.scalar(nd, "theta")?,
                }
            }
            "kv_write" => {
                want(2)?;
                Op::KvWrite {
                    layer: layer_idx()?,
                    kv_heads: self.usize_attr(nd, "kv_heads")?,
                    head_dim: self.usize_attr(nd, "head_dim")?,
                }
            }
            "attn_scores" | "attn_context" => {
                want(2)?;
                let (layer, heads, kv_heads, head_dim) = (
                    layer_idx()?,
                    self.usize_attr(nd, "heads")?,
                    self.usize_attr(nd, "kv_heads")?,
                    self.usize_attr(nd, "head_dim")?,
                );
                if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
                    return Err(CompileError::Description(format!(
                        "{heads} query heads cannot share {kv_heads} KV heads"
                    )));
                }
                if nd.op == "attn_scores" {
                    Op::AttnScores { layer, heads, kv_heads, head_dim }
                } else {
                    Op::AttnContext { layer, heads, kv_heads, head_dim }
                }
            }
            "scale" => {
                want(1)?;
                Op::Scale { factor: self.scalar(nd, "factor")? }
            }
            "causal_mask" => {
                want(1)?;
                Op::CausalMask
            }
            "softmax" => {
                want(1)?;
                Op::Softmax
            }
            "add" | "mul" => {
                want(2)?;
                if self.g.cols(inputs[0]) != self.g.cols(inputs[1]) {
                    return Err(CompileError::Description(format!(
                        "op `{}` ({label}) adds rows of different widths",
                        nd.op
                    )));
                }
                if nd.op == "add" {
                    Op::Add
                } else {
                    Op::Mul
                }
            }
            "silu" => {
                want(1)?;
                Op::Silu
            }
            "argmax" => {
                want(1)?;
                Op::Argmax { vocab: self.g.cols(inputs[0]) }
            }
            other => return Err(CompileError::Description(format!("unknown op `{other}`"))),
        };
        let n = self.g.add(op, vec![cols], label, &inputs);
        self.bind(nd, n);
        Ok(())
    }

    fn bind(&mut self, nd: &NodeDesc, n: petgraph::stable_graph::NodeIndex) {
        self.scope.insert(nd.out.clone(), Value::new(n, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::description::QWEN2;
    use crate::passes::test_util::tiny_hparams;

    fn biases(g: &OpGraph) -> Vec<String> {
        let adds = g.find(|op| matches!(op, Op::BiasAdd { .. }));
        adds.into_iter()
            .map(|n| match g.op(n) {
                Op::BiasAdd { bias } => bias.plan_name(),
                _ => unreachable!(),
            })
            .collect()
    }

    /// `bias = "name?"` (the shipped description): a missing tensor is no bias; `bias = "name"`:
    /// a missing tensor is refused by name.
    #[test]
    fn optional_and_required_biases() {
        let has = |name: &str| name != "blk.0.attn_k.bias";
        let optional = Description::parse(QWEN2).unwrap();
        let g = lower(&optional, &tiny_hparams(), &has).unwrap();
        assert_eq!(biases(&g), ["blk.0.attn_q.bias", "blk.0.attn_v.bias"]);

        let required = Description::parse(&QWEN2.replace(".bias?\"", ".bias\"")).unwrap();
        assert_eq!(biases(&lower(&required, &tiny_hparams(), &|_| true).unwrap()).len(), 3);
        let err = lower(&required, &tiny_hparams(), &has).unwrap_err();
        assert!(matches!(&err, CompileError::MissingBias(n) if n == "blk.0.attn_k.bias"), "{err}");
    }
}
