//! Read-only views of the scheduler's state in the shapes clients ask for:
//! status and progress, and the final report's document.

pub mod report;
pub mod status;
