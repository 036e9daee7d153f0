//! The regex dialect of metaflow patterns (and `allowed_targets`): Rust `regex` syntax over the
//! ASCII key alphabet. `\d` means 0-9; Unicode classes are off because keys are ASCII; PCRE-only
//! features (look-around, backreferences) are rejected with the parser's own explanation.

/// What validation learns about a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatternSyntax {
    /// Explicit capture groups; `captures` in an action has this many entries.
    pub capture_groups: usize,
}

/// An invalid pattern; `offset` counts characters into the pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pub offset: usize,
    pub message: String,
}

/// Parses a pattern the way the matcher will compile it.
pub fn check_syntax(pattern: &str) -> Result<PatternSyntax, PatternError> {
    parse(pattern).map(|hir| PatternSyntax {
        capture_groups: hir.properties().explicit_captures_len(),
    })
}

/// The pattern as a regex syntax tree. The matcher composes trees rather than pattern text, so
/// no pattern (not even one ending in an `(?x)` comment) can change the meaning of what wraps it.
pub fn parse(pattern: &str) -> Result<regex_syntax::hir::Hir, PatternError> {
    let mut parser = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .nest_limit(64)
        .build();
    match parser.parse(pattern) {
        Ok(hir) => Ok(hir),
        Err(e) => {
            let (offset, message) = match &e {
                regex_syntax::Error::Parse(p) => (p.span().start.offset, p.kind().to_string()),
                regex_syntax::Error::Translate(t) => (t.span().start.offset, t.kind().to_string()),
                other => (0, other.to_string()),
            };
            let offset = pattern
                .get(..offset)
                .map_or(0, |prefix| prefix.chars().count());
            Err(PatternError { offset, message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_groups_and_locates_errors() {
        assert_eq!(check_syntax(r"2(\d+)").unwrap().capture_groups, 1);
        assert_eq!(check_syntax(r"^2([0-9]+)$").unwrap().capture_groups, 1);
        assert_eq!(check_syntax(r"0").unwrap().capture_groups, 0);
        let e = check_syntax(r"2(\d+").unwrap_err();
        assert_eq!(e.offset, 1);
        assert!(e.message.contains("unclosed group"), "{e:?}");
        let e = check_syntax(r"2(?=1)").unwrap_err();
        assert!(e.message.contains("look-around"), "{e:?}");
        let e = check_syntax(r"(1)\1").unwrap_err();
        assert!(e.message.contains("backreferences"), "{e:?}");
        assert_eq!(
            check_syntax("(?x) 2(\\d{4}) # transfer")
                .unwrap()
                .capture_groups,
            1
        );
    }
}
