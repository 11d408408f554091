//! Read-only views of the scheduler's state in the shapes clients ask for:
//! status and progress, the final report's document, and the live page's.

pub mod live;
pub mod report;
pub mod status;
