//! The rules the scheduler applies, each a pure function of what happened:
//! the seed's recovery matrix, success criteria and alert rules.

pub mod alerts;
pub mod criteria;
pub mod recovery;
