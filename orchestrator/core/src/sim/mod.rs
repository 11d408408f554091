//! Driving the scheduler by hand, for tests here and in the crates that use
//! it (feature `sim`): a clock, simulated agents that take assignments and
//! answer with results, and seeded random schedules with every invariant
//! checked after every step.

mod crash;
mod harness;
mod pool_schedule;
mod schedule;

pub use crash::same_state;
pub use harness::*;
pub use pool_schedule::run_pool_schedule;
pub use schedule::run_schedule;
