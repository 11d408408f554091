//! Finds where things are written in the config text, so a problem found
//! after parsing (serde_yaml keeps no spans for values) still names its line.
//! Lines are 1-based.
//!
//! The text is indexed in one pass, the first time a problem asks for a
//! line: a valid config costs nothing here, and a config with thousands of
//! problems costs one pass rather than one search of the text per problem.
//! A task's own words are indexed once, when a problem of that task first
//! asks.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::ops::Range;

pub struct Lines<'a> {
    text: &'a str,
    index: OnceCell<Index<'a>>,
    /// A task's block (by its first line) -> its words.
    words: RefCell<HashMap<usize, Words<'a>>>,
}

#[derive(Default)]
struct Index<'a> {
    lines: Vec<&'a str>,
    /// Id -> the lines defining it as a task (`- id: "A1"`), in file order.
    tasks: HashMap<&'a str, Vec<usize>>,
    /// Id -> the lines listing it in `subtasks: [...]`.
    subtask_lists: HashMap<&'a str, Vec<usize>>,
    /// Id -> the lines of its first definition's block.
    blocks: HashMap<&'a str, Range<usize>>,
    /// A key path (`["resource_allocation", "unit", "max_parallel"]`,
    /// joined by newlines, which no key holds) -> the first line it is
    /// written on.
    keys: HashMap<String, usize>,
}

/// The words of one task's block: keys (before a `:`) and values apart.
#[derive(Default)]
struct Words<'a> {
    keys: HashMap<&'a str, usize>,
    values: HashMap<&'a str, usize>,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Self {
        Lines {
            text,
            index: OnceCell::new(),
            words: RefCell::new(HashMap::new()),
        }
    }

    fn index(&self) -> &Index<'a> {
        self.index.get_or_init(|| Index::build(self.text))
    }

    /// The line of task `id`'s first definition.
    pub fn task(&self, id: &str) -> Option<usize> {
        self.index().tasks.get(id).and_then(|l| l.first().copied())
    }

    /// Lines where `id` is defined as a task or listed as a subtask, in file
    /// order: where a duplicate shows.
    pub fn definitions(&self, id: &str) -> Vec<usize> {
        let index = self.index();
        let mut lines: Vec<usize> = [&index.tasks, &index.subtask_lists]
            .iter()
            .filter_map(|m| m.get(id))
            .flatten()
            .copied()
            .collect();
        lines.sort_unstable();
        lines
    }

    /// First line of task `id`'s block holding the value `word`.
    pub fn in_task(&self, id: &str, word: &str) -> Option<usize> {
        self.with_words(id, |w| w.values.get(word).copied())
    }

    /// Where a problem about task `id`'s `key` is best shown: the key's line,
    /// else the task's.
    pub fn task_key(&self, id: &str, key: &str) -> Option<usize> {
        self.with_words(id, |w| w.keys.get(key).copied())
            .or_else(|| self.task(id))
    }

    /// Line of the key at `path` (e.g. resource_allocation → unit_tests →
    /// max_parallel).
    pub fn key(&self, path: &[&str]) -> Option<usize> {
        self.index().keys.get(&path.join("\n")).copied()
    }

    fn with_words<T>(&self, id: &str, f: impl FnOnce(&Words<'a>) -> Option<T>) -> Option<T> {
        let index = self.index();
        let block = index.blocks.get(id)?.clone();
        let mut cache = self.words.borrow_mut();
        let words = cache
            .entry(block.start)
            .or_insert_with(|| Words::of(&index.lines, block));
        f(words)
    }
}

