//! Filling a template's `{placeholders}`.
//!
//! Commands run under `sh -c`, so a value put into one must arrive as the
//! same characters, never as shell syntax. The template may already have put
//! a placeholder inside quotes (`"{workdir}/venv"`), where adding quotes of
//! our own would become part of the word; so the value is escaped for where
//! it stands, found by following the template's quoting up to it:
//!
//! - outside quotes: shell-quoted (`shlex::try_quote`), so it is one word
//!   part whatever it holds;
//! - inside `"…"`: `"`, `\`, `$` and `` ` `` backslash-escaped, the four
//!   characters double quotes still interpret;
//! - inside `'…'`: the quotes are closed, the quoted value put in, and the
//!   quotes reopened.
//!
//! `$(…)` and `` `…` `` start a fresh, unquoted context, also inside double
//! quotes; inside `` `…` ``, which removes one level of backslashes before
//! its text runs, the escaped value is backslash-escaped once more per
//! level. Braces that name no known placeholder (`${HOME:-/tmp}`) are left
//! as they are. Paths and environment values are not shell text: they are
//! filled in plain, with `fill_plain`.
//!
//! `{{` and `}}` are literal braces (`python -c 'print(f"{{x}}")'`): never a
//! placeholder, and written as `{` and `}` by the fill that comes last. A
//! template is filled twice, by the orchestrator (`*_for_agent`, which
//! keeps them doubled for the agent) and then by the agent.

use std::borrow::Cow;

/// Longer than any placeholder's name.
const MAX_NAME: usize = 32;

/// A placeholder's name (without braces) and its value.
pub type Value<'a> = (&'a str, &'a str);

/// `template` with every known placeholder replaced by its value, as is,
/// and `{{`/`}}` written as single braces: the last fill.
pub fn fill_plain(template: &str, values: &[Value]) -> String {
    plain(template, values, false)
}

/// `fill_plain` for a text the agent fills again: `{{`/`}}` stay doubled.
pub fn fill_plain_for_agent(template: &str, values: &[Value]) -> String {
    plain(template, values, true)
}

fn plain(template: &str, values: &[Value], keep_escapes: bool) -> String {
    if !template.contains('{') && !template.contains('}') {
        return template.to_string();
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some(len) = escape_len(rest) {
            out.push_str(if keep_escapes {
                &rest[..len]
            } else {
                &rest[..1]
            });
            rest = &rest[len..];
            continue;
        }
        if c == '{' {
            if let Some((v, len)) = placeholder(rest, values) {
                out.push_str(v);
                rest = &rest[len..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// 2 if `rest` starts with a literal brace (`{{` or `}}`).
fn escape_len(rest: &str) -> Option<usize> {
    (rest.starts_with("{{") || rest.starts_with("}}")).then_some(2)
}

/// Where the scanner stands in the template.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    /// Unquoted: the command itself, or a substitution inside it.
    Plain {
        subst: Subst,
    },
    Single,
    Double,
}

#[derive(Clone, Copy, PartialEq)]
enum Subst {
    /// The command itself.
    None,
    /// Inside `$(`, with this many unclosed `(` of its own.
    Paren(u32),
    Backtick,
}

/// A placeholder that stands for several words (`{args}`) and its words.
pub type Words<'a> = (&'a str, &'a [String]);

/// `template` (shell text) with every known placeholder replaced by its
/// value, escaped for the quoting it stands in. A NUL cannot reach a
/// command at all, so it is dropped from values.
pub fn fill_command(template: &str, values: &[Value]) -> String {
    shell(template, values, &[], false)
}

/// As `fill_command`, and each placeholder of `words` becomes its words,
/// each escaped for where it stands and separated by a space (outside
/// quotes, so several words; inside `"…"`, one). `{{`/`}}` stay doubled:
/// the agent fills the command again (`fill_command`).
pub fn fill_command_for_agent(template: &str, values: &[Value], words: &[Words]) -> String {
    shell(template, values, words, true)
}

fn shell(template: &str, values: &[Value], words: &[Words], keep_escapes: bool) -> String {
    if !template.contains('{') && !template.contains('}') {
        return template.to_string();
    }
    let mut out = String::with_capacity(template.len());
    let mut stack = vec![Context::Plain { subst: Subst::None }];
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        // A literal brace changes no quoting.
        if let Some(len) = escape_len(rest) {
            out.push_str(if keep_escapes {
                &rest[..len]
            } else {
                &rest[..1]
            });
            rest = &rest[len..];
            continue;
        }
        if c == '{' {
            let found = placeholder(rest, values)
                .map(|(v, len)| (vec![v], len))
                .or_else(|| {
                    placeholder_words(rest, words)
                        .map(|(w, len)| (w.iter().map(String::as_str).collect(), len))
                });
            if let Some((items, len)) = found {
                let top = *stack.last().expect("the command's own context stays");
                let mut escaped = String::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        escaped.push(' ');
                    }
                    escape_into(&mut escaped, &item.replace('\0', ""), top);
                }
                // Text inside `…` loses one level of backslashes before it
                // runs: add one per level.
                let ticks = stack
                    .iter()
                    .filter(|c| {
                        **c == Context::Plain {
                            subst: Subst::Backtick,
                        }
                    })
                    .count();
                for _ in 0..ticks {
                    escaped = backslashed(&escaped, &['\\', '`', '$']);
                }
                out.push_str(&escaped);
                rest = &rest[len..];
                continue;
            }
        }
        let len = step(&mut stack, rest);
        out.push_str(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// The words of the word placeholder `rest` starts with, and its length.
fn placeholder_words<'w>(rest: &str, words: &[Words<'w>]) -> Option<(&'w [String], usize)> {
    let near = &rest.as_bytes()[..rest.len().min(MAX_NAME + 2)];
    let close = near.iter().position(|&b| b == b'}')?;
    let name = &rest[1..close];
    words
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, w)| (*w, close + 1))
}

