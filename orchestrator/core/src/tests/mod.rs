//! Drives the scheduler with events and checks what it does, topic by
//! topic. `crate::sim` holds the helpers every topic uses.

mod alerts;
mod commands;
mod dag;
mod fencing;
mod phased;
mod pool;
mod recovery;
mod resources;
mod simulation;
mod snapshot;
mod split;
