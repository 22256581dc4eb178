//! Tiny arithmetic expressions over named dimensions, used by the architecture description for
//! every shape and scalar (`"n_heads * head_dim"`, `"1 / sqrt(head_dim)"`).
//!
//! Grammar: `expr := term (('+'|'-') term)*`, `term := factor (('*'|'/') factor)*`,
//! `factor := number | name | name '(' expr ')' | '(' expr ')' | '-' factor`; the only function
//! is `sqrt`. Evaluated in f64; [`eval_usize`] insists on a non-negative integer result.
use std::collections::HashMap;

use crate::error::CompileError;

pub type Env = HashMap<String, f64>;

pub fn eval(src: &str, env: &Env) -> Result<f64, CompileError> {
    let tokens = tokenize(src)?;
    let mut p = Parser { tokens: &tokens, at: 0, env, src };
    let v = p.expr()?;
    if p.at != tokens.len() {
        return Err(p.err("unexpected trailing input"));
    }
    Ok(v)
}

pub fn eval_usize(src: &str, env: &Env) -> Result<usize, CompileError> {
    let v = eval(src, env)?;
    if v < 0.0 || v.fract() != 0.0 || v > (1u64 << 40) as f64 {
        return Err(CompileError::Description(format!("expression `{src}` = {v} is not a size")));
    }
    Ok(v as usize)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Name(String),
    Sym(char),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, CompileError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == 'e') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            let v = s.parse().map_err(|_| CompileError::Description(format!("bad number `{s}` in `{src}`")))?;
            out.push(Tok::Num(v));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Name(chars[start..i].iter().collect()));
        } else if "+-*/()".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(CompileError::Description(format!("unexpected `{c}` in expression `{src}`")));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [Tok],
    at: usize,
    env: &'a Env,
    src: &'a str,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> CompileError {
        CompileError::Description(format!("{what} in expression `{}`", self.src))
    }
    fn peek_sym(&self, c: char) -> bool {
        self.tokens.get(self.at) == Some(&Tok::Sym(c))
    }
    fn expr(&mut self) -> Result<f64, CompileError> {
        let mut v = self.term()?;
        while self.peek_sym('+') || self.peek_sym('-') {
            let plus = self.peek_sym('+');
            self.at += 1;
            let r = self.term()?;
            v = if plus { v + r } else { v - r };
        }
        Ok(v)
    }
    fn term(&mut self) -> Result<f64, CompileError> {
        let mut v = self.factor()?;
        while self.peek_sym('*') || self.peek_sym('/') {
            let mul = self.peek_sym('*');
            self.at += 1;
            let r = self.factor()?;
            if !mul && r == 0.0 {
                return Err(self.err("division by zero"));
            }
            v = if mul { v * r } else { v / r };
        }
        Ok(v)
    }
    fn factor(&mut self) -> Result<f64, CompileError> {
        match self.tokens.get(self.at).cloned() {
            Some(Tok::Num(v)) => {
                self.at += 1;
                Ok(v)
            }
            Some(Tok::Sym('-')) => {
                self.at += 1;
                Ok(-self.factor()?)
            }
            Some(Tok::Sym('(')) => {
                self.at += 1;
                let v = self.expr()?;
                self.close()?;
                Ok(v)
            }
            Some(Tok::Name(name)) => {
                self.at += 1;
                if self.peek_sym('(') {
                    self.at += 1;
                    let arg = self.expr()?;
                    self.close()?;
                    match name.as_str() {
                        "sqrt" if arg >= 0.0 => Ok(arg.sqrt()),
                        "sqrt" => Err(self.err("sqrt of a negative number")),
                        _ => Err(self.err(&format!("unknown function `{name}`"))),
                    }
                } else {
                    self.env.get(&name).copied().ok_or_else(|| self.err(&format!("unknown name `{name}`")))
                }
            }
            _ => Err(self.err("expected a number, a name or `(`")),
        }
    }
    fn close(&mut self) -> Result<(), CompileError> {
        if self.peek_sym(')') {
            self.at += 1;
            Ok(())
        } else {
            Err(self.err("missing `)`"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        [("n_heads", 14.0), ("head_dim", 64.0)].into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn evaluates_sizes_and_scalars() {
        assert_eq!(eval_usize("n_heads * head_dim", &env()).unwrap(), 896);
        assert_eq!(eval_usize("(n_heads + 2) * 2 - 1", &env()).unwrap(), 31);
        assert_eq!(eval("1 / sqrt(head_dim)", &env()).unwrap(), 0.125);
        assert_eq!(eval("-2 * 3", &env()).unwrap(), -6.0);
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in ["n_heads *", "unknown", "1 / 0", "sqrt(-1)", "(1", "head_dim / 3 $", "foo(1)"] {
            assert!(eval(bad, &env()).is_err(), "{bad} should fail");
        }
        assert!(eval_usize("head_dim / 3", &env()).is_err(), "fractional size");
    }
}