/// The names of the `{placeholders}` in `template`: braces around a name
/// (letters, digits, `_`), not after a `$` (the shell's `${HOME}`), and not
/// a literal `{{`.
pub fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    // Where each literal `{{` starts: its braces open nothing.
    let mut literal = Vec::new();
    let mut i = 0;
    while let Some(at) = template[i..].find("{{") {
        literal.push(i + at);
        literal.push(i + at + 1);
        i += at + 2;
    }
    template.match_indices('{').filter_map(move |(i, _)| {
        if template[..i].ends_with('$') || literal.binary_search(&i).is_ok() {
            return None;
        }
        let rest = &template[i + 1..];
        let close = rest.find('}')?;
        let name = &rest[..close];
        let is_name = !name.is_empty()
            && name.len() <= MAX_NAME
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        is_name.then_some(name)
    })
}

/// The value of the placeholder `rest` starts with, and its length.
fn placeholder<'v>(rest: &str, values: &[Value<'v>]) -> Option<(&'v str, usize)> {
    // Names are short: looking further would make a template of many `{`
    // quadratic.
    let near = &rest.as_bytes()[..rest.len().min(MAX_NAME + 2)];
    let close = near.iter().position(|&b| b == b'}')?;
    let name = &rest[1..close];
    values
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| (*v, close + 1))
}

/// Moves the quoting state past the next token of `rest` (a character, or
/// an escape or `$(` of two); returns its length in bytes.
fn step(stack: &mut Vec<Context>, rest: &str) -> usize {
    let mut chars = rest.chars();
    let c = chars.next().unwrap_or_default();
    let next = chars.next();
    let two = c.len_utf8() + next.map_or(0, char::len_utf8);
    let top = stack.len() - 1;
    match (stack[top], c) {
        (Context::Single, '\'') | (Context::Double, '"') => {
            stack.pop();
        }
        (Context::Single, _) => {}
        (Context::Plain { .. } | Context::Double, '\\') if next.is_some() => return two,
        (Context::Plain { .. } | Context::Double, '$') if next == Some('(') => {
            stack.push(Context::Plain {
                subst: Subst::Paren(0),
            });
            return two;
        }
        (
            Context::Plain {
                subst: Subst::Backtick,
            },
            '`',
        ) => {
            stack.pop();
        }
        (Context::Plain { .. } | Context::Double, '`') => stack.push(Context::Plain {
            subst: Subst::Backtick,
        }),
        (Context::Plain { .. }, '\'') => stack.push(Context::Single),
        (Context::Plain { .. }, '"') => stack.push(Context::Double),
        (
            Context::Plain {
                subst: Subst::Paren(n),
            },
            '(',
        ) => {
            stack[top] = Context::Plain {
                subst: Subst::Paren(n + 1),
            };
        }
        (
            Context::Plain {
                subst: Subst::Paren(0),
            },
            ')',
        ) => {
            stack.pop();
        }
        (
            Context::Plain {
                subst: Subst::Paren(n),
            },
            ')',
        ) => {
            stack[top] = Context::Plain {
                subst: Subst::Paren(n - 1),
            };
        }
        _ => {}
    }
    c.len_utf8()
}

fn escape_into(out: &mut String, value: &str, context: Context) {
    match context {
        Context::Plain { .. } => out.push_str(&quoted(value)),
        Context::Double => out.push_str(&backslashed(value, &['"', '\\', '$', '`'])),
        Context::Single => {
            out.push('\'');
            out.push_str(&quoted(value));
            out.push('\'');
        }
    }
}

/// `s` with a backslash before each of `special`.
fn backslashed(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn quoted(value: &str) -> Cow<'_, str> {
    // NULs are gone, the only thing try_quote refuses.
    shlex::try_quote(value).unwrap_or(Cow::Borrowed("''"))
}
