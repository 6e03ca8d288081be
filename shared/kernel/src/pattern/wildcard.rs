//! `{"wildcard": "dir/*.png"}`: `*` matches any run of characters (including
//! none). `\*` is a literal asterisk and `\\` a literal backslash; any other
//! backslash escape, and two unescaped `*` in a row, are invalid.

use super::error::PatternError;

/// EventBridge rejects wildcard values with more wildcards than this as "too
/// complex". Its real limit comes from a complexity score of the matching
/// automaton; five, the most its accepted test patterns use, is the bound
/// used here.
pub const MAX_WILDCARDS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    Star,
}

/// A parsed wildcard expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wildcard {
    tokens: Vec<Token>,
}

impl Wildcard {
    pub fn parse(text: &str, path: &str, operator: &str) -> Result<Self, PatternError> {
        let err = |reason: String| PatternError::operand(path, operator, reason);
        let mut tokens = Vec::with_capacity(text.len());
        let mut stars = 0;
        let mut chars = text.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                '*' => {
                    if matches!(chars.peek(), Some((_, '*'))) {
                        return Err(err(format!(
                            "\"{text}\": consecutive wildcard characters at position {pos}"
                        )));
                    }
                    stars += 1;
                    tokens.push(Token::Star);
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('*' | '\\'))) => tokens.push(Token::Byte(escaped as u8)),
                    _ => {
                        return Err(err(format!(
                            "\"{text}\": invalid escape at position {pos}: a backslash may only \
                             escape '*' or '\\'"
                        )))
                    }
                },
                other => {
                    let mut buf = [0u8; 4];
                    tokens.extend(other.encode_utf8(&mut buf).bytes().map(Token::Byte));
                }
            }
        }
        if stars > MAX_WILDCARDS {
            return Err(err(format!(
                "\"{text}\": rule is too complex: use at most {MAX_WILDCARDS} wildcard characters \
                 and fewer repeating character sequences after a wildcard"
            )));
        }
        Ok(Wildcard { tokens })
    }

    /// Whether the whole of `text` matches. Runs in O(len(text) × len(pattern))
    /// at worst (classic star backtracking, no recursion). Matching bytes is
    /// exact for UTF-8: a literal always starts at a character boundary.
    pub fn matches(&self, text: &str) -> bool {
        let text = text.as_bytes();
        let tokens = &self.tokens;
        let (mut p, mut t) = (0usize, 0usize);
        // Where to resume after the most recent star: (token after it, text pos).
        let mut resume: Option<(usize, usize)> = None;
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::Byte(b)) if *b == text[t] => {
                    p += 1;
                    t += 1;
                }
                Some(Token::Star) => {
                    p += 1;
                    resume = Some((p, t));
                }
                _ => match resume {
                    Some((rp, rt)) => {
                        p = rp;
                        t = rt + 1;
                        resume = Some((rp, rt + 1));
                    }
                    None => return false,
                },
            }
        }
        tokens[p.min(tokens.len())..].iter().all(|tok| *tok == Token::Star)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Wildcard {
        match Wildcard::parse(text, "$.f[0].wildcard", "wildcard") {
            Ok(w) => w,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn stars_match_any_run_including_none() {
        assert!(w("*").matches(""));
        assert!(w("*").matches("anything"));
        assert!(w("a*").matches("a"));
        assert!(w("*.png").matches("image.png"));
        assert!(!w("*.png").matches("image.png.bak"));
        assert!(w("/Users/*/doc.txt").matches("/Users/me/dir/dir/doc.txt"));
        assert!(!w("/Users/*/doc.txt").matches("/Users/me/dir/notdoc.txt"));
        assert!(w("a*b*b").matches("abb"));
        assert!(w("a*b*b").matches("axxbyyb"));
        assert!(!w("a*b*b").matches("axxb"));
        assert!(w("").matches(""));
        assert!(!w("").matches("x"));
        assert!(w("é*ü").matches("éaaü"));
        assert!(w("*/dir/dir/doc.txt").matches("/x/dir/dir/dir/doc.txt"));
    }

    #[test]
    fn escapes() {
        // JSON "a\\*b" is the wildcard text a\*b: a literal star.
        assert!(w(r"a\*b").matches("a*b"));
        assert!(!w(r"a\*b").matches("axb"));
        assert!(w(r"a\\b").matches(r"a\b"));
        assert!(w(r"a\\*").matches(r"a\anything"));
        assert!(w(r"\**").matches("*tail"));
        assert!(!w(r"\**").matches("tail"));
    }

    #[test]
    fn invalid_expressions() {
        for (bad, why) in [
            ("a**b", "consecutive"),
            (r"a\b", "invalid escape"),
            ("a\\", "invalid escape"),
            ("*:*:*:*:*:event-bus/*", "too complex"),
        ] {
            match Wildcard::parse(bad, "$.f[0].wildcard", "wildcard") {
                Ok(_) => panic!("{bad} should be rejected"),
                Err(e) => assert!(e.to_string().contains(why), "{bad}: {e}"),
            }
        }
        // Five wildcards are fine, an escaped star is not a wildcard.
        assert!(w("*a*b*c*d*").matches("xaybzcwdv"));
        assert!(w(r"*a*b*c*d*\*").matches("abcd*"));
    }
}
