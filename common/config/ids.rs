//! What a task id (and a category name) may hold, and the one way a path is
//! built from such a name. Ids reach shell commands through `{task_id}` and
//! become directory and file names on the agent and the orchestrator, so
//! they are held to a set that means nothing to a shell or a path: checked
//! when a config is read, and checked again wherever a path is made from
//! one, so a name that slipped past (an older orchestrator, a hand-made
//! assignment) still cannot leave its root.

use std::path::{Component, Path, PathBuf};

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// The rule, as `check` and README state it.
pub const ID_RULE: &str = "ids and category names use only letters, digits, '.', '_' and '-', \
     do not start with '.' or '-', and are at most 128 characters";

/// Why `id` is not a safe id, or `None` when it is.
pub fn id_problem(id: &str) -> Option<String> {
    let Some(first) = id.chars().next() else {
        return Some("it is empty".into());
    };
    if id.len() > MAX_ID_LEN {
        return Some(format!("it is {} characters long", id.len()));
    }
    if first == '.' || first == '-' {
        return Some(format!("it starts with '{first}'"));
    }
    let bad = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))?;
    Some(format!("it contains {bad:?}"))
}

pub fn is_safe_id(id: &str) -> bool {
    id_problem(id).is_none()
}

/// A path that lies outside the root it was meant for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a plain file name: a path made from it would leave {}", root.display())]
pub struct OutsideRoot {
    pub root: PathBuf,
    pub name: String,
}

/// `root/name`, when `name` is exactly one ordinary path component (no
/// separator, not `.` or `..`, not empty, no NUL): the result is then inside
/// `root` by construction, whatever `root` holds. Anything else is refused.
pub fn join_inside(root: &Path, name: &str) -> Result<PathBuf, OutsideRoot> {
    let mut parts = Path::new(name).components();
    let plain = matches!(parts.next(), Some(Component::Normal(_)))
        && parts.next().is_none()
        && !name.contains(['/', '\0']);
    if plain {
        Ok(root.join(name))
    } else {
        Err(OutsideRoot {
            root: root.to_path_buf(),
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safe_set() {
        for ok in ["A1", "B1a", "CALC_REPORT", "t.1-x", "9", &"x".repeat(128)] {
            assert!(is_safe_id(ok), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("I1;touch PWNED;#", "';'"),
            ("../../ESCAPED", "starts with '.'"),
            ("a/b", "'/'"),
            ("-rf", "starts with '-'"),
            (".hidden", "starts with '.'"),
            ("a b", "' '"),
            ("é", "'é'"),
            (&"x".repeat(129), "129 characters"),
        ] {
            let problem = id_problem(bad).unwrap_or_default();
            assert!(problem.contains(why), "{bad:?}: {problem}");
        }
    }

    #[test]
    fn only_one_plain_component_joins() {
        let root = Path::new("/data/artifacts");
        assert_eq!(
            join_inside(root, "A1_output.log").unwrap(),
            root.join("A1_output.log")
        );
        for bad in [
            "", ".", "..", "../x", "a/b", "a/", "/etc", "./a", "a/..", "x\0y",
        ] {
            let e = join_inside(root, bad).unwrap_err();
            assert_eq!(e.name, bad);
            assert!(e.to_string().contains("/data/artifacts"), "{e}");
        }
    }
}
