//! Finds where things are written in the config text, so a problem found
//! after parsing (serde_yaml keeps no spans for values) still names its line.
//! Lines are 1-based.

/// Lines where task `id` is defined (`- id: "A1"`), in file order.
pub fn task_lines(text: &str, id: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| defines_id(l, id))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Lines where `id` is defined as a task (`id:`) or listed as a subtask
/// (`subtasks: [...]`), in file order: where a duplicate shows.
pub fn definitions(text: &str, id: &str) -> Vec<usize> {
    let quoted = [format!("\"{id}\""), format!("'{id}'")];
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            defines_id(l, id)
                || (l.trim_start().starts_with("subtasks:") && {
                    let list = l.split_once(':').map_or("", |(_, r)| r);
                    quoted.iter().any(|q| list.contains(q.as_str()))
                        || list
                            .trim_matches(|c| c == '[' || c == ']' || c == ' ')
                            .split(',')
                            .any(|x| x.trim() == id)
                })
        })
        .map(|(i, _)| i + 1)
        .collect()
}

fn defines_id(line: &str, id: &str) -> bool {
    let l = line.trim_start().trim_start_matches('-').trim_start();
    l.strip_prefix("id:")
        .map(|rest| unquote(strip_comment(rest)) == id)
        .unwrap_or(false)
}

fn strip_comment(s: &str) -> &str {
    match s.find(" #") {
        Some(i) => &s[..i],
        None => s,
    }
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('"').trim_matches('\'')
}

/// Lines of the first definition of task `id`: from its `id:` line up to the
/// next task definition or a line indented less than the task's list item.
pub fn task_block(text: &str, id: &str) -> Option<std::ops::Range<usize>> {
    let start = *task_lines(text, id).first()?;
    let lines: Vec<&str> = text.lines().collect();
    let item_indent = indent(lines[start - 1]);
    let mut end = start;
    for (i, line) in lines.iter().enumerate().skip(start) {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let ind = indent(line);
        let next_item = ind <= item_indent && line.trim_start().starts_with('-');
        if next_item || ind < item_indent {
            break;
        }
        end = i + 1;
    }
    Some(start..end + 1)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// First line of task `id`'s block containing `needle`.
pub fn in_task(text: &str, id: &str, needle: &str) -> Option<usize> {
    let block = task_block(text, id)?;
    text.lines()
        .enumerate()
        .skip(block.start - 1)
        .take(block.end - block.start)
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
}

/// Where a problem about task `id`'s `key` is best shown: the key's line, else
/// the task's.
pub fn task_key(text: &str, id: &str, key: &str) -> Option<usize> {
    in_task(text, id, &format!("{key}:")).or_else(|| task_lines(text, id).first().copied())
}

/// First line whose key (before the colon) is `key`, after line `after`.
pub fn key_after(text: &str, key: &str, after: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(after)
        .find(|(_, l)| {
            let t = l.trim_start().trim_start_matches('-').trim_start();
            t.strip_prefix(key).is_some_and(|r| r.starts_with(':'))
        })
        .map(|(i, _)| i + 1)
}

/// Line of `key` nested under top-level `section` (e.g. resource_allocation →
/// unit_tests → max_parallel).
pub fn nested_key(text: &str, path: &[&str]) -> Option<usize> {
    let mut line = 0;
    for key in path {
        line = key_after(text, key, line)?;
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "tasks:\n  - id: \"A1\"\n    template: t\n    dependencies: [\"X\"]\n  - id: A2\n    template: u\n";

    #[test]
    fn finds_task_definitions_quoted_or_not() {
        assert_eq!(task_lines(TEXT, "A1"), vec![2]);
        assert_eq!(task_lines(TEXT, "A2"), vec![5]);
        assert!(task_lines(TEXT, "A").is_empty());
    }

    #[test]
    fn block_stops_at_next_task() {
        assert_eq!(task_block(TEXT, "A1"), Some(2..5));
        assert_eq!(in_task(TEXT, "A1", "\"X\""), Some(4));
        assert_eq!(in_task(TEXT, "A2", "\"X\""), None);
        assert_eq!(task_key(TEXT, "A2", "template"), Some(6));
    }

    #[test]
    fn nested_keys_follow_the_path() {
        let t = "a:\n  x: 1\nb:\n  x: 2\n";
        assert_eq!(nested_key(t, &["b", "x"]), Some(4));
    }
}
