//! Drives the scheduler with events and checks what it does. `harness`
//! holds the helpers every topic uses.

mod alerts;
mod commands;
mod dag;
mod fencing;
mod harness;
mod phased;
mod recovery;
mod reports;
mod resources;
mod simulation;
