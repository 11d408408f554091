//! How deep a config's flow collections (`[…]`, `{…}`) nest, found before
//! the YAML parser sees the text. libyaml's scanner does work proportional
//! to the flow depth for every token, so a 0.2 MB file nested 100,000 deep
//! took it 17 s; the suite file's schema nests eight levels at most, so
//! anything past `MAX_FLOW_DEPTH` is refused in one linear pass instead.
//!
//! This is a scanner of YAML's flow indicators, quotes, comments, node
//! properties and block scalars, no more. Where it is unsure it counts a
//! bracket rather than skip it: a bracket it wrongly counts can only refuse
//! a file nested absurdly in strings, one it wrongly skipped would let the
//! slow case through.

/// Deeper than any suite file needs (its schema nests 8 levels), low
/// enough that the parser's per-token cost stays small.
pub const MAX_FLOW_DEPTH: usize = 32;

#[derive(Clone, Copy, PartialEq, Default)]
enum Quote {
    #[default]
    None,
    Single,
    Double,
}

#[derive(Default)]
struct Scan {
    depth: usize,
    quote: Quote,
    /// The next character would start a token (a node or an indicator).
    token_start: bool,
    /// Inside an anchor, tag or alias, which a space ends.
    property: bool,
    /// Inside a block scalar whose lines are indented past this column.
    block_scalar: Option<usize>,
}

/// The first line (1-based) where flow collections nest deeper than
/// `MAX_FLOW_DEPTH`, if any.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut s = Scan::default();
    for (n, line) in text.lines().enumerate() {
        if let Some(column) = s.block_scalar {
            if line.trim().is_empty() || indent(line) > column {
                continue;
            }
            s.block_scalar = None;
        }
        if s.depth == 0 {
            // Block context: quotes and plain scalars are taken to end with
            // their line. Wrong only for multi-line ones, where it counts
            // more brackets, never fewer.
            s.quote = Quote::None;
            s.token_start = true;
            s.property = false;
        }
        if s.line(line) {
            return Some(n + 1);
        }
    }
    None
}

impl Scan {
    /// Scans one line; true when it nests too deep.
    fn line(&mut self, line: &str) -> bool {
        let b = line.as_bytes();
        let mut i = 0;
        if self.depth == 0 && (b.starts_with(b"---") || b.starts_with(b"...")) && blank(b.get(3)) {
            i = 3;
        }
        let mut after_space = true;
        while i < b.len() {
            let c = b[i];
            let next = b.get(i + 1);
            i += 1;
            match self.quote {
                Quote::Double => {
                    if c == b'\\' {
                        i += 1;
                    } else if c == b'"' {
                        self.end_quote();
                    }
                    continue;
                }
                Quote::Single => {
                    if c == b'\'' && next == Some(&b'\'') {
                        i += 1;
                    } else if c == b'\'' {
                        self.end_quote();
                    }
                    continue;
                }
                Quote::None => {}
            }
            if c == b' ' || c == b'\t' {
                after_space = true;
                if self.property {
                    self.property = false;
                    self.token_start = true;
                }
                continue;
            }
            if c == b'#' && after_space {
                break;
            }
            after_space = false;
            if self.property && !(self.depth > 0 && b",[]{}".contains(&c)) {
                continue;
            }
            self.property = false;
            match self.token(c, next, line) {
                Step::Go => {}
                Step::EndOfLine => break,
                Step::TooDeep => return true,
            }
        }
        false
    }

    fn end_quote(&mut self) {
        self.quote = Quote::None;
        self.token_start = false;
    }

    /// One unquoted character that is not a space or a comment.
    fn token(&mut self, c: u8, next: Option<&u8>, line: &str) -> Step {
        let flow = self.depth > 0;
        match c {
            b'[' | b'{' if flow || self.token_start => {
                self.depth += 1;
                self.token_start = true;
                if self.depth > MAX_FLOW_DEPTH {
                    return Step::TooDeep;
                }
            }
            b']' | b'}' if flow => {
                self.depth -= 1;
                self.token_start = false;
            }
            b',' if flow => self.token_start = true,
            b'"' if self.token_start => self.quote = Quote::Double,
            b'\'' if self.token_start => self.quote = Quote::Single,
            b'-' | b'?' if self.token_start && blank(next) => {}
            b':' if blank(next) || (flow && next.is_some_and(|n| b",[]{}".contains(n))) => {
                self.token_start = true;
            }
            b'&' | b'!' | b'*' if self.token_start => {
                self.property = true;
                self.token_start = false;
            }
            b'|' | b'>' if self.token_start && !flow => {
                self.block_scalar = Some(key_column(line));
                return Step::EndOfLine;
            }
            _ => self.token_start = false,
        }
        Step::Go
    }
}

enum Step {
    Go,
    EndOfLine,
    TooDeep,
}

fn blank(c: Option<&u8>) -> bool {
    c.is_none_or(|c| *c == b' ' || *c == b'\t')
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The column of a line's first node, past `- ` and `? ` indicators: a
/// block scalar's lines are indented past it.
fn key_column(line: &str) -> usize {
    let mut rest = line.trim_start();
    while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("? ")) {
        rest = r.trim_start();
    }
    line.len() - rest.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn flow_depth_is_bounded() {
        assert_eq!(too_deep(&nested(MAX_FLOW_DEPTH)), None);
        assert_eq!(too_deep(&nested(MAX_FLOW_DEPTH + 1)), Some(1));
        let spread = format!("a: [\n{}\n]\n", "{x: [\n".repeat(20));
        assert_eq!(too_deep(&spread), Some(2 + 15), "counted across lines");
        let with_properties = format!("--- &a !!seq {}\n", "[".repeat(40));
        assert_eq!(too_deep(&with_properties), Some(1));
        let after_block_scalar = format!("- k: |\n    text\n  other: {}", nested(40));
        assert_eq!(too_deep(&after_block_scalar), Some(3));
    }

    #[test]
    fn brackets_in_strings_comments_and_plain_text_do_not_count() {
        let deep = "[".repeat(100);
        for text in [
            format!("a: \"{deep}\"\n"),
            format!("a: '{deep}'\n"),
            format!("a: x {deep}\n"),
            format!("a: b # {deep}\n"),
            format!("a: |\n  {deep}\n  {deep}\nb: 1\n"),
            format!("a: [\"{deep}\", '{deep}''s']\n"),
        ] {
            assert_eq!(too_deep(&text), None, "{text}");
        }
    }

    #[test]
    fn the_shipped_configs_pass() {
        for text in [
            include_str!("../../tests/fixtures/seed_orchestrator_config.yaml"),
            include_str!("../../examples/cashcow/orchestrator_config.yaml"),
            include_str!("../../examples/faults/orchestrator_config.yaml"),
        ] {
            assert_eq!(too_deep(text), None);
        }
    }
}
