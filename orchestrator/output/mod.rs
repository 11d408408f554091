//! What the engine writes and sends: report files (JSON, HTML), the merged
//! JUnit XML and the escalation webhook.

pub mod junit_merge;
mod junit_split;
pub mod layout;
pub mod report;
pub mod report_html;
pub(crate) mod report_html_model;
pub mod report_retry;
pub mod webhook;

#[cfg(test)]
mod report_html_tests;
#[cfg(test)]
mod report_tests;
