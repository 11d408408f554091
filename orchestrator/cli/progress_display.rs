//! A local run's live progress on stderr: bars on a terminal, one line an
//! event otherwise.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use testfleet::config::SuitePlan;
use testfleet::proto::{self, suite_event};
use testfleet_core::TaskState;

/// Live progress: bars on a terminal, plain lines otherwise.
pub struct ProgressDisplay {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    bars: HashMap<String, ProgressBar>,
    /// The tasks the bar counts: every task of the plan, groups included,
    /// as the summary's `N of M tasks` counts them.
    tasks: TaskCount,
}

/// Tasks ended out of all of the plan's, each counted once.
pub struct TaskCount {
    all: HashSet<String>,
    ended: HashSet<String>,
}

impl TaskCount {
    pub fn new(plan: &SuitePlan) -> TaskCount {
        TaskCount {
            all: plan.tasks.iter().map(|t| t.id.clone()).collect(),
            ended: HashSet::new(),
        }
    }

    /// Counts a task's end; false if it was already counted or is no task
    /// of the plan.
    fn end(&mut self, task_id: &str) -> bool {
        self.all.contains(task_id) && self.ended.insert(task_id.to_string())
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn ended(&self) -> usize {
        self.ended.len()
    }
}

impl ProgressDisplay {
    pub fn new(plan: &SuitePlan) -> ProgressDisplay {
        let tasks = TaskCount::new(plan);
        if !std::io::stderr().is_terminal() {
            return ProgressDisplay {
                multi: None,
                overall: None,
                bars: HashMap::new(),
                tasks,
            };
        }
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(tasks.len() as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} suite [{bar:30}] {pos}/{len} tasks  {elapsed_precise}  {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        ProgressDisplay {
            multi: Some(multi),
            overall: Some(overall),
            bars: HashMap::new(),
            tasks,
        }
    }

    pub fn show(&mut self, body: &suite_event::Body) {
        let Some(multi) = self.multi.clone() else {
            if let Some(line) = crate::cli::client::describe_event(body) {
                eprintln!("{line}");
            }
            return;
        };
        match body {
            suite_event::Body::Assignment(a) => self.assigned(&multi, a),
            suite_event::Body::Progress(p) => self.progressed(p),
            suite_event::Body::TaskState(s)
                if s.status.parse().is_ok_and(TaskState::is_terminal) =>
            {
                self.ended(&multi, s)
            }
            _ => {}
        }
    }

    /// A bar for the task, replacing any from its earlier attempt.
    fn assigned(&mut self, multi: &MultiProgress, a: &proto::TaskAssignment) {
        let id = a
            .task_details
            .as_ref()
            .map(|d| d.task_id.clone())
            .unwrap_or_default();
        let bar = multi.add(ProgressBar::new(100));
        bar.set_style(
            ProgressStyle::with_template("  {prefix:8} [{bar:20}] {pos:>3}% {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(id.clone());
        bar.set_message(format!("on {}", a.target_agent));
        if let Some(old) = self.bars.insert(id, bar) {
            old.finish_and_clear();
        }
    }

    fn progressed(&mut self, p: &proto::ProgressUpdate) {
        let known = p
            .progress
            .as_ref()
            .filter(|pr| pr.tests_completed + pr.tests_remaining > 0);
        if let (Some(bar), Some(pr)) = (self.bars.get(&p.task_id), known) {
            bar.set_position(pr.percentage.round() as u64);
            bar.set_message(format!(
                "{} ({} done, {} to go)",
                pr.current_test, pr.tests_completed, pr.tests_remaining
            ));
        }
    }

    fn ended(&mut self, multi: &MultiProgress, s: &proto::TaskStateChanged) {
        if let Some(bar) = self.bars.remove(&s.task_id) {
            bar.finish_and_clear();
        }
        let counted = self.tasks.end(&s.task_id);
        if let Some(o) = &self.overall {
            if counted {
                o.set_position(self.tasks.ended() as u64);
            }
            let _ = multi.println(format!("{:<8} {}", s.task_id, s.status));
        }
    }

    pub fn finish(&mut self) {
        for (_, b) in self.bars.drain() {
            b.finish_and_clear();
        }
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_counts_every_task_once_as_the_summary_does() {
        let yaml = "templates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t}\n      - {id: G, template: t, subtasks: [G1, G2]}\n";
        let config =
            testfleet::config::SuiteConfig::parse(yaml, std::path::Path::new("s.yaml")).unwrap();
        let plan = config.plan(std::path::Path::new("/s"));
        let mut count = TaskCount::new(&plan);
        assert_eq!(count.len(), plan.tasks.len(), "the group G too");
        for id in ["A", "G1", "G2", "G", "A", "nope"] {
            count.end(id);
        }
        assert_eq!((count.ended(), count.len()), (4, 4));
    }
}