impl<'a> Index<'a> {
    fn build(text: &'a str) -> Index<'a> {
        let mut index = Index {
            lines: text.lines().collect(),
            ..Index::default()
        };
        // The block being read: its id, first line and item indent.
        let mut open: Option<(&'a str, usize, usize)> = None;
        let mut last_content = 0;
        let mut path: Vec<(usize, &'a str)> = Vec::new();
        for n in 1..=index.lines.len() {
            let line = index.lines[n - 1];
            let content = strip_comment(line);
            if content.trim().is_empty() {
                continue;
            }
            let ind = indent(line);
            let defined = defined_id(line);
            if let Some((id, start, item_indent)) = open {
                let next_item = ind <= item_indent && line.trim_start().starts_with('-');
                if defined.is_some() || next_item || ind < item_indent {
                    index.close(id, start, last_content);
                    open = None;
                }
            }
            if let Some(id) = defined {
                index.tasks.entry(id).or_default().push(n);
                if !index.blocks.contains_key(id) {
                    open = Some((id, n, ind));
                }
            }
            last_content = n;
            index.note_keys(&mut path, content, n);
        }
        if let Some((id, start, _)) = open {
            index.close(id, start, last_content);
        }
        index
    }

    fn close(&mut self, id: &'a str, start: usize, end: usize) {
        self.blocks.entry(id).or_insert(start..end + 1);
    }

    /// Records the keys written on line `n` under the path of the keys
    /// above it, and the ids a `subtasks:` list names.
    fn note_keys(&mut self, path: &mut Vec<(usize, &'a str)>, content: &'a str, n: usize) {
        let column = key_column(content);
        while path.last().is_some_and(|(c, _)| *c >= column) {
            path.pop();
        }
        let words = words(content);
        let mut keys = words.iter().filter(|w| w.key).map(|w| w.text);
        let Some(first) = keys.next() else {
            return;
        };
        if first == "subtasks" {
            for w in words.iter().skip(1).filter(|w| !w.key) {
                self.subtask_lists.entry(w.text).or_default().push(n);
            }
        }
        path.push((column, first));
        let here: Vec<&str> = path.iter().map(|(_, k)| *k).collect();
        let here = here.join("\n");
        // Keys of a flow mapping on the same line (`unit: {memory_mb: 1}`)
        // count as one level below the first.
        for k in keys {
            self.keys.entry(format!("{here}\n{k}")).or_insert(n);
        }
        self.keys.entry(here).or_insert(n);
    }
}

impl<'a> Words<'a> {
    fn of(lines: &[&'a str], block: Range<usize>) -> Words<'a> {
        let mut w = Words::default();
        for n in block {
            let Some(line) = lines.get(n - 1) else {
                break;
            };
            for word in words(strip_comment(line)) {
                let map = if word.key { &mut w.keys } else { &mut w.values };
                map.entry(word.text).or_insert(n);
            }
        }
        w
    }
}

/// A word of a line: a quoted or plain scalar, and whether a `:` follows it
/// (it is a key).
struct Word<'a> {
    text: &'a str,
    key: bool,
}

/// The scalars of a line, quoted or plain, in order; indicators (`-`, `[`,
/// `,` ...) separate them.
fn words(line: &str) -> Vec<Word<'_>> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() || b"[]{},".contains(&c) || is_indicator(b, i) {
            i += 1;
            continue;
        }
        let (text, end) = if c == b'"' || c == b'\'' {
            let close = line[i + 1..].find(c as char).map_or(b.len(), |e| i + 1 + e);
            (&line[i + 1..close], (close + 1).min(b.len()))
        } else {
            let mut e = i;
            while e < b.len() && !b"[]{},".contains(&b[e]) && !is_value_colon(b, e) {
                e += 1;
            }
            (line[i..e].trim_end(), e)
        };
        let after = line[end..].trim_start();
        out.push(Word {
            text,
            key: after.starts_with(':') && is_value_colon(after.as_bytes(), 0),
        });
        i = end;
    }
    out
}

/// `-`, `?` or `:` followed by a space or the end: an indicator, not text.
fn is_indicator(b: &[u8], i: usize) -> bool {
    matches!(b[i], b'-' | b'?' | b':') && b.get(i + 1).is_none_or(|c| c.is_ascii_whitespace())
}

/// A `:` that ends a key: followed by a space, the end, or a flow indicator.
fn is_value_colon(b: &[u8], i: usize) -> bool {
    b[i] == b':'
        && b.get(i + 1)
            .is_none_or(|c| c.is_ascii_whitespace() || b",[]{}".contains(c))
}

/// The id a line defines as a task: `id: A1`, `- id: "A1"`, or
/// `- {id: A1, ...}`.
fn defined_id(line: &str) -> Option<&str> {
    let l = line.trim_start().trim_start_matches('-').trim_start();
    let (flow, l) = match l.strip_prefix('{') {
        Some(r) => (true, r.trim_start()),
        None => (false, l),
    };
    let rest = strip_comment(l.strip_prefix("id:")?);
    let value = if flow {
        rest.split([',', '}']).next().unwrap_or_default()
    } else {
        rest
    };
    Some(unquote(value))
}

fn strip_comment(s: &str) -> &str {
    match s.find(" #") {
        Some(i) => &s[..i],
        None if s.trim_start().starts_with('#') => "",
        None => s,
    }
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('"').trim_matches('\'')
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The column of a line's first key, past `- ` indicators.
fn key_column(line: &str) -> usize {
    let mut rest = line.trim_start();
    while let Some(r) = rest.strip_prefix("- ") {
        rest = r.trim_start();
    }
    line.len() - rest.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "tasks:\n  - id: \"A1\"\n    template: t\n    dependencies: [\"X\", X2]\n  - id: A2\n    template: u\n  - {id: A3, template: v, dependencies: [X]}\n";

    #[test]
    fn finds_task_definitions_quoted_or_not() {
        let l = Lines::new(TEXT);
        assert_eq!(l.task("A1"), Some(2));
        assert_eq!(l.task("A2"), Some(5));
        assert_eq!(l.task("A3"), Some(7), "flow style");
        assert_eq!(l.task("A"), None);
    }

    #[test]
    fn a_task_block_stops_at_the_next_task() {
        let l = Lines::new(TEXT);
        assert_eq!(l.in_task("A1", "X"), Some(4));
        assert_eq!(l.in_task("A1", "X2"), Some(4));
        assert_eq!(l.in_task("A2", "X"), None);
        assert_eq!(l.task_key("A2", "template"), Some(6));
        assert_eq!(l.task_key("A2", "resources"), Some(5), "else the task");
        assert_eq!(l.in_task("A3", "X"), Some(7));
    }

    #[test]
    fn key_paths_follow_indentation_and_flow_mappings() {
        let t = "a:\n  x: 1\nb:\n  # x: 0\n  x: 2\n  c: {y: 3, z: 4}\n";
        let l = Lines::new(t);
        assert_eq!(l.key(&["b", "x"]), Some(5));
        assert_eq!(l.key(&["a", "x"]), Some(2));
        assert_eq!(l.key(&["b", "c", "z"]), Some(6));
        assert_eq!(l.key(&["a", "c"]), None);
    }

    #[test]
    fn subtask_lists_count_as_definitions() {
        let t = "  - id: A\n    subtasks: [\"B\", 'C']\n  - id: B\n";
        let l = Lines::new(t);
        assert_eq!(l.definitions("B"), vec![2, 3]);
        assert_eq!(l.definitions("C"), vec![2]);
    }
}
