//! A dependency's `target`: a plain target name (`x86_64-unknown-linux-gnu`) or a
//! `cfg(...)` expression, and the one spelling cargo's publish gives it.
//!
//! cargo parses a `[target.'cfg(...)']` key and prints it back in its publish JSON, so the
//! lines crates.io built from that JSON (until October 2023) hold `cfg(target_os = "hermit")`
//! where the manifest said `cfg(target_os="hermit")`. A crate file only carries the manifest's
//! spelling; [`normalize`] gives cargo's, so that `palletizer add` of a crate of that time
//! writes the line crates.io has (see [`super::history`]). The grammar is cargo's: identifiers
//! (`r#` raw ones too), `key = "value"` with no escapes in the string, `all(..)`, `any(..)`
//! (a trailing comma allowed) and `not(..)`, tokens separated by spaces only.

use std::fmt::Write;

/// How deep `all`/`any`/`not` may nest: far beyond real expressions, and a bound on the
/// recursion a hostile target string could ask for.
const MAX_DEPTH: usize = 32;

/// Why a target could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("{0}")]
    Cfg(&'static str),
    #[error("unexpected character `{0}` in target name")]
    BadName(char),
    #[error("cfg expressions nest more than {MAX_DEPTH} levels deep")]
    TooDeep,
}

/// The target as cargo prints it after parsing: a `cfg(...)` expression re-spelled
/// (`cfg(all(unix, target_os = "linux"))`), a plain target name unchanged.
pub fn normalize(target: &str) -> Result<String, PlatformError> {
    let Some(inner) = target
        .strip_prefix("cfg(")
        .and_then(|t| t.strip_suffix(')'))
    else {
        if let Some(c) = target
            .chars()
            .find(|&c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(PlatformError::BadName(c));
        }
        return Ok(target.to_owned());
    };
    let mut p = Parser {
        tokens: Tokens {
            rest: inner,
            peeked: None,
        },
        out: String::with_capacity(target.len() + 8),
    };
    p.out.push_str("cfg(");
    p.expr(0)?;
    if p.tokens.next()?.is_some() {
        return Err(PlatformError::Cfg(
            "unexpected text after the cfg expression",
        ));
    }
    p.out.push(')');
    Ok(p.out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    Comma,
    Equals,
    /// An identifier as written, `r#` included.
    Ident(&'a str),
    /// A string's contents, without the quotes.
    Str(&'a str),
}

struct Tokens<'a> {
    rest: &'a str,
    peeked: Option<Token<'a>>,
}

impl<'a> Tokens<'a> {
    fn peek(&mut self) -> Result<Option<Token<'a>>, PlatformError> {
        if self.peeked.is_none() {
            self.peeked = self.lex()?;
        }
        Ok(self.peeked)
    }

    fn next(&mut self) -> Result<Option<Token<'a>>, PlatformError> {
        match self.peeked.take() {
            Some(t) => Ok(Some(t)),
            None => self.lex(),
        }
    }

    fn lex(&mut self) -> Result<Option<Token<'a>>, PlatformError> {
        // cargo skips spaces only; a tab or newline is an unexpected character there too.
        let s = self.rest.trim_start_matches(' ');
        let Some(c) = s.chars().next() else {
            self.rest = s;
            return Ok(None);
        };
        let (token, len) = match c {
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            ',' => (Token::Comma, 1),
            '=' => (Token::Equals, 1),
            '"' => {
                let end = s[1..]
                    .find('"')
                    .ok_or(PlatformError::Cfg("unterminated string in cfg expression"))?;
                (Token::Str(&s[1..1 + end]), end + 2)
            }
            c if is_ident_start(c) => {
                let start = match s.strip_prefix("r#") {
                    Some(raw) if !raw.starts_with(is_ident_start) => {
                        return Err(PlatformError::Cfg("`r#` not followed by an identifier"));
                    }
                    Some(_) => 2,
                    None => 0,
                };
                let len = s[start..]
                    .find(|c: char| !(is_ident_start(c) || c.is_ascii_digit()))
                    .map_or(s.len(), |n| start + n);
                (Token::Ident(&s[..len]), len)
            }
            _ => return Err(PlatformError::Cfg("unexpected character in cfg expression")),
        };
        self.rest = &s[len..];
        Ok(Some(token))
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

/// Parses and prints in one pass: the printed form is the parse tree's only use.
struct Parser<'a> {
    tokens: Tokens<'a>,
    out: String,
}

