//! The rules of a `split:` task: one command run as many batches, so it
//! cannot also be a group, and its batches must have room to run.

use super::validate::Checker;

pub(super) fn check_splits(c: &mut Checker) {
    let cfg = c.config;
    for d in cfg.orchestrator.task_definitions.values().flatten() {
        let Some(split) = &d.split else { continue };
        if !d.subtasks.is_empty() {
            let line = c.lines.task_key(&d.id, "split");
            c.report(
                line,
                format!(
                    "task \"{}\" has both `split` and `subtasks`: a split task's batches are its subtasks",
                    d.id
                ),
            );
        }
        if let Some(s) = split.max_batch_seconds {
            if !(s.as_secs_f64() > 0.0 && s.as_secs_f64().is_finite()) {
                let line = c.lines.task_key(&d.id, "split");
                c.report(
                    line,
                    format!(
                        "task \"{}\" split.max_batch_seconds must be greater than zero, got {}",
                        d.id,
                        s.as_secs_f64()
                    ),
                );
            }
        }
        if let Some(p) = split.paths.iter().find(|p| p.trim().is_empty()) {
            let line = c.lines.task_key(&d.id, "split");
            c.report(
                line,
                format!("task \"{}\" split.paths holds an empty path {p:?}", d.id),
            );
        }
    }
}
