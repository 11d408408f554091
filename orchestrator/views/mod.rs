//! Read-only views of the scheduler's state in the wire shapes clients ask
//! for: status and progress.

pub mod status;