impl Parser<'_> {
    fn eat(&mut self, want: Token<'_>, missing: &'static str) -> Result<(), PlatformError> {
        match self.tokens.next()? {
            Some(t) if t == want => Ok(()),
            _ => Err(PlatformError::Cfg(missing)),
        }
    }

    fn expr(&mut self, depth: usize) -> Result<(), PlatformError> {
        if depth > MAX_DEPTH {
            return Err(PlatformError::TooDeep);
        }
        match self.tokens.peek()? {
            Some(Token::Ident(op @ ("all" | "any"))) => {
                self.tokens.next()?;
                self.eat(Token::Open, "expected `(` after `all` or `any`")?;
                let _ = write!(self.out, "{op}(");
                let mut first = true;
                loop {
                    if self.tokens.peek()? == Some(Token::Close) {
                        self.tokens.next()?;
                        break;
                    }
                    if !first {
                        self.out.push_str(", ");
                    }
                    first = false;
                    self.expr(depth + 1)?;
                    match self.tokens.next()? {
                        Some(Token::Comma) => {}
                        Some(Token::Close) => break,
                        _ => return Err(PlatformError::Cfg("expected `,` or `)` in cfg list")),
                    }
                }
                self.out.push(')');
                Ok(())
            }
            Some(Token::Ident("not")) => {
                self.tokens.next()?;
                self.eat(Token::Open, "expected `(` after `not`")?;
                self.out.push_str("not(");
                self.expr(depth + 1)?;
                self.eat(Token::Close, "expected `)` after the operand of `not`")?;
                self.out.push(')');
                Ok(())
            }
            _ => self.value(),
        }
    }

    fn value(&mut self) -> Result<(), PlatformError> {
        let Some(Token::Ident(name)) = self.tokens.next()? else {
            return Err(PlatformError::Cfg(
                "expected an identifier in cfg expression",
            ));
        };
        self.out.push_str(name);
        if self.tokens.peek()? == Some(Token::Equals) {
            self.tokens.next()?;
            let Some(Token::Str(value)) = self.tokens.next()? else {
                return Err(PlatformError::Cfg("expected a string after `=`"));
            };
            let _ = write!(self.out, " = \"{value}\"");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_spelling_is_cargos() {
        for (given, want) in [
            (r#"cfg(target_os="hermit")"#, r#"cfg(target_os = "hermit")"#),
            (
                r#"cfg(all(unix,target_os  =  "linux"))"#,
                r#"cfg(all(unix, target_os = "linux"))"#,
            ),
            ("cfg( not( windows ) )", "cfg(not(windows))"),
            (
                r#"cfg(any(target_arch="x86", target_arch="x86_64",))"#,
                r#"cfg(any(target_arch = "x86", target_arch = "x86_64"))"#,
            ),
            ("cfg(all())", "cfg(all())"),
            ("cfg(r#true)", "cfg(r#true)"),
            (r#"cfg(feature = "a b,()")"#, r#"cfg(feature = "a b,()")"#),
            ("x86_64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"),
            ("thumbv7em-none-eabihf", "thumbv7em-none-eabihf"),
        ] {
            assert_eq!(normalize(given).as_deref(), Ok(want), "{given}");
            assert_eq!(
                normalize(want).as_deref(),
                Ok(want),
                "{want} is a fixed point"
            );
        }
    }

    #[test]
    fn unreadable_targets_are_refused() {
        for bad in [
            "cfg()",
            "cfg(unix",
            "cfg(unix windows)",
            r#"cfg(target_os = "linux)"#,
            "cfg(target_os = linux)",
            "cfg(all(unix)",
            "cfg(not(unix, windows))",
            "cfg(r#)",
            "cfg(1abc)",
            "cfg(\tunix)",
            "linux(unix)",
            "x86 64",
        ] {
            assert!(normalize(bad).is_err(), "{bad} was accepted");
        }
        let deep = format!("cfg({}unix{})", "not(".repeat(40), ")".repeat(40));
        assert_eq!(normalize(&deep), Err(PlatformError::TooDeep));
        let fine = format!("cfg({}unix{})", "not(".repeat(20), ")".repeat(20));
        assert_eq!(normalize(&fine).as_deref(), Ok(fine.as_str()));
    }
}
