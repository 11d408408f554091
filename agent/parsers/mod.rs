//! Reading what test commands write: live progress from their output, and
//! JUnit XML, coverage and metrics files at the end.

pub mod coverage;
pub mod junit;
pub mod progress;
