//! The lower bounds a makespan is measured against: the bench's own
//! measure of a suite's shape, not the scheduler's policy (which
//! `virtual_time` runs).

use std::collections::HashMap;

/// A suite's shape for its makespan's lower bounds: each runnable task's
/// duration, cores, category and what it waits on.
pub struct Shape {
    pub tasks: Vec<ShapeTask>,
    pub capacity_cores: f64,
    pub max_parallel: HashMap<&'static str, u32>,
}

pub struct ShapeTask {
    pub ms: f64,
    pub cores: f64,
    pub category: &'static str,
    pub after: Vec<usize>,
}

impl Shape {
    /// Longest path (ms) ending where each task starts, and starting where
    /// it ends. Tasks are in dependency order.
    fn heads_and_tails(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.tasks.len();
        let mut head = vec![0.0f64; n];
        for i in 0..n {
            for &d in &self.tasks[i].after {
                head[i] = head[i].max(head[d] + self.tasks[d].ms);
            }
        }
        let mut tail = vec![0.0f64; n];
        for i in (0..n).rev() {
            for &d in &self.tasks[i].after {
                tail[d] = tail[d].max(tail[i] + self.tasks[i].ms);
            }
        }
        (head, tail)
    }

    /// The same shape with each task's duration from `ms`, where it has one.
    pub fn with_durations(&self, ms: impl Fn(usize) -> Option<f64>) -> Shape {
        Shape {
            tasks: (0..self.tasks.len())
                .map(|i| ShapeTask {
                    ms: ms(i).unwrap_or(self.tasks[i].ms),
                    after: self.tasks[i].after.clone(),
                    ..self.tasks[i]
                })
                .collect(),
            capacity_cores: self.capacity_cores,
            max_parallel: self.max_parallel.clone(),
        }
    }

    /// The bound: max(critical path, total work / capacity).
    pub fn bound(&self) -> f64 {
        let (critical, spread) = self.bound_parts();
        critical.max(spread)
    }

    /// The critical path and the total work spread over the capacity, ms.
    pub fn bound_parts(&self) -> (f64, f64) {
        let (head, _) = self.heads_and_tails();
        let critical = (0..self.tasks.len())
            .map(|i| head[i] + self.tasks[i].ms)
            .fold(0.0, f64::max);
        let work: f64 = self.tasks.iter().map(|t| t.ms * t.cores).sum();
        (critical, work / self.capacity_cores)
    }

    /// Also counting each category's max_parallel: its tasks cannot start
    /// before the earliest of them can, run at most k at a time, and leave
    /// the shortest of their tails after them.
    pub fn bound_with_max_parallel(&self) -> f64 {
        let (head, tail) = self.heads_and_tails();
        let mut bound = self.bound();
        for (cat, k) in &self.max_parallel {
            let members: Vec<usize> = (0..self.tasks.len())
                .filter(|&i| self.tasks[i].category == *cat)
                .collect();
            if members.is_empty() {
                continue;
            }
            let first = members
                .iter()
                .map(|&i| head[i])
                .fold(f64::INFINITY, f64::min);
            let last = members
                .iter()
                .map(|&i| tail[i])
                .fold(f64::INFINITY, f64::min);
            let work: f64 = members.iter().map(|&i| self.tasks[i].ms).sum();
            bound = bound.max(first + work / f64::from(*k) + last);
        }
        bound
    }
}
