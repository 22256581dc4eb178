//! The architecture description (`graphs/qwen2.toml`): parsed with serde, checked, and expanded
//! into concrete node specs by the lowering in [`crate::graph::lower`].
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::CompileError;
use crate::expr::{self, Env};

/// The Qwen2 description shipped with the compiler (embedded so the binary is self-contained).
pub const QWEN2: &str = include_str!("../../graphs/qwen2.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    pub name: String,
    /// Derived dimensions: name -> expression over the hyperparameters and earlier dims.
    #[serde(default)]
    pub dims: BTreeMap<String, String>,
    #[serde(default)]
    pub prologue: Vec<NodeDesc>,
    /// Repeated `n_layers` times with `{layer}` substituted in weight names.
    #[serde(default)]
    pub layer: Vec<NodeDesc>,
    #[serde(default)]
    pub epilogue: Vec<NodeDesc>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeDesc {
    pub op: String,
    #[serde(rename = "in", default)]
    pub inputs: Vec<String>,
    pub out: String,
    pub cols: String,
    #[serde(default)]
    pub weight: Option<String>,
    #[serde(default)]
    pub bias: Option<String>,
    /// Op attributes, each an expression.
    #[serde(flatten)]
    pub attrs: BTreeMap<String, String>,
}

impl Description {
    pub fn parse(src: &str) -> Result<Description, CompileError> {
        let d: Description = toml::from_str(src).map_err(|e| CompileError::Description(e.to_string()))?;
        if d.layer.is_empty() {
            return Err(CompileError::Description("the description has no [[layer]] nodes".into()));
        }
        Ok(d)
    }

    /// Adds the derived `[dims]` to `env`, resolving dims that refer to other dims in any order.
    pub fn resolve_dims(&self, env: &mut Env) -> Result<(), CompileError> {
        let mut pending: Vec<(&String, &String)> = self.dims.iter().collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut err = None;
            pending.retain(|(name, src)| match expr::eval(src, env) {
                Ok(v) => {
                    env.insert((*name).clone(), v);
                    false
                }
                Err(e) => {
                    err = Some(e);
                    true
                }
            });
            if pending.len() == before {
                return Err(err.unwrap_or_else(|| CompileError::Description("unresolvable dims".into())));
            }
        }
        Ok(())
    }
}

impl NodeDesc {
    pub fn attr(&self, key: &str) -> Result<&str, CompileError> {
        self.attrs.get(key).map(String::as_str).ok_or_else(|| {
            CompileError::Description(format!("op `{}` (out `{}`) needs attribute `{key}`", self.op, self.out))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_description_parses_and_resolves() {
        let d = Description::parse(QWEN2).unwrap();
        assert_eq!(d.name, "qwen2");
        let mut env: Env = [("n_heads", 14.0), ("n_kv_heads", 2.0), ("head_dim", 64.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        d.resolve_dims(&mut env).unwrap();
        assert_eq!(env["q_dim"], 896.0);
        assert_eq!(env["kv_dim"], 128.0);
    }

    #[test]
    fn rejects_unknown_top_level_keys_and_empty_layers() {
        assert!(Description::parse("name = \"x\"\nbogus = 1\n").is_err());
        assert!(Description::parse("name = \"x\"\n").is_err());
    }
}
